"""PostgreSQL restarts in the middle of a batch: workers reconnect and go on, none paid twice.

The server restarted is a private cluster of the session's own (``private_pg``), never the
shared one. The fake runs in the test's process (its counters are the proof); the workers
are real processes. Assertions are on the fake's counters, the journal's rows and what each
worker printed, never on how long anything took.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from pgserver import PrivateCluster
from pgutil import (
    add_jobs,
    check_each_job_paid_and_finished_once,
    finish,
    hailuo_work,
    journal_url,
    running,
    until_mid_batch,
)

from hailuo_async import Coordination, HailuoClient, Limits, PollPolicy, RetryPolicy, VideoRequest
from hailuo_async.journal import JobRecord, JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed, Uniform

pytestmark = pytest.mark.anyio

BATCH = "restart"
SCALE = 0.01
CHILD = Path(__file__).with_name("client_child.py")


async def records_of(dsn: str, schema: str) -> dict[str, JobRecord]:
    """Every job of the batch, by key."""
    async with PostgresJobStore(dsn, batch=BATCH, schema=schema) as store:
        return await store.get_many()


@pytest.mark.parametrize(
    ("lease", "pause"),
    [
        pytest.param(30, 1.0, id="leases-outlast-the-restart"),
        pytest.param(2, 3.0, id="leases-run-out-meanwhile"),
    ],
)
async def test_workers_ride_out_a_postgresql_restart(
    private_pg: tuple[PrivateCluster, str], tmp_path: Path, lease: float, pause: float
) -> None:
    """Three `hailuo work` processes; PostgreSQL restarts mid-batch: each job paid, reported once.

    With leases shorter than the restart, jobs change hands when it is back: fencing keeps
    every POST and every report to one worker.
    """
    cluster, schema = private_pg
    dsn = cluster.dsn()
    n = 20
    await add_jobs(dsn, schema, BATCH, [f"a heron, take {i}" for i in range(n)])
    # A third of the POSTs answer late: some are on the wire while the server is away.
    faults = Faults(slow=0.3, slow_seconds=1.5)
    async with FakeHailuoServer(
        time_scale=SCALE, job_duration=Fixed(60.0), seed=11, faults=faults
    ) as server:
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    hailuo_work(
                        server,
                        journal_url(dsn, schema),
                        BATCH,
                        f"w{i}",
                        tmp_path,
                        lease=lease,
                        scale=SCALE,
                        log_stderr=True,
                    )
                )
                for i in range(3)
            ]
            with anyio.fail_after(120):
                await until_mid_batch(dsn, schema)
                accepted_before = server.stats.submissions_accepted
                await cluster.restart_async(pause=pause)
                finished = [await finish(worker) for worker in workers]
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0, 0]
    assert accepted_before < n, "the restart came after the last submission"
    records = await records_of(dsn, schema)
    assert len(records) == n
    check_each_job_paid_and_finished_once(
        records, stats, [k for _, keys in finished for k in keys], logs=tmp_path
    )


# -- coordination across a restart ---------------------------------------------------------

RPM = 120
CAP = 3


async def _report(process: Process) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A client_child's outcome lines and its last report line, once it has exited."""
    assert process.stdout is not None
    output = b""
    async for chunk in process.stdout:
        output += chunk
    assert await process.wait() == 0, output.decode()
    lines = [json.loads(line) for line in output.decode().splitlines()]
    return lines[:-1], lines[-1]


async def test_a_coordinated_batch_goes_on_across_a_restart_without_429s(
    private_pg: tuple[PrivateCluster, str],
) -> None:
    """Two coordinated workers; PostgreSQL restarts mid-batch: all finish, 0 429s, none twice."""
    cluster, schema = private_pg
    dsn = cluster.dsn()
    n = 16
    await add_jobs(dsn, schema, BATCH, [f"a lantern, take {i}" for i in range(n)])
    async with FakeHailuoServer(
        time_scale=SCALE,
        seed=13,
        job_duration=Uniform(60, 120),
        requests_per_minute=RPM,
        max_active_tasks=CAP,
    ) as server:
        async with AsyncExitStack() as stack:
            workers = []
            for index in range(2):
                settings = {
                    "name": f"c{index}",
                    "url": server.url,
                    "api_key": server.api_key,
                    "scale": SCALE,
                    "rpm": RPM,
                    "cap": CAP,
                    "journal": journal_url(dsn, schema),
                    "batch": BATCH,
                    "lease": 30,
                    "dsn": dsn,
                    "schema": schema,
                }
                command = [sys.executable, str(CHILD), json.dumps(settings)]
                workers.append(await stack.enter_async_context(running(command)))
            with anyio.fail_after(120):
                await until_mid_batch(dsn, schema)
                await cluster.restart_async(pause=1.0)
                reports = [await _report(worker) for worker in workers]
        stats = server.stats
    records = await records_of(dsn, schema)
    assert {r.state for r in records.values()} == {JobState.FINISHED}
    assert stats.rate_limited == {}, "the shared limits let a request through above them"
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    outcomes = [line for lines, _ in reports for line in lines]
    assert sorted(line["key"] for line in outcomes) == sorted(records)
    assert all(line["ok"] for line in outcomes)
    # Each worker's LISTEN connection was lost with the server and opened again.
    assert all(report["bus_reconnects"] >= 1 for _, report in reports), reports


async def test_the_push_bus_polls_the_watched_ids_once_after_a_restart(
    private_pg: tuple[PrivateCluster, str],
) -> None:
    """A task that ends while the server restarts, its push lost: one gap poll ends its watch."""
    cluster, schema = private_pg
    async with FakeHailuoServer(time_scale=SCALE, seed=2, job_duration=Fixed(30)) as server:
        client = HailuoClient(
            server.api_key,
            base_url=server.url,
            poll_policy=PollPolicy().scaled(SCALE),
            retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05),
            limits=Limits(rate_window=60 * SCALE),
            coordination=Coordination(cluster.dsn(), schema=schema),
        )
        # No backstop poll in the test's life: the watch ends by a push or a gap poll only.
        async with client, client.watch(backstop_interval=3600.0) as watcher:
            task_id = await client.submit(VideoRequest(prompt="a push lost in a restart"))
            watcher.add(task_id, submitted_at=anyio.current_time(), pushed=True)
            await cluster.restart_async(pause=0.5)
            with anyio.fail_after(60):
                results = [result async for result in watcher]
            coordinator = client._coordinator
            assert coordinator is not None
            gap_polls, reconnects = coordinator.gap_polls, coordinator.bus.reconnects
        # The shared limits came back too: a request after the restart goes through them.
        async with client:
            await client.submit(VideoRequest(prompt="after the restart"))
    assert [result.task_id for result in results] == [task_id]
    assert (gap_polls, reconnects) == (1, 1)
    assert server.stats.polls_by_task == {task_id: 1}
    assert server.stats.submissions_accepted == 2
