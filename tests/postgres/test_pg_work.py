"""Workers in Python: generate_many on a postgresql:// journal adds and works; client.work joins.

Every test asserts on the journal's rows and the fake service's counters, never on timing.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pgutil import DSN, admin

from hailuo_async import (
    InvalidRequestError,
    JobOutcome,
    JobStream,
    TaskResult,
    TaskStatus,
    VideoRequest,
    WorkerSettings,
)
from hailuo_async.extend import job_specs
from hailuo_async.journal import JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio


def _fake() -> FakeHailuoServer:
    return FakeHailuoServer(time_scale=0.01, job_duration=Fixed(20.0), seed=7)


def _url(schema: str) -> str:
    return f"{DSN}?schema={schema}"


def _requests(n: int) -> list[tuple[str, VideoRequest]]:
    return [(f"job-{i}", VideoRequest(f"a fox, take {i}")) for i in range(n)]


async def _collect(stream: JobStream) -> list[JobOutcome]:
    async with stream as outcomes:
        return [outcome async for outcome in outcomes]


async def test_two_generate_many_on_one_batch_share_it(pg_schema: str, tmp_path: Path) -> None:
    """Two generate_many calls on one batch finish every job once, with no body sent twice."""
    n = 24
    results: dict[str, list[JobOutcome]] = {}
    async with _fake() as server:

        async def run(name: str) -> None:
            async with server.client() as client:
                stream = client.generate_many(
                    _requests(n),
                    journal=_url(pg_schema),
                    batch="shared",
                    max_active_jobs=4,
                    download_to=tmp_path / name,
                    worker=WorkerSettings(worker_id=name, lease=5.0, idle_poll=0.05),
                )
                results[name] = await _collect(stream)

        async with anyio.create_task_group() as group:
            group.start_soon(run, "a")
            group.start_soon(run, "b")
        stats = server.stats
    keys = [o.key or "" for outcomes in results.values() for o in outcomes]
    assert sorted(keys) == sorted(f"job-{i}" for i in range(n))
    assert all(o.ok and o.path is not None for outcomes in results.values() for o in outcomes)
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    async with PostgresJobStore(DSN, batch="shared", schema=pg_schema) as store:
        assert await store.counts() == {JobState.FINISHED: n}
        progress = await store.progress()
    assert progress.workers == {}
    assert progress.ended_last_minute == n


async def test_a_rerun_adds_nothing_and_ends_at_once(pg_schema: str) -> None:
    """Running the same generate_many again adds no job, submits nothing, replays each one."""
    async with _fake() as server, server.client() as client:
        first = await _collect(client.generate_many(_requests(5), journal=_url(pg_schema)))
        again = await _collect(client.generate_many(_requests(5), journal=_url(pg_schema)))
        assert server.stats.submissions_accepted == 5
    assert len(first) == 5
    assert sorted((o.key, o.task_id) for o in again) == sorted((o.key, o.task_id) for o in first)
    assert all(o.ok and o.replayed for o in again)


async def test_work_joins_a_batch_and_takes_over_a_dead_workers_jobs(pg_schema: str) -> None:
    """client.work submits recorded jobs and watches a submitted one whose lease ran out."""
    async with _fake() as server, server.client() as client:
        task_id = await client.submit(VideoRequest("a fox, take 0"))
        async with PostgresJobStore(DSN, batch="b", schema=pg_schema) as store:
            keys, requests = zip(*_requests(4), strict=True)
            await store.record(job_specs(requests, keys))
            # A worker that died after job-0's POST was answered: its lease runs out.
            await store.claim("dead", 1, lease_seconds=0.2)
            await store.mark_submitting("job-0", worker_id="dead")
            await store.mark_submitted("job-0", task_id)
            await anyio.sleep(0.3)
            outcomes = await _collect(
                client.work(store, worker_id="alive", lease=5.0, idle_poll=0.05)
            )
            assert await store.counts() == {JobState.FINISHED: 4}
        assert server.stats.submissions_accepted == 4
        assert server.stats.duplicate_submissions == 0
    assert sorted(o.key or "" for o in outcomes) == [f"job-{i}" for i in range(4)]
    assert next(o for o in outcomes if o.key == "job-0").task_id == task_id


async def test_a_live_workers_submission_is_left_alone(pg_schema: str) -> None:
    """A job another live worker is submitting is neither made unknown nor sent again."""
    async with _fake() as server, server.client() as client:
        async with PostgresJobStore(DSN, batch="b", schema=pg_schema) as store:
            keys, requests = zip(*_requests(3), strict=True)
            await store.record(job_specs(requests, keys))
            await store.claim("other", 1, lease_seconds=600)
            await store.mark_submitting("job-0", worker_id="other")

            async def other_lands() -> None:
                # The other worker's POST lands once this worker has done all it can.
                while True:
                    if (await store.counts()).get(JobState.FINISHED, 0) == 2:
                        break
                    await anyio.sleep(0.02)
                task_id = await client.submit(VideoRequest("a fox, take 0"))
                await store.mark_submitted("job-0", task_id)
                await store.release("other")

            async with anyio.create_task_group() as group:
                group.start_soon(other_lands)
                outcomes = await _collect(client.work(store, lease=5.0, idle_poll=0.05))
            assert await store.counts() == {JobState.FINISHED: 3}
        assert server.stats.submissions_accepted == 3
        assert server.stats.duplicate_submissions == 0
    # job-0 came free only once submitted: this worker watched it to its end, never sent it.
    assert sorted(o.key or "" for o in outcomes) == ["job-0", "job-1", "job-2"]


async def test_work_needs_a_shared_journal(tmp_path: Path) -> None:
    """work() on a SQLite path, and worker settings without a shared journal, are refused."""
    async with _fake() as server, server.client() as client:
        with pytest.raises(InvalidRequestError, match="journal"):
            client.work(str(tmp_path / "j.sqlite"))
        with pytest.raises(InvalidRequestError, match="worker"):
            client.generate_many([], journal=tmp_path / "j.sqlite", worker=WorkerSettings())
        assert server.stats.submission_attempts == 0


async def test_a_job_taken_over_while_watched_is_left_to_its_new_holder(pg_schema: str) -> None:
    """Another worker took the watched job over: it ends, this worker yields nothing for it."""
    async with _fake() as server, server.client() as client:
        stream = client.generate_many(
            _requests(1),
            journal=_url(pg_schema),
            batch="handoff",
            worker=WorkerSettings(worker_id="late", lease=30.0, idle_poll=0.05),
        )
        async with PostgresJobStore(DSN, batch="handoff", schema=pg_schema) as other:
            with anyio.fail_after(60):
                async with stream as outcomes:
                    while (job := await other.get("job-0")) is None or job.task_id is None:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    # As when the late worker's lease ran out and "other" claimed the job.
                    with admin() as connection:
                        connection.execute(
                            f'UPDATE "{pg_schema}".hailuo_jobs SET owner = %s,'  # noqa: S608
                            " lease_until = clock_timestamp() + interval '60 seconds'",
                            ("other",),
                        )
                    while not stream.counts.skipped:  # noqa: ASYNC110 - no event to wait on
                        await anyio.sleep(0.01)
                    result = TaskResult(
                        task_id=job.task_id, status=TaskStatus.SUCCEED, raw_status="Success"
                    )
                    await other.mark_finished("job-0", result, worker_id="other")
                    yielded = [outcome async for outcome in outcomes]
            record = await other.get("job-0")
    assert yielded == []
    assert record is not None
    assert (record.state, record.owner) == (JobState.FINISHED, "other")
    assert server.stats.submissions_accepted == 1


def _leased(schema: str) -> bool:
    """True while a worker holds a live lease on the batch's job."""
    with admin() as connection:
        row = connection.execute(
            f'SELECT lease_until > clock_timestamp() FROM "{schema}".hailuo_jobs'  # noqa: S608
        ).fetchone()
    return row is not None and row[0] is True


