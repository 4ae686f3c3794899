"""PostgresJobStore: its schema and versions, bad input, reconnects and fencing on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import psycopg
import pytest
from clientutil import make_client
from pgserver import Link
from pgutil import DSN, admin

from hailuo_async import InvalidRequestError, VideoRequest
from hailuo_async.extend import JobSpec
from hailuo_async.journal import (
    InvalidTransitionError,
    JobState,
    JournalConnectionError,
    JournalPermissionError,
    JournalSchemaError,
    LeaseLostError,
    PostgresJobStore,
    SQLiteJobStore,
    _postgres,
    store_for,
)
from hailuo_async.journal._postgres import _Run
from hailuo_async.testing import FakeHailuoServer

pytestmark = pytest.mark.anyio


def _specs(n: int, *, start: int = 0) -> list[JobSpec]:
    return [
        JobSpec(key=f"job-{i}", index=i, payload={"prompt": f"p{i}"}, fingerprint=f"f{i}")
        for i in range(start, n)
    ]


def _terminate(application_name: str) -> int:
    """Ends every backend of the given application, as a server restart would; returns how many."""
    with admin() as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return len(rows)


def _app(dsn: str) -> str:
    return dsn.rpartition("application_name=")[2]


# -- schema ------------------------------------------------------------------------------------


async def test_the_schema_is_created_versioned_and_shared_by_batches(pg_schema: str) -> None:
    """Opening creates the schema (versions 1 and 2) once; batches in it see only their own jobs."""
    async with PostgresJobStore(DSN, batch="a", schema=pg_schema) as a:
        await a.record(_specs(2))
    async with (
        PostgresJobStore(DSN, batch="a", schema=pg_schema) as a,
        PostgresJobStore(DSN, batch="b", schema=pg_schema) as b,
    ):
        assert await b.record(_specs(3)) == 3
        assert list(await a.get_many()) == ["job-0", "job-1"]
        assert await b.counts() == {JobState.RECORDED: 3}
    with admin() as connection:
        versions = connection.execute(
            f'SELECT version FROM "{pg_schema}".schema_version'  # noqa: S608
        ).fetchall()
    assert versions == [(1,), (2,)]


async def test_a_schema_from_a_newer_version_is_refused(pg_schema: str) -> None:
    """A schema at version 3 raises JournalSchemaError naming both versions; no job is touched."""
    async with PostgresJobStore(DSN, schema=pg_schema) as store:
        await store.record(_specs(1))
    with admin() as connection:
        connection.execute(
            f'INSERT INTO "{pg_schema}".schema_version (version) VALUES (3)'  # noqa: S608
        )
    with pytest.raises(JournalSchemaError, match="version 3, newer than version 2") as caught:
        await PostgresJobStore(DSN, schema=pg_schema).open()
    assert (caught.value.found, caught.value.supported) == (3, 2)


# -- bad input ---------------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_connection_error_without_the_password() -> None:
    """A wrong port names the server (not the password) in a JournalConnectionError."""
    store = PostgresJobStore(
        "postgresql://someone:hunter2@127.0.0.1:1/nowhere", connect_timeout=2, reconnect_for=0
    )
    with pytest.raises(JournalConnectionError, match=r"127\.0\.0\.1:1/nowhere") as caught:
        await store.open()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)
    with pytest.raises(JournalConnectionError, match="not valid"):
        await PostgresJobStore("postgresql://x@h/d?bogus_option=1").open()


def test_bad_arguments_are_refused_at_once() -> None:
    """Another scheme, an unsafe schema name or an empty batch: InvalidRequestError at once."""
    with pytest.raises(InvalidRequestError, match="dsn"):
        PostgresJobStore("mysql://x/y")
    with pytest.raises(InvalidRequestError, match="schema"):
        PostgresJobStore(DSN, schema='x"; DROP TABLE y; --')
    with pytest.raises(InvalidRequestError, match="batch"):
        PostgresJobStore(DSN, batch="")


async def test_a_role_without_privileges_gets_a_permission_error(
    pg_schema: str, powerless_role: str
) -> None:
    """A role that may not create the schema gets JournalPermissionError saying what to grant."""
    parts = urlsplit(DSN)
    host = parts.netloc.rpartition("@")[2]
    dsn = urlunsplit(parts._replace(netloc=f"{powerless_role}@{host}"))
    with pytest.raises(JournalPermissionError, match="grant it CREATE"):
        await PostgresJobStore(dsn, schema=pg_schema).open()
    # With the schema made by someone else but no rights on it, the same.
    async with PostgresJobStore(DSN, schema=pg_schema):
        pass
    with pytest.raises(JournalPermissionError, match="may not"):
        await PostgresJobStore(dsn, schema=pg_schema).open()


# -- where a path is accepted ------------------------------------------------------------------


def test_store_for_reads_paths_and_urls(tmp_path: Path) -> None:
    """A path gives a SQLite store, a postgresql:// URL a PostgreSQL one in its ?schema=."""
    assert isinstance(store_for(tmp_path / "j.db", batch="x"), SQLiteJobStore)
    store = store_for("postgres://u@h:5/d?schema=team_a&sslmode=disable", batch="x")
    assert isinstance(store, PostgresJobStore)
    assert (store.schema, store.batch) == ("team_a", "x")
    assert store_for("postgresql://u@h/d").schema == "hailuo"  # type: ignore[union-attr]
    with pytest.raises(InvalidRequestError, match="journal"):
        store_for("")


