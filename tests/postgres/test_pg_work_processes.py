"""`hailuo work` processes sharing one batch against one fake service: kill -9 loses no job.

The fake runs in the test's process (its counters are the proof); each worker is a real
`hailuo work` process. Assertions are on the journal's rows, the fake's counters and what each
worker printed, never on how long anything took.
"""

from __future__ import annotations

import signal
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from pgutil import DSN, add_jobs, admin, finish, hailuo_work, journal_url

from hailuo_async.journal import JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed

pytestmark = pytest.mark.anyio

BATCH = "many"
SCALE = 0.01


async def _add(schema: str, n: int) -> None:
    await add_jobs(DSN, schema, BATCH, [f"a fox, take {i}" for i in range(n)])


def _worker(
    server: FakeHailuoServer, schema: str, name: str, out: Path
) -> AbstractAsyncContextManager[Process]:
    return hailuo_work(
        server, journal_url(DSN, schema), BATCH, name, out, lease=2, scale=SCALE, max_active=4
    )


def _rows(schema: str, sql: str) -> list[tuple[object, ...]]:
    with admin() as connection:
        return connection.execute(sql.format(s=f'"{schema}"')).fetchall()


async def test_three_workers_finish_every_job_exactly_once(pg_schema: str, tmp_path: Path) -> None:
    """Three `hailuo work` processes: each job finished by one of them, and POSTed once."""
    n = 30
    await _add(pg_schema, n)
    async with FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(50.0), seed=3) as server:
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(_worker(server, pg_schema, f"w{i}", tmp_path))
                for i in range(3)
            ]
            with anyio.fail_after(60):
                finished = [await finish(worker) for worker in workers]
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0, 0]
    keys = [key for _, printed in finished for key in printed]
    assert sorted(keys) == sorted(f"job-{i}" for i in range(n))
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        assert await store.counts() == {JobState.FINISHED: n}


async def test_a_killed_worker_s_jobs_are_taken_over(pg_schema: str, tmp_path: Path) -> None:
    """kill -9 a worker mid-POST: its jobs are taken over, its cut POST is unknown, none twice."""
    n = 30
    await _add(pg_schema, n)
    # A quarter of the POSTs hang a while after the task is created: a kill then cuts one.
    faults = Faults(slow=0.25, slow_seconds=1.5)
    async with FakeHailuoServer(
        time_scale=SCALE, job_duration=Fixed(100.0), seed=5, faults=faults
    ) as server:
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(_worker(server, pg_schema, "victim", tmp_path))
            with anyio.fail_after(60):
                # Kill it while it holds a job mid-POST and a submitted one.
                while True:
                    states = {
                        str(state)
                        for (state,) in _rows(
                            pg_schema,
                            "SELECT state FROM {s}.hailuo_jobs WHERE owner = 'victim'"
                            " AND lease_until > clock_timestamp()",
                        )
                    }
                    if {"submitting", "submitted"} <= states:
                        break
                    await anyio.sleep(0.01)
                victim.send_signal(signal.SIGKILL)
                survivors = [
                    await stack.enter_async_context(_worker(server, pg_schema, f"s{i}", tmp_path))
                    for i in range(2)
                ]
                finished = [await finish(worker) for worker in survivors]
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0]
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        records = await store.get_many()
    assert len(records) == n
    unknown = {key for key, r in records.items() if r.state is JobState.UNKNOWN}
    finished_keys = {key for key, r in records.items() if r.state is JobState.FINISHED}
    assert unknown | finished_keys == set(records), "a job was lost"
    assert unknown, "the POST cut by the kill surfaces as unknown"
    assert all(records[key].error_type == "SubmissionUnknownError" for key in unknown)
    # No job was POSTed twice, and every finished job's task is one the fake created.
    assert stats.duplicate_submissions == 0
    assert {records[key].task_id for key in finished_keys} <= set(stats.task_ids)
    # The survivors finished what the victim left: each job at most once between them.
    printed = [key for _, keys in finished for key in keys]
    assert len(printed) == len(set(printed))
    assert set(printed) <= finished_keys
