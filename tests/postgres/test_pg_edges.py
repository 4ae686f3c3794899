"""A shared journal at its edges: videos nobody saved, batches that do not exist, passwords.

Assertions are on the journal's rows, the fake's counters and what the commands print.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from pgutil import DSN, add_jobs, hailuo_work, journal_url, running

from hailuo_async import DownloadError, TaskResult, TaskStatus, VideoRequest
from hailuo_async.extend import job_specs
from hailuo_async.journal import InvalidTransitionError, JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed, StorageFaults, sample_video

pytestmark = pytest.mark.anyio

BATCH = "edges"
SCALE = 0.01
HOSTILE = StorageFaults(wrong_content=1.0)


def _fake() -> FakeHailuoServer:
    """A fake whose storage host serves a shell script for every video, until told otherwise."""
    return FakeHailuoServer(
        time_scale=SCALE, job_duration=Fixed(20.0), seed=9, storage_faults=HOSTILE
    )


def _requests(n: int) -> list[tuple[str, VideoRequest]]:
    return [(f"job-{i}", VideoRequest(f"a gull, take {i}")) for i in range(n)]


async def _finish_unsaved(server: FakeHailuoServer, url: str, n: int, out: Path) -> None:
    """Run the batch through; every video fails to download (the storage host is hostile)."""
    async with server.client() as client:
        stream = client.generate_many(_requests(n), journal=url, batch=BATCH, download_to=out)
        async with stream as outcomes:
            ended = [outcome async for outcome in outcomes]
    assert len(ended) == n  # one outcome per job: the batch does not fetch them a second time
    assert all(isinstance(o.error, DownloadError) and o.result and o.result.ok for o in ended)


async def test_a_worker_fetches_the_videos_nobody_saved(pg_schema: str, tmp_path: Path) -> None:
    """client.work downloads finished jobs without a file: fresh URLs, no POST, paths journaled."""
    url = journal_url(DSN, pg_schema)
    async with _fake() as server:
        await _finish_unsaved(server, url, 4, tmp_path / "first")
        async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
            progress = await store.progress()
        server.storage_faults = StorageFaults()
        posts = server.stats.submission_attempts
        async with server.client() as client:
            stream = client.work(url, BATCH, download_to=tmp_path / "fetched", idle_poll=0.05)
            async with stream as outcomes:
                fetched = [outcome async for outcome in outcomes]
        assert server.stats.submission_attempts == posts
    assert progress.not_downloaded == 4
    assert progress.counts == {JobState.FINISHED: 4}
    assert sorted(o.key or "" for o in fetched) == [f"job-{i}" for i in range(4)]
    assert all(o.ok and o.path for o in fetched)
    assert all(Path(o.path).read_bytes() == sample_video() for o in fetched if o.path)
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        records = await store.get_many()
        assert (await store.progress()).not_downloaded == 0
    assert all(record.path is not None for record in records.values())


async def test_a_video_that_still_fails_is_tried_once_per_worker(
    pg_schema: str, tmp_path: Path
) -> None:
    """The storage host still hostile: the worker tries each video once and ends (no loop)."""
    url = journal_url(DSN, pg_schema)
    async with _fake() as server:
        await _finish_unsaved(server, url, 2, tmp_path / "first")
        async with server.client() as client:
            stream = client.work(url, BATCH, download_to=tmp_path / "again", idle_poll=0.05)
            async with stream as outcomes:
                tried = [outcome async for outcome in outcomes]
        downloads = server.stats.storage_downloads
    assert len(tried) == 2
    assert all(isinstance(o.error, DownloadError) for o in tried)
    assert downloads == 4  # two in the first run, one each now
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        progress = await store.progress()
    assert progress.not_downloaded == 2
    assert progress.workers == {}  # the leases were given back for the next worker


async def test_status_counts_them_and_hailuo_work_fetches_them(
    pg_schema: str, tmp_path: Path
) -> None:
    """`hailuo status` shows "finished, not downloaded"; `hailuo work` fetches them, no POST."""
    url = journal_url(DSN, pg_schema)
    async with _fake() as server:
        await _finish_unsaved(server, url, 3, tmp_path / "first")
        status = [sys.executable, "-m", "hailuo_async.cli", "status", "--journal", url]
        async with running([*status, "--name", BATCH]) as process:
            assert process.stdout is not None
            with anyio.fail_after(90):
                shown = b"".join([chunk async for chunk in process.stdout]).decode()
                assert await process.wait() == 0
        server.storage_faults = StorageFaults()
        posts = server.stats.submission_attempts
        async with hailuo_work(server, url, BATCH, "w", tmp_path, lease=5, scale=SCALE) as worker:
            assert worker.stdout is not None
            with anyio.fail_after(90):
                printed = b"".join([chunk async for chunk in worker.stdout]).decode()
                code = await worker.wait()
        assert server.stats.submission_attempts == posts
    assert "finished, not downloaded" in shown
    assert code == 0, printed
    assert printed.count("✓ ") == 3
    assert sorted(path.name for path in (tmp_path / "w").iterdir()) == sorted(
        f"{task_id}.mp4" for task_id in server.stats.task_ids
    )


async def test_work_with_a_batch_that_does_not_exist_lists_those_that_do(
    pg_schema: str, tmp_path: Path
) -> None:
    """`hailuo work --name` for a batch not in the journal: exit 2, one line naming the others."""
    url = journal_url(DSN, pg_schema)
    await add_jobs(DSN, pg_schema, "spring", ["a tern"])
    await add_jobs(DSN, pg_schema, "autumn", ["a tern"])
    async with FakeHailuoServer(time_scale=SCALE) as server:
        async with hailuo_work(server, url, "sprung", "w", tmp_path, lease=5, scale=SCALE) as w:
            assert w.stderr is not None
            with anyio.fail_after(90):
                err = b"".join([chunk async for chunk in w.stderr]).decode()
                code = await w.wait()
        assert server.stats.submission_attempts == 0
    assert code == 2
    assert err.count("\n") == 1
    assert "no batch 'sprung'" in err
    assert "the batches there: 'autumn', 'spring'" in err


async def test_the_work_banner_never_shows_a_query_password(pg_schema: str, tmp_path: Path) -> None:
    """A ?password= in the journal URL shows as *** in `hailuo work`'s banner and lines."""
    await add_jobs(DSN, pg_schema, BATCH, ["a puffin"])
    url = f"{journal_url(DSN, pg_schema)}&password=hunter2-secret"
    async with FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(10.0)) as server:
        async with hailuo_work(server, url, BATCH, "w", tmp_path, lease=5, scale=SCALE) as w:
            assert w.stdout is not None
            assert w.stderr is not None
            with anyio.fail_after(90):
                out = b"".join([chunk async for chunk in w.stdout]).decode()
                err = b"".join([chunk async for chunk in w.stderr]).decode()
                await w.wait()
    assert "hunter2" not in out + err
    assert "password=***" in out + err