async def test_generate_many_takes_a_postgresql_url(pg_schema: str) -> None:
    """A postgresql:// journal: the rerun of a finished batch replays it and submits nothing."""
    url = f"{DSN}{'&' if '?' in DSN else '?'}schema={pg_schema}"
    requests = [VideoRequest(prompt=f"pg {i}") for i in range(4)]
    async with FakeHailuoServer(time_scale=0.01, seed=1) as server:
        async with make_client(server) as client:
            async with client.generate_many(requests, journal=url) as outcomes:
                first = [o async for o in outcomes]
            async with client.generate_many(requests, journal=url) as outcomes:
                second = [o async for o in outcomes]
        assert server.stats.submissions_accepted == 4
    assert all(o.ok and not o.replayed for o in first)
    assert all(o.replayed for o in second)
    async with PostgresJobStore(DSN, schema=pg_schema) as store:
        assert await store.counts() == {JobState.FINISHED: 4}


# -- reconnects --------------------------------------------------------------------------------


async def test_terminated_backends_are_reconnected_and_no_write_is_lost(
    pg_schema: str, app_dsn: str
) -> None:
    """Backends killed three times during 150 lifecycles: all finish, each submitted once."""
    n = 150
    async with PostgresJobStore(app_dsn, schema=pg_schema) as store:
        await store.record(_specs(n))
        done = anyio.Event()

        async def lifecycle(i: int) -> None:
            key = f"job-{i}"
            await store.mark_submitting(key)
            await store.mark_submitted(key, f"t{i}")
            await store.mark_finished(key, _result(f"t{i}"))

        async def kill_backends() -> None:
            for _ in range(3):
                await anyio.sleep(0.05)
                await anyio.to_thread.run_sync(_terminate, _app(app_dsn))
            done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(kill_backends)
            for i in range(n):
                group.start_soon(lifecycle, i)
                await anyio.sleep(0.001)
        await done.wait()
        records = await store.get_many()
        assert await store.counts() == {JobState.FINISHED: n}
        assert store.reconnects >= 1
    assert all(record.attempts == 1 for record in records.values())


def _result(task_id: str) -> Any:
    from hailuo_async import TaskResult, TaskStatus

    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="Success")


async def test_a_finish_is_fenced_off_a_job_another_worker_took(store: PostgresJobStore) -> None:
    """A worker whose lease ran out may finish its job unless another took it: then it's refused."""
    await store.record(_specs(2))
    await store.claim("old", 2, lease_seconds=0.3)
    for i in range(2):
        await store.mark_submitting(f"job-{i}", worker_id="old")
        await store.mark_submitted(f"job-{i}", f"t{i}")
    await anyio.sleep(0.4)  # both leases run out; "new" takes job-0 over
    assert [r.key for r in await store.claim("new", 1, lease_seconds=60)] == ["job-0"]
    with pytest.raises(InvalidTransitionError, match="is submitted; it cannot become finished"):
        await store.mark_finished("job-0", _result("t0"), worker_id="old")
    await store.mark_finished("job-0", _result("t0"), worker_id="new")
    with pytest.raises(InvalidTransitionError, match="is finished; it cannot"):
        await store.mark_finished("job-0", _result("t0"), worker_id="old")
    # Nobody took job-1: its late worker still finishes it (a retry of that too), and the
    # finisher's name stays on the job; without a worker, as before.
    for _ in range(2):
        await store.mark_finished("job-1", _result("t1"), worker_id="old")
    assert await store.release("old") == 0
    records = await store.get_many()
    assert [(r.state, r.owner, r.lease_until) for r in records.values()] == [
        (JobState.FINISHED, "new", None),
        (JobState.FINISHED, "old", None),
    ]
    await store.mark_finished("job-1", _result("t1"))