class _HeldFinish(PostgresJobStore):
    """A store whose first ``finished`` write waits for the test (a slow journal write)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writing = anyio.Event()
        self.go_on = anyio.Event()

    async def mark_finished(
        self,
        key: str,
        result: TaskResult,
        *,
        worker_id: str | None = None,
        hold_for: float | None = None,
    ) -> None:
        """Tell the test the write started, wait for its go, then write."""
        self.writing.set()
        await self.go_on.wait()
        await super().mark_finished(key, result, worker_id=worker_id, hold_for=hold_for)


async def test_a_job_claimed_back_while_ending_is_reported_once(pg_schema: str) -> None:
    """Its own lease ran out while it wrote the job's end, it claimed the job back: one outcome."""
    store = _HeldFinish(DSN, batch="back", schema=pg_schema)
    request = VideoRequest("a moth")
    async with _fake() as server, server.client() as client, store:
        await store.record(job_specs([request], ["job-0"]))
        stream = client.work(store, worker_id="w", lease=30.0, idle_poll=0.05, max_active_jobs=2)
        with anyio.fail_after(60):
            async with stream as outcomes:
                await store.writing.wait()
                # As when the database was away for longer than the lease.
                with admin() as connection:
                    connection.execute(
                        f'UPDATE "{pg_schema}".hailuo_jobs'  # noqa: S608
                        " SET lease_until = clock_timestamp() - interval '1 second'"
                    )
                # The worker's next claim takes the job back (no event to wait on).
                while not _leased(pg_schema):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                store.go_on.set()
                yielded = [outcome async for outcome in outcomes]
        record = await store.get("job-0")
    assert [(outcome.key, outcome.ok) for outcome in yielded] == [("job-0", True)]
    assert record is not None
    assert record.state is JobState.FINISHED
    assert server.stats.submissions_accepted == 1