async def test_a_video_its_finisher_is_saving_is_not_fetched_by_another_worker(
    pg_schema: str,
) -> None:
    """A finisher that downloads holds the job until the file is saved; a dead one does not."""
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        await store.record(job_specs([VideoRequest("a grebe"), VideoRequest("a coot")]))
        records = await store.get_many()
        keys = list(records)
        for number, key in enumerate(keys):
            await store.claim("b", 2, 30.0)
            await store.mark_submitting(key, worker_id="b")
            await store.mark_submitted(key, f"task-{number}")
        saving, dead = keys
        await store.mark_finished(saving, _done("task-0"), worker_id="b", hold_for=30.0)
        await store.mark_finished(dead, _done("task-1"), worker_id="b", hold_for=0.001)
        await anyio.sleep(0.01)  # the dead finisher's hold runs out
        taken = await store.claim_undownloaded("a", 10, 30.0)
        assert [record.key for record in taken] == [dead]
        await store.mark_downloaded(saving, "/videos/task-0.mp4")
        record = await store.get(saving)
    assert record is not None
    assert (record.owner, record.lease_until, record.path) == ("b", None, "/videos/task-0.mp4")


async def test_a_finisher_whose_hold_ran_out_leaves_the_video_to_its_new_holder(
    pg_schema: str,
) -> None:
    """Finisher and fetcher both save the video: only the fetcher holding it journals it."""
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        await store.record(job_specs([VideoRequest("a shoveler")]))
        (key,) = await store.get_many()
        await store.claim("b", 1, 30.0)
        await store.mark_submitting(key, worker_id="b")
        await store.mark_submitted(key, "task-0")
        await store.mark_finished(key, _done("task-0"), worker_id="b", hold_for=0.001)
        with anyio.fail_after(30):
            while not await store.claim_undownloaded("a", 1, 30.0):  # noqa: ASYNC110
                await anyio.sleep(0.001)  # until b's hold runs out, by the database's clock
        with pytest.raises(InvalidTransitionError):
            await store.mark_downloaded(key, "/b/task-0.mp4", worker_id="b")
        await store.mark_downloaded(key, "/a/task-0.mp4", worker_id="a")
        record = await store.get(key)
    assert record is not None
    assert (record.owner, record.lease_until, record.path) == ("a", None, "/a/task-0.mp4")


def _done(task_id: str) -> TaskResult:
    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="TASK_STATUS_SUCCEED")