async def test_a_transaction_left_open_by_a_paused_worker_releases_its_rows(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker frozen inside a transaction: the server ends it, others go on, its retry lands."""
    monkeypatch.setattr(_postgres, "IDLE_IN_TRANSACTION_TIMEOUT_MS", 300)
    woken = anyio.Event()
    stalls: list[bool] = []
    touch = f'UPDATE "{pg_schema}".hailuo_jobs SET error = %(note)s WHERE key = %(key)s'  # noqa: S608

    async def frozen_write(run: _Run) -> int:
        # Two statements, so a transaction; frozen between them the first time, as by SIGSTOP.
        await run.rowcount(touch, {"note": "frozen", "key": "job-0"})
        if not stalls:
            stalls.append(True)
            with anyio.move_on_after(10):
                await woken.wait()
        return await run.rowcount(touch, {"note": "woken", "key": "job-1"})

    async with (
        PostgresJobStore(DSN, schema=pg_schema) as frozen,
        PostgresJobStore(DSN, schema=pg_schema) as other,
    ):
        await frozen.record(_specs(2))
        async with anyio.create_task_group() as group:
            result: list[int] = []

            async def write() -> None:
                result.append(await frozen._write(frozen_write))

            group.start_soon(write)
            try:
                with anyio.fail_after(30):
                    while not stalls:  # noqa: ASYNC110 - the frozen write sets it
                        await anyio.sleep(0.01)
                    # Waits on job-0's lock until the server has ended the frozen transaction.
                    await other.mark_submitting("job-0")
            finally:
                woken.set()
        records = await other.get_many()
        reconnects = frozen.reconnects
    assert result == [1]
    assert reconnects == 1
    assert (records["job-0"].state, records["job-0"].error) == (JobState.SUBMITTING, "frozen")
    assert records["job-1"].error == "woken"


@pytest.fixture
def lost_answer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Makes the next `submitting` statement commit, then lose its connection before the answer.

    Append a number of seconds to the yielded list to wait that long before the loss shows.
    """
    original = _Run._execute
    wait: list[float] = []
    fired: list[bool] = []

    async def execute(self: _Run, sql: str, params: dict[str, Any]) -> psycopg.AsyncCursor[Any]:
        cursor = await original(self, sql, params)
        if "submit_token" in sql and not fired:
            fired.append(True)
            pid = self._connection.info.backend_pid
            with admin() as connection:
                connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
            if wait:
                await anyio.sleep(wait[0])
            await self._connection.execute("SELECT 1")  # raises: the answer above counts as lost
        return cursor

    monkeypatch.setattr(_Run, "_execute", execute)
    yield wait
    assert fired, "the submitting statement never ran"


async def test_a_submitting_committed_before_the_connection_dropped_goes_ahead(
    store: PostgresJobStore, lost_answer: list[float]
) -> None:
    """The retry finds its own committed try (and a live lease): attempt 1, not an error."""
    await store.record(_specs(1))
    await store.claim("w", 1, lease_seconds=60)
    assert await store.mark_submitting("job-0", worker_id="w") == 1
    record = await store.get("job-0")
    assert record is not None
    assert (record.state, record.attempts, record.owner) == (JobState.SUBMITTING, 1, "w")


async def test_a_submitting_whose_lease_ran_out_while_reconnecting_is_not_sent(
    store: PostgresJobStore, lost_answer: list[float]
) -> None:
    """Committed, but the lease ran out before the retry: LeaseLostError, then UNKNOWN."""
    await store.record(_specs(1))
    await store.claim("w", 1, lease_seconds=0.5)
    lost_answer.append(0.8)
    with pytest.raises(LeaseLostError, match="lease ran out while reconnecting"):
        await store.mark_submitting("job-0", worker_id="w")
    assert await store.claim("other", 5, lease_seconds=60) == []
    record = await store.get("job-0")
    assert record is not None
    assert (record.state, record.error_type) == (JobState.UNKNOWN, "SubmissionUnknownError")


async def test_a_store_gives_up_after_reconnect_for(pg_schema: str, app_dsn: str) -> None:
    """With reconnect_for=0 a lost connection surfaces at once as JournalConnectionError."""
    async with PostgresJobStore(app_dsn, schema=pg_schema, reconnect_for=0) as store:
        await store.record(_specs(1))
        assert _terminate(_app(app_dsn)) == 1
        with pytest.raises(JournalConnectionError, match="could not reconnect within 0 s"):
            await store.get("job-0")
        assert await store.get("job-0") is not None  # the next call connects again
        assert store.reconnects == 1


async def test_a_network_cut_of_two_seconds_is_waited_out(pg_schema: str) -> None:
    """The link to the server drops for 2 s mid-batch: writes wait, reconnect and all land once."""
    link = Link(DSN)
    async with anyio.create_task_group() as group:
        await group.start(link.serve)
        async with PostgresJobStore(link.dsn(), schema=pg_schema, reconnect_for=30) as store:
            await store.record(_specs(40))
            for i in range(20):
                await store.mark_submitting(f"job-{i}")
            link.cut()
            group.start_soon(link.restore_after, 2)
            for i in range(20, 40):
                await store.mark_submitting(f"job-{i}")
            records = await store.get_many()
            reconnects = store.reconnects
        group.cancel_scope.cancel()
    assert reconnects >= 1
    assert {r.state for r in records.values()} == {JobState.SUBMITTING}
    assert all(r.attempts == 1 for r in records.values())


async def test_a_store_opened_while_the_network_is_cut_waits_for_it(pg_schema: str) -> None:
    """Opened during a cut: the store waits (reconnect_for), then opens and works."""
    link = Link(DSN)
    async with anyio.create_task_group() as group:
        await group.start(link.serve)
        link.cut()
        group.start_soon(link.restore_after, 1)
        with anyio.fail_after(30):
            async with PostgresJobStore(link.dsn(), schema=pg_schema, reconnect_for=20) as store:
                assert await store.record(_specs(2)) == 2
        group.cancel_scope.cancel()


async def test_a_batch_with_an_unreachable_journal_submits_nothing() -> None:
    """generate_many with a journal URL no server answers raises before any POST.

    After the store's reconnect_for (30 s by default): a server away when a batch starts may
    be restarting, so it is waited for as it is at any other moment.
    """
    requests = [VideoRequest(prompt="never sent")]
    async with FakeHailuoServer(time_scale=0.01, seed=1) as server:
        async with make_client(server) as client:
            with pytest.raises(JournalConnectionError, match="cannot connect"):
                async with client.generate_many(
                    requests, journal="postgresql://nobody@127.0.0.1:1/none"
                ) as outcomes:
                    _ = [o async for o in outcomes]
        assert server.stats.submissions_accepted == 0
        assert server.stats.submission_attempts == 0


async def test_progress_counts_states_leases_and_pace_in_one_statement(pg_schema: str) -> None:
    """progress(): counts by state, unsaved videos, live leases per worker, jobs ended lately."""
    async with PostgresJobStore(DSN, batch="b", schema=pg_schema) as store:
        await store.record(_specs(6))
        await store.claim("w1", 2, 30.0)
        await store.claim("w2", 1, 30.0)
        await store.mark_submitting("job-0", worker_id="w1")
        await store.mark_submitted("job-0", "task-0")
        await store.mark_finished("job-0", _result("task-0"), worker_id="w1")
        await store.mark_failed("job-5", "refused")
        before = store.round_trips
        progress = await store.progress()
        assert store.round_trips - before == 3  # one statement, in BEGIN ... COMMIT
    assert progress.counts == {JobState.RECORDED: 4, JobState.FINISHED: 1, JobState.FAILED: 1}
    assert progress.not_downloaded == 1
    assert progress.workers == {"w1": 1, "w2": 1}  # job-0 ended: w1 holds job-1 only
    assert progress.ended_last_minute == 2


async def test_a_large_record_refreshes_the_planner_statistics_as_it_doubles(
    pg_schema: str,
) -> None:
    """ANALYZE once ANALYZE_AFTER jobs are recorded, then only when the rows recorded double."""
    n = _postgres.ANALYZE_AFTER
    analyses = (
        "SELECT analyze_count FROM pg_stat_user_tables"
        " WHERE schemaname = %s AND relname = 'hailuo_jobs'"
    )
    counts = []
    async with PostgresJobStore(DSN, batch="b", schema=pg_schema) as store:
        for first in range(0, 2 * n, n // 5):  # recorded in chunks, as a batch records
            await store.record(_specs(first + n // 5, start=first))
            with admin() as connection:
                row = connection.execute(analyses, (pg_schema,)).fetchone()
            assert row is not None
            counts.append(int(str(row[0])))
    assert counts == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]


async def test_a_write_whose_caller_is_cancelled_on_the_wire_still_lands_once(
    store: PostgresJobStore,
) -> None:
    """Cancelled once its statement is sent: the write runs to its end on the same connection."""
    await store.record(_specs(1))
    sent = store.round_trips
    async with anyio.create_task_group() as group:
        group.start_soon(store.mark_submitting, "job-0")
        while store.round_trips == sent:
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    record = await store.get("job-0")
    assert record is not None
    assert (record.state, record.attempts) == (JobState.SUBMITTING, 1)
    assert store.reconnects == 0


async def test_a_read_cancelled_midway_leaves_the_store_usable(store: PostgresJobStore) -> None:
    """A read whose caller leaves mid-statement: the next call gets a sound connection."""
    await store.record(_specs(200))
    sent = store.round_trips
    async with anyio.create_task_group() as group:
        group.start_soon(store.get_many)
        while store.round_trips == sent:
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    assert len(await store.get_many()) == 200
    assert await store.mark_submitting("job-7") == 1
