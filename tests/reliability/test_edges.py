"""The edges, as a careless user meets them: `hailuo batch` processes against one fake service.

Two runs on one journal, a journal deleted beside its results, a refused key, a storage host
serving something else. Each run is a real `hailuo batch` process; the fake runs in the
test's process, and its counters (with the journal's rows and the files left in OUT) are the
proof, never how long anything took.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import anyio
import attrs
import pytest

from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed, StorageFaults, sample_video

from .support import Figures, scaled

pytestmark = pytest.mark.anyio

PAIRS = scaled(fast=4, soak=22)
JOBS = 12
SCALE = 0.01
TESTS_DIR = Path(__file__).resolve().parent.parent


@attrs.frozen
class Run:
    """A finished `hailuo batch` process."""

    pid: int
    code: int
    stdout: str
    stderr: str


async def hailuo_batch(
    server: FakeHailuoServer, folder: Path, *args: str, key: str | None = None
) -> Run:
    """Run `hailuo batch prompts.txt ARGS` in ``folder`` against the fake, to its end."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("HAILUO_")},
        "HAILUO_API_KEY": key or server.api_key,
        "HAILUO_BASE_URL": server.url,
        "HAILUO_TIME_SCALE": str(SCALE),
    }
    command = [sys.executable, "-m", "hailuo_async.cli", "batch", "prompts.txt", *args]
    async with await anyio.open_process(command, cwd=folder, env=env) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(120):
            out, err = await _read_both(process.stdout, process.stderr)
            code = await process.wait()
    return Run(process.pid, code, out, err)


async def _read_both(*streams: anyio.abc.ByteReceiveStream) -> list[str]:
    texts = [b""] * len(streams)

    async def read(index: int, stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            texts[index] += chunk

    async with anyio.create_task_group() as group:
        for index, stream in enumerate(streams):
            group.start_soon(read, index, stream)
    return [text.decode() for text in texts]


def prompts(folder: Path, trial: int) -> None:
    """The batch file: JOBS distinct prompts, distinct per trial."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"edge trial {trial}, a kestrel, take {i}\n" for i in range(JOBS))
    (folder / "prompts.txt").write_text(lines)


def results(out: Path) -> list[dict[str, object]]:
    """OUT/results.jsonl's records."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def states(journal: Path) -> Counter[JobState]:
    """How many of the journal's jobs are in each state."""
    async with SQLiteJobStore(journal) as store:
        return Counter(await store.counts())


async def _at_once(server: FakeHailuoServer, folder: Path, argvs: list[list[str]]) -> list[Run]:
    """Start a `hailuo batch` per ARGV at the same moment; each finished run."""
    runs: list[Run] = []

    async def run(argv: list[str]) -> None:
        runs.append(await hailuo_batch(server, folder, *argv))

    async with anyio.create_task_group() as group:
        for argv in argvs:
            group.start_soon(run, argv)
    return runs


def _fake(**knobs: object) -> FakeHailuoServer:
    return FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(60.0), seed=21, **knobs)  # type: ignore[arg-type]


async def test_two_cli_runs_on_one_journal_never_share_it(tmp_path: Path, figures: Figures) -> None:
    """Two `hailuo batch` at once on one OUT (or one --journal): one runs, the other stops at
    once naming it (or, when the first was over, resumes it); nothing paid twice or lost."""
    tally: Counter[str] = Counter()
    async with _fake() as server:
        for trial in range(PAIRS):
            folder = tmp_path / f"pair-{trial}"
            prompts(folder, trial)
            # Half the pairs share OUT; the others share only the journal.
            shared_out = trial % 2 == 0
            outs = ["out", "out"] if shared_out else ["out-a", "out-b"]
            journal = [] if shared_out else ["--journal", "shared.sqlite"]
            accepted = server.stats.submissions_accepted
            runs = await _at_once(server, folder, [["--out", out, *journal] for out in outs])
            codes = sorted(run.code for run in runs)
            assert codes in ([0, 0], [0, 2]), [run.stderr for run in runs]
            for refused in (r for r in runs if r.code == 2):
                other = next(r for r in runs if r is not refused)
                assert refused.stderr.count("\n") == 1, refused.stderr
                assert "is in use by another run" in refused.stderr
                assert f"pid {other.pid}, since " in refused.stderr
                tally["second run stopped at once, naming the first"] += 1
            if codes == [0, 0]:
                tally["second run started after the first ended (a resume)"] += 1
            written = [folder / out for out in outs if (folder / out / "results.jsonl").exists()]
            lines = [record for out in written for record in results(out)]
            tally["results.jsonl lines, of JOBS per pair"] += len(
                {str(record["key"] or record["line"]) for record in lines}
            )
            assert all(record["status"] == "succeeded" for record in lines)
            assert len({str(record["line"]) for record in results(written[0])}) == JOBS
            journal_path = folder / ("out/journal.sqlite" if shared_out else "shared.sqlite")
            assert await states(journal_path) == {JobState.FINISHED: JOBS}
            assert server.stats.submissions_accepted - accepted == JOBS
        duplicates = server.stats.duplicate_submissions
    figures.record(
        f"5. two `hailuo batch` processes on one journal ({PAIRS} pairs of {JOBS} jobs)",
        {**tally, "duplicate submissions": duplicates},
    )
    assert duplicates == 0


