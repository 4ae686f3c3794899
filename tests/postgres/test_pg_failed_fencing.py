"""A failed task is reported by one worker, as a finished one is; a later run still retries it.

Two workers come to watch one task when the first one's lease runs out (a stall) and the
second claims the job: both see the task fail. The task is a real one of the fake, failed
by it; each worker's report goes through its own :class:`BatchJournal`, the path a batch
takes when a watched task ends.
"""

from __future__ import annotations

import anyio
import pytest
from clientutil import make_client
from pgutil import DSN

from hailuo_async import TaskFailedError, TaskResult, VideoRequest
from hailuo_async.extend import job_specs
from hailuo_async.journal import InvalidTransitionError, JobState, PostgresJobStore
from hailuo_async.journal._batch import BatchJournal
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

KEY = "job-0"


async def _failed_task(server: FakeHailuoServer, store: PostgresJobStore) -> TaskResult:
    """Worker "a" claims the job (a short lease) and submits it; the fake fails the task."""
    async with make_client(server) as client:
        await store.claim("a", 1, 0.2)
        await store.mark_submitting(KEY, worker_id="a")
        task_id = await client.submit(VideoRequest("an ibis"))
        await store.mark_submitted(KEY, task_id)
        with pytest.raises(TaskFailedError) as failed:
            await client.wait(task_id)
    return failed.value.result


async def test_two_workers_watching_a_failed_task_report_it_once(pg_schema: str) -> None:
    """The stale watcher's report is refused; the claimer's lands; neither lands twice."""
    async with (
        FakeHailuoServer(time_scale=0.01, job_duration=Fixed(5.0), failure_rate=1.0) as server,
        PostgresJobStore(DSN, batch="b", schema=pg_schema) as store,
    ):
        await store.record(job_specs([VideoRequest("an ibis")], [KEY]))
        result = await _failed_task(server, store)
        await anyio.sleep(0.3)  # "a" stalls past its lease: "b" claims the watched job
        assert [r.key for r in await store.claim("b", 1, 60)] == [KEY]
        stale, claimer = (BatchJournal(store, batch="b", worker_id=w) for w in ("a", "b"))
        with pytest.raises(InvalidTransitionError):
            await stale.ended(KEY, result)
        await claimer.ended(KEY, result)
        with pytest.raises(InvalidTransitionError):
            await claimer.ended(KEY, result)  # reported once, even by the same worker
        record = await store.get(KEY)
    assert record is not None
    assert (record.state, record.owner, record.attempts) == (JobState.FAILED, "b", 1)
    assert record.task_id == result.task_id


async def test_a_failed_task_reported_by_a_worker_is_retried_by_a_later_run(
    pg_schema: str,
) -> None:
    """A worker-reported failure holds no lease: requeue or a plain resubmission go ahead."""
    async with (
        FakeHailuoServer(time_scale=0.01, job_duration=Fixed(5.0), failure_rate=1.0) as server,
        PostgresJobStore(DSN, batch="b", schema=pg_schema) as store,
    ):
        await store.record(job_specs([VideoRequest("an ibis")], [KEY]))
        result = await _failed_task(server, store)
        await BatchJournal(store, batch="b", worker_id="a").ended(KEY, result)
        # A run of one process (no worker) with retry_failed submits it again at once...
        assert await store.mark_submitting(KEY) == 2
        await store.mark_unsent(KEY)
        await store.mark_failed(KEY, TaskFailedError(result))
        # ...and workers put it back for a claim (requeue), as for any failure.
        assert await store.requeue({KEY: 2}) == 1
        claimed = await store.claim("c", 1, 60)
        assert await store.mark_submitting(KEY, worker_id="c") == 3
    assert [r.key for r in claimed] == [KEY]
