"""`hailuo work` processes against faults: a worker stopped past its lease, a network cut.

The fake runs in the test's process (its counters are the proof); each worker is a real
`hailuo work` process, so every fault goes through the public path. Assertions are on the
fake's counters, the journal's rows and what each worker printed, never on timing.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from pgserver import Link
from pgutil import (
    DSN,
    add_jobs,
    admin,
    check_each_job_paid_and_finished_once,
    finish,
    hailuo_work,
    journal_url,
    until_mid_batch,
)

from hailuo_async.journal import JobRecord, JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed

pytestmark = pytest.mark.anyio

BATCH = "faulty"
SCALE = 0.01


async def _records(schema: str) -> dict[str, JobRecord]:
    async with PostgresJobStore(DSN, batch=BATCH, schema=schema) as store:
        return await store.get_many()


def _held(schema: str, worker: str) -> dict[str, str]:
    """The jobs ``worker`` holds a live lease on, and their states."""
    with admin() as connection:
        rows = connection.execute(
            f'SELECT key, state FROM "{schema}".hailuo_jobs'  # noqa: S608
            " WHERE owner = %s AND lease_until > clock_timestamp()",
            (worker,),
        ).fetchall()
    return {str(key): str(state) for key, state in rows}


async def _stderr(process: Process) -> str:
    assert process.stderr is not None
    data = b""
    async for chunk in process.stderr:
        data += chunk
    return data.decode()


async def _stop_holding_an_unsent_job(schema: str, sleeper: Process) -> dict[str, str]:
    """SIGSTOP the worker at a moment it holds a claimed job not sent yet; return its jobs.

    Its requests are paced, so a claimed job waits for its turn: stop it then. Checked
    again once stopped (a statement on its way may still land); if the moment was missed,
    it goes on and the next one is tried.
    """
    while True:
        held = await anyio.to_thread.run_sync(_held, schema, "sleeper")
        if "recorded" not in held.values():
            await anyio.sleep(0.01)
            continue
        sleeper.send_signal(signal.SIGSTOP)
        await anyio.sleep(0.3)
        held = await anyio.to_thread.run_sync(_held, schema, "sleeper")
        if "recorded" in held.values():
            return held
        sleeper.send_signal(signal.SIGCONT)


async def test_a_worker_stopped_past_its_lease_submits_nothing_another_took(
    pg_schema: str, tmp_path: Path
) -> None:
    """SIGSTOP a `hailuo work` past its lease, SIGCONT: fencing keeps it off the taken jobs."""
    n = 12
    await add_jobs(DSN, pg_schema, BATCH, [f"an owl, take {i}" for i in range(n)])
    url = journal_url(DSN, pg_schema)
    async with FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(30.0), seed=17) as server:
        # One request per 0.3 s (the rate window is 0.6 s): its claimed jobs wait their turn.
        async with hailuo_work(
            server, url, BATCH, "sleeper", tmp_path, lease=1, scale=SCALE, rpm=2
        ) as sleeper:
            with anyio.fail_after(120):
                held = await _stop_holding_an_unsent_job(pg_schema, sleeper)
                # Its leases run out; another worker takes its jobs and ends the batch.
                async with hailuo_work(
                    server, url, BATCH, "taker", tmp_path, lease=1, scale=SCALE
                ) as taker:
                    taker_code, taker_keys = await finish(taker)
                accepted_while_stopped = server.stats.submissions_accepted
                sleeper.send_signal(signal.SIGCONT)
                async with anyio.create_task_group() as group:
                    errors: list[str] = []

                    async def read_errors() -> None:
                        errors.append(await _stderr(sleeper))

                    group.start_soon(read_errors)
                    sleeper_code, sleeper_keys = await finish(sleeper)
        stats = server.stats
    assert (taker_code, sleeper_code) == (0, 0)
    records = await _records(pg_schema)
    assert {r.state for r in records.values()} == {JobState.FINISHED}
    # Every job was accepted once: the sleeper, woken, sent none of the jobs it had lost.
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    assert {r.task_id for r in records.values()} == set(stats.task_ids)
    # Only a POST it had already journaled (its lease then live) may have left after it woke.
    submitting = [key for key, state in held.items() if state == "submitting"]
    assert accepted_while_stopped >= n - len(submitting)
    unsent = [key for key, state in held.items() if state == "recorded"]
    for key in unsent:
        assert records[key].attempts == 1
        assert key in taker_keys
        assert f"job {key!r} dropped, not submitted" in errors[0]
    # Each job reported once: the jobs the sleeper was watching and the taker took over
    # are the taker's, whoever saw them end first.
    assert sorted(taker_keys + sleeper_keys) == sorted(records)


async def test_workers_wait_out_a_network_cut_to_the_database(
    pg_schema: str, tmp_path: Path
) -> None:
    """The network to PostgreSQL drops for 3 s under three workers: all finish, none twice."""
    n = 20
    await add_jobs(DSN, pg_schema, BATCH, [f"a badger, take {i}" for i in range(n)])
    link = Link(DSN)
    faults = Faults(slow=0.3, slow_seconds=1.5)
    async with (
        FakeHailuoServer(
            time_scale=SCALE, job_duration=Fixed(60.0), seed=19, faults=faults
        ) as server,
        anyio.create_task_group() as relay,
    ):
        await relay.start(link.serve)
        url = journal_url(link.dsn(), pg_schema)
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    # Leases far longer than the cut: no job changes hands meanwhile.
                    hailuo_work(server, url, BATCH, f"w{i}", tmp_path, lease=30, scale=SCALE)
                )
                for i in range(3)
            ]
            with anyio.fail_after(120):
                await until_mid_batch(DSN, pg_schema)
                accepted_before = server.stats.submissions_accepted
                await link.cut_for(3)
                finished = [await finish(worker) for worker in workers]
        relay.cancel_scope.cancel()
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0, 0]
    assert accepted_before < n, "the cut came after the last submission"
    records = await _records(pg_schema)
    assert len(records) == n
    check_each_job_paid_and_finished_once(records, stats, [k for _, keys in finished for k in keys])