async def test_a_deleted_journal_beside_its_results_sends_nothing(
    tmp_path: Path, figures: Figures
) -> None:
    """Journal deleted, or emptied to 0 bytes: the rerun stops (exit 2) with no request."""
    refused = 0
    async with _fake() as server:
        for trial, damage in enumerate(("deleted", "emptied")):
            folder = tmp_path / damage
            prompts(folder, 100 + trial)
            first = await hailuo_batch(server, folder, "--out", "out")
            assert first.code == 0, first.stderr
            for leftover in (folder / "out").glob("journal.sqlite*"):
                leftover.unlink()
            if damage == "emptied":
                (folder / "out" / "journal.sqlite").write_bytes(b"")
            requests = server.stats.submission_attempts + server.stats.polls_total
            rerun = await hailuo_batch(server, folder, "--out", "out")
            assert server.stats.submission_attempts + server.stats.polls_total == requests
            assert rerun.code == 2, rerun.stdout + rerun.stderr
            assert "--new-run" in rerun.stderr
            refused += 1
        accepted = server.stats.submissions_accepted
    figures.record(
        "6. a journal deleted (or emptied) beside its results",
        {"reruns refused before any request": f"{refused} of 2", "jobs paid": accepted},
    )
    assert accepted == 2 * JOBS


async def test_a_refused_key_fails_nothing_and_the_rerun_just_submits(
    tmp_path: Path, figures: Figures
) -> None:
    """A wrong key: no job journaled failed, no --retry-failed advice; the right key's rerun
    submits each job once."""
    async with _fake() as server:
        prompts(tmp_path, 200)
        refused = await hailuo_batch(server, tmp_path, "--out", "out", key="sk-wrong-key")
        after_refusal = await states(tmp_path / "out" / "journal.sqlite")
        attempts = server.stats.submission_attempts
        rerun = await hailuo_batch(server, tmp_path, "--out", "out")
        stats = server.stats
    assert refused.code == 1
    assert "were not sent" in refused.stdout
    assert "--retry-failed" not in refused.stdout
    assert JobState.FAILED not in after_refusal
    assert rerun.code == 0, rerun.stdout
    assert stats.submissions_accepted == JOBS
    assert stats.duplicate_submissions == 0
    assert await states(tmp_path / "out" / "journal.sqlite") == {JobState.FINISHED: JOBS}
    figures.record(
        f"7. a refused key ({JOBS} jobs)",
        {
            "POSTs with the wrong key (refused, nothing created)": attempts,
            "jobs journaled failed": after_refusal.get(JobState.FAILED, 0),
            "jobs submitted by the rerun": stats.submissions_accepted,
        },
    )


async def test_a_storage_host_serving_something_else_leaves_nothing_behind(
    tmp_path: Path, figures: Figures
) -> None:
    """Every video URL announces "sh" and serves a script: nothing saved, no .sh; once the
    host serves videos again the rerun fetches them all, with no submission."""
    async with _fake(storage_faults=StorageFaults(wrong_content=1.0)) as server:
        prompts(tmp_path, 300)
        first = await hailuo_batch(server, tmp_path, "--out", "out")
        left = sorted(path.name for path in (tmp_path / "out").iterdir())
        statuses = Counter(str(record["status"]) for record in results(tmp_path / "out"))
        server.storage_faults = StorageFaults()
        accepted = server.stats.submissions_accepted
        rerun = await hailuo_batch(server, tmp_path, "--out", "out")
        stats = server.stats
    assert first.code == 1
    assert "--retry-failed" not in first.stdout
    assert not [name for name in left if not name.startswith(("journal", "results"))], left
    assert statuses == {"not_downloaded": JOBS}
    assert rerun.code == 0, rerun.stdout
    assert stats.submissions_accepted == accepted == JOBS
    videos = list((tmp_path / "out").glob("*.mp4"))
    assert len(videos) == JOBS
    assert all(video.read_bytes() == sample_video() for video in videos)
    assert not list((tmp_path / "out").glob("*.sh"))
    assert stats.storage_authorization_headers == []
    figures.record(
        f"8. a storage host serving a shell script as every video ({JOBS} jobs)",
        {
            "files saved by the first run (besides journal and results)": 0,
            "videos fetched by the rerun / POSTs it made": (
                f"{len(videos)} / {stats.submissions_accepted - accepted}"
            ),
        },
    )
