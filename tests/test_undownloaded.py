"""Finished at the service but not downloaded: a rerun fetches it, and nothing says to pay again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from clientutil import make_client
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    threaded_fake,
)

from hailuo_async import DownloadError, VideoRequest
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed, StorageFaults, sample_video

SCALE = 0.01
HOSTILE = StorageFaults(wrong_content=1.0)


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests."""
    return (VideoRequest(prompt=f"fetched later {i}") for i in range(count))


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose storage host serves a shell script for every video, until told otherwise."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=6, job_duration=Fixed(20), storage_faults=HOSTILE
    ) as fake:
        yield fake


@pytest.mark.anyio
async def test_a_rerun_fetches_a_finished_video_the_first_run_could_not_save(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """The first run's downloads fail; the rerun fetches each video from a fresh URL, 0 POSTs."""
    journal, videos = tmp_path / "run.sqlite", tmp_path / "videos"
    async with make_client(server) as client:
        async with client.generate_many(
            prompts(3), journal=journal, download_to=videos
        ) as outcomes:
            first = [outcome async for outcome in outcomes]
        async with SQLiteJobStore(journal) as store:
            records = await store.get_many()
        saved = list(videos.iterdir())
        server.storage_faults = StorageFaults()
        polls = server.stats.polls_total
        async with client.generate_many(
            prompts(3), journal=journal, download_to=videos
        ) as outcomes:
            second = [outcome async for outcome in outcomes]
    assert all(isinstance(o.error, DownloadError) and o.result and o.result.ok for o in first)
    assert {r.state for r in records.values()} == {JobState.FINISHED}
    assert all(r.path is None for r in records.values())
    assert saved == []  # nothing at a final path: no .sh, no partial file
    assert all(o.ok and o.replayed and o.path for o in second)
    assert all(Path(o.path).read_bytes() == sample_video() for o in second if o.path)
    assert server.stats.submissions_accepted == 3
    assert server.stats.polls_total - polls == 3  # one fresh URL per video


def test_the_cli_says_to_run_again_to_fetch_not_to_pay_again(tmp_path: Path) -> None:
    """Not downloaded: exit 1, results.jsonl says so, the advice is a rerun; the rerun fetches."""
    (tmp_path / "p.txt").write_text("a heron\nan egret\n")
    with threaded_fake(storage_faults=HOSTILE) as server:
        env = fake_env(server)
        first = invoke("batch", "p.txt", "--out", "o", env=env)
        lines = [
            json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()
        ]
        server.storage_faults = StorageFaults()
        rerun = invoke("batch", "p.txt", "--out", "o", env=env)
        accepted = server.stats.submissions_accepted
    assert first.exit_code == 1
    assert "--retry-failed" not in first.stdout
    assert "new paid jobs" not in first.stdout
    assert "Run the same command again to fetch them; nothing is paid again" in first.stdout
    assert "finished, not downloaded" in first.stdout
    assert [line["status"] for line in lines] == ["not_downloaded", "not_downloaded"]
    assert all(line["file"] is None and line["task_id"] for line in lines)
    assert rerun.exit_code == 0, rerun.output
    assert accepted == 2
    records = [
        json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()
    ]
    assert [record["status"] for record in records] == ["succeeded", "succeeded"]
    assert all((tmp_path / record["file"]).read_bytes() == sample_video() for record in records)
