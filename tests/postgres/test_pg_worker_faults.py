"""`hailuo work` processes against faults: a worker stopped past its lease, a network cut.

The fake runs in the test's process (its counters are the proof); each worker is a real
`hailuo work` process, so every fault goes through the public path. Assertions are on the
fake's counters, the journal's rows and what each worker printed, never on timing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
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


@pytest.mark.parametrize("fault", ["cut", "silence"])
async def test_workers_wait_out_a_network_fault_to_the_database(
    pg_schema: str, tmp_path: Path, fault: str
) -> None:
    """The network to PostgreSQL fails for 3 s under three workers: all finish, none twice.

    ``cut``: open links drop. ``silence``: they go silent for good (as behind a firewall that
    lost them), with no reset: the batch ends only if each worker bounds its round trips,
    gives the silent links up and works on over new ones.
    """
    n = 20
    await add_jobs(DSN, pg_schema, BATCH, [f"a badger, take {i}" for i in range(n)])
    link = Link(DSN)
    faults = Faults(slow=0.3, slow_seconds=1.5)
    # Round trips bounded at 2 s (journal and shared limits alike, from the URL).
    quick = "?connect_timeout=2&round_trip_timeout=2" if fault == "silence" else ""
    async with (
        FakeHailuoServer(
            time_scale=SCALE, job_duration=Fixed(60.0), seed=19, faults=faults
        ) as server,
        anyio.create_task_group() as relay,
    ):
        await relay.start(link.serve)
        url = journal_url(link.dsn() + quick, pg_schema)
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    # Leases far longer than the fault: no job changes hands meanwhile.
                    hailuo_work(
                        server,
                        url,
                        BATCH,
                        f"w{i}",
                        tmp_path,
                        lease=30,
                        scale=SCALE,
                        log_stderr=True,
                    )
                )
                for i in range(3)
            ]
            with anyio.fail_after(180):
                await until_mid_batch(DSN, pg_schema)
                accepted_before = server.stats.submissions_accepted
                await (link.cut_for(3) if fault == "cut" else link.blackhole_for(3))
                finished = [await finish(worker) for worker in workers]
        relay.cancel_scope.cancel()
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0, 0]
    assert accepted_before < n, "the fault came after the last submission"
    # Silenced links end only when their client gives them up: each worker did.
    assert link.abandoned >= (3 if fault == "silence" else 0)
    records = await _records(pg_schema)
    assert len(records) == n
    check_each_job_paid_and_finished_once(
        records, stats, [k for _, keys in finished for k in keys], logs=tmp_path
    )


def _pause_submissions(schema: str, lock: int) -> None:
    """Make every journaled ``submitting`` wait, inside its statement, while ``lock`` is held."""
    with admin() as connection:
        connection.execute(
            f'CREATE FUNCTION "{schema}".pause_submitting() RETURNS trigger LANGUAGE plpgsql'
            f" AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared({lock}); RETURN NEW; END $$"
        )
        connection.execute(
            f'CREATE TRIGGER pause_submitting BEFORE UPDATE ON "{schema}".hailuo_jobs'
            " FOR EACH ROW WHEN (NEW.state = 'submitting' AND OLD.state <> 'submitting')"
            f' EXECUTE FUNCTION "{schema}".pause_submitting()'
        )


def _submitting_waits(lock: int) -> bool:
    """True when a journal's ``submitting`` statement waits for ``lock``."""
    with admin() as connection:
        row = connection.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND NOT granted AND classid = 0 AND objid = %s)",
            (lock,),
        ).fetchone()
    return row is not None and bool(row[0])


async def _until(check: Callable[[], bool]) -> None:
    """Poll the database until ``check`` holds (other processes change it: no event to await)."""
    while True:
        if await anyio.to_thread.run_sync(check):
            return
        await anyio.sleep(0.02)


async def test_a_worker_stopped_after_journaling_a_submission_does_not_send_it(
    pg_schema: str, tmp_path: Path
) -> None:
    """SIGSTOP a worker just after `submitting` commits, past its lease: woken, it sends nothing.

    The journal's `submitting` statement is held inside the server (a trigger waits on a
    lock the test holds) while the worker is stopped, then let through: it commits, with the
    lease live. The lease runs out; another worker reaps the job as unknown and ends the rest.
    Woken, the sleeper finds its lease past on its own clock before the POST leaves: the job
    goes back (never sent), and is submitted once, as attempt 2.
    """
    n = 4
    lock = int.from_bytes(pg_schema.encode()[-6:], "big") % 2**31
    await add_jobs(DSN, pg_schema, BATCH, [f"a marmot, take {i}" for i in range(n)])
    await anyio.to_thread.run_sync(_pause_submissions, pg_schema, lock)
    url = journal_url(DSN, pg_schema)
    holder = admin()
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
        async with FakeHailuoServer(time_scale=SCALE, job_duration=Fixed(30.0), seed=29) as server:
            async with hailuo_work(
                server, url, BATCH, "sleeper", tmp_path, lease=2, scale=SCALE, max_active=1
            ) as sleeper:
                with anyio.fail_after(120):
                    await _until(lambda: _submitting_waits(lock))
                    sleeper.send_signal(signal.SIGSTOP)
                    unlock = "SELECT pg_advisory_unlock_all()"
                    await anyio.to_thread.run_sync(holder.execute, unlock)
                    # The statement commits without its stopped client.
                    await _until(lambda: "submitting" in _held(pg_schema, "sleeper").values())
                    held = await anyio.to_thread.run_sync(_held, pg_schema, "sleeper")
                    key = next(key for key, state in held.items() if state == "submitting")
                    await _until(lambda: key not in _held(pg_schema, "sleeper"))
                    assert server.stats.submission_attempts == 0
                    async with hailuo_work(
                        server, url, BATCH, "taker", tmp_path, lease=2, scale=SCALE
                    ) as taker:
                        taker_code, taker_keys = await finish(taker)
                    reaped = (await _records(pg_schema))[key]
                    sleeper.send_signal(signal.SIGCONT)
                    errors: list[str] = []
                    async with anyio.create_task_group() as group:

                        async def read_errors() -> None:
                            errors.append(await _stderr(sleeper))

                        group.start_soon(read_errors)
                        sleeper_code, sleeper_keys = await finish(sleeper)
            stats = server.stats
    finally:
        holder.close()
    assert (taker_code, sleeper_code) == (0, 0)
    assert reaped.state is JobState.UNKNOWN
    assert f"job {key!r} dropped, not submitted" in errors[0]
    records = await _records(pg_schema)
    assert {r.state for r in records.values()} == {JobState.FINISHED}
    # The journaled attempt never left; the job was submitted once, as attempt 2.
    assert records[key].attempts == 2
    assert stats.submissions_accepted == n
    assert stats.submission_attempts == n
    assert stats.duplicate_submissions == 0
    assert sorted(taker_keys + sleeper_keys) == sorted(records)
    assert key in sleeper_keys
