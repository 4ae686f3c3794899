"""A worker stopped past its leases, then resumed, under a shared active-job cap.

The stopped worker runs on an event loop of its own, in a thread; blocking that loop stops
every task of it at once (its heartbeats and its lease renewals too), as SIGSTOP would.
The assertions are on the fake service's task timeline, never on timing.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import anyio
import anyio.from_thread
import pytest
from pgutil import DSN

from hailuo_async import JobOutcome, VideoRequest, WorkerSettings
from hailuo_async.journal import JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed

from .test_coordination import SCALE, coordinated_client

pytestmark = pytest.mark.anyio

CAP = 2
LEASE = 1.0
N = 6


def _requests() -> list[tuple[str, VideoRequest]]:
    return [(f"job-{i}", VideoRequest(f"a heron, take {i}")) for i in range(N)]


def _peak(server: FakeHailuoServer) -> int:
    """The most tasks the fake held unfinished at any moment."""
    changes = sorted(
        [(task.created_at, 1) for task in server.tasks.values()]
        + [(task.finished_at, -1) for task in server.tasks.values()]
    )
    return max(itertools.accumulate(step for _, step in changes))


async def _work(
    server: FakeHailuoServer, schema: str, name: str, job_lease: float
) -> list[JobOutcome]:
    async with coordinated_client(server, schema, max_active_jobs=CAP, lease=LEASE) as client:
        stream = client.generate_many(
            _requests(),
            journal=f"{DSN}?schema={schema}",
            batch="paused",
            worker=WorkerSettings(worker_id=name, lease=job_lease, idle_poll=0.05),
        )
        async with stream as outcomes:
            return [outcome async for outcome in outcomes]


async def _until(condition: Any) -> None:
    while not await condition():  # noqa: ASYNC110 - other processes' rows: no event
        await anyio.sleep(0.05)


@pytest.mark.parametrize("job_lease", [LEASE, 4 * LEASE])
async def test_a_worker_resumed_after_its_leases_ran_out_keeps_the_cap(
    pg_schema: str, job_lease: float
) -> None:
    """A worker stopped with CAP jobs running: the others adopt them; nothing exceeds CAP."""
    async with FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(300), seed=5) as server:
        loop_of_a: list[asyncio.AbstractEventLoop] = []
        outcomes_of_a: list[JobOutcome] = []

        async def run_a() -> None:
            loop_of_a.append(asyncio.get_running_loop())
            outcomes_of_a.extend(await _work(server, pg_schema, "a", job_lease))

        async def a_runs_cap_jobs() -> bool:
            return len(server.tasks) >= CAP

        thread = threading.Thread(target=anyio.run, args=(run_a,))
        thread.start()
        with anyio.fail_after(60):
            await _until(a_runs_cap_jobs)  # A made the schema: no other process races it
        async with PostgresJobStore(DSN, batch="paused", schema=pg_schema) as store:
            resume = threading.Event()
            loop_of_a[0].call_soon_threadsafe(resume.wait)  # A stops, its tasks run on
            try:

                async def b_holds_a_jobs() -> bool:
                    rows = await store.get_many()
                    return sum(row.owner == "b" for row in rows.values()) >= CAP

                async with anyio.create_task_group() as group:
                    outcomes_of_b: list[JobOutcome] = []

                    async def run_b() -> None:
                        outcomes_of_b.extend(await _work(server, pg_schema, "b", job_lease))

                    group.start_soon(run_b)
                    with anyio.fail_after(60):
                        await _until(b_holds_a_jobs)
                    resume.set()
            finally:
                resume.set()
                await anyio.to_thread.run_sync(thread.join)
            rows = await store.get_many()
    assert {row.state for row in rows.values()} == {JobState.FINISHED}
    assert server.stats.submissions_accepted == N
    assert server.stats.duplicate_submissions == 0
    assert _peak(server) <= CAP
    finished = {o.key for o in outcomes_of_a + outcomes_of_b if o.ok}
    assert finished == {f"job-{i}" for i in range(N)}
