"""The public API's types, as a caller sees them: checked by mypy (``mypy`` runs on tests/).

Nothing here runs: pytest does not collect this folder's modules (no ``test_`` prefix). A
change to a public signature that alters what a caller gets back fails ``mypy --strict``
here, as in stamina's and svcs's typing tests.
"""

from __future__ import annotations

from pathlib import Path

from anyio.streams.memory import MemoryObjectReceiveStream
from typing_extensions import assert_type

from hailuo_async import (
    BatchCounts,
    HailuoClient,
    JobOutcome,
    JobStream,
    LeftRunningJob,
    Limits,
    PollPolicy,
    TaskEvent,
    TaskResult,
    TaskStatus,
    TaskWatcher,
    Video,
    VideoRequest,
)
from hailuo_async.journal import PostgresJobStore, SQLiteJobStore, store_for
from hailuo_async.journal._store import SharedJobStore


async def one_job(client: HailuoClient) -> None:
    """Submit, poll, wait and download one job."""
    request = VideoRequest("a paper boat on a river", duration=6, resolution="1080P")
    task_id = await client.submit(request)
    assert_type(task_id, str)
    assert_type(await client.get_task(task_id), TaskResult)
    result = await client.wait(task_id)
    assert_type(result, TaskResult)
    assert_type(result.status, TaskStatus)
    assert_type(result.ok, bool)
    assert_type(result.video, Video | None)
    assert_type(await client.generate(request), TaskResult)
    assert_type(await client.download(result, "videos/"), Path)


async def many_jobs(client: HailuoClient, requests: list[VideoRequest]) -> None:
    """A batch yields outcomes, counts and events; a watcher yields results."""
    stream = client.generate_many(requests, max_active_jobs=8)
    assert_type(stream, JobStream)
    async with stream as outcomes:
        assert_type(outcomes.counts, BatchCounts)
        assert_type(outcomes.events(), MemoryObjectReceiveStream[TaskEvent])
        async for outcome in outcomes:
            assert_type(outcome, JobOutcome)
            assert_type(outcome.task_id, str | None)
    assert_type(stream.left_running, tuple[LeftRunningJob, ...])
    async with client.watch(["task-id"]) as watcher:
        assert_type(watcher, TaskWatcher)
        async for finished in watcher:
            assert_type(finished, TaskResult)


def configuration() -> None:
    """Configuration is small frozen objects."""
    client = HailuoClient(
        "key",
        limits=Limits(max_in_flight=16, requests_per_minute=120, max_active_jobs=10),
        poll_policy=PollPolicy().scaled(0.1),
    )
    assert_type(client.limits, Limits)
    assert_type(store_for("run.sqlite"), SQLiteJobStore | PostgresJobStore)


def shared_store(store: PostgresJobStore) -> SharedJobStore:
    """The PostgreSQL store is what a batch's worker mode runs on (the protocol, statically)."""
    return store
