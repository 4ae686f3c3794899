"""PostgresJobStore: a batch's journal in PostgreSQL, shared by workers on many machines.

Psycopg 3 (the ``postgres`` extra: ``pip install -e '.[postgres]'`` in a checkout) drives
one ``AsyncConnection`` per store through the library's one connection layer
(:class:`hailuo_async.postgres._connection.Session`, the coordination's too), one call at a
time: the same :class:`GroupCommitter` as :class:`SQLiteJobStore` shares one commit among
the writes that wait together, and every ``mark_*`` returns once PostgreSQL has committed it
(``synchronous_commit`` is forced on).

Round trips: each transition, claim, heartbeat and release is one statement (one round trip,
its own transaction) when it is alone; writes that queue up together share a transaction
(``BEGIN``, one statement each, ``COMMIT``: one WAL flush for all of them).

A lost connection (a restarted server, a terminated backend, a network cut) is reopened and
the interrupted work retried, for up to ``reconnect_for`` seconds (what counts as lost, the
pauses between tries and the libpq options are the connection layer's). A connection whose
peer went silent counts as lost: each call (one statement, or one group's transaction) is
cut after ``round_trip_timeout`` seconds, and libpq's TCP keepalives are on. A group of
writes, once sent, runs to its end even if its callers are cancelled. Every write is safe to
run twice, and a retried ``mark_submitting`` recognises its own first try by a token it
wrote: if that try was committed and the lease is still live, the submission goes ahead; if
the lease ran out meanwhile, :class:`LeaseLostError` (the POST is not sent, and the job,
still ``submitting``, becomes ``unknown`` when a claim reaps it: a human decides, no money
is spent twice).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import attrs

from .._dsn import NEEDS_PSYCOPG, POSTGRES_SCHEMES, is_postgres_url, mask_dsn
from .._exceptions import InvalidRequestError, TaskFailedError
from .._models import TaskResult
from .._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT, check_round_trip_timeout
from . import _pg_sql
from ._committed import GroupCommittedStore, Rejected, raise_rejected, submitting_attempts
from ._errors import (
    JobConflictError,
    JournalClosedError,
    JournalConnectionError,
    JournalError,
    JournalPermissionError,
    JournalSchemaError,
)
from ._failures import encode_error
from ._group import GroupCommitter
from ._keys import JobSpec
from ._records import JobRecord, JobState, dump_result
from ._sql import to_record

if TYPE_CHECKING:
    from psycopg import AsyncCursor

    from ..postgres._connection import Connection, Session

__all__ = ["POSTGRES_SCHEMES", "BatchProgress", "PostgresJobStore"]

# A worker paused inside a transaction (SIGSTOP, a frozen VM) would hold its rows' locks for
# ever: claims skip locked rows and writes wait on them, so no lease could hand its jobs on.
# The server ends such a transaction after this long (milliseconds); the worker's retry,
# when it wakes, replays it on a new connection.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 5000
# Jobs recorded in one store after which the table's planner statistics are refreshed.
ANALYZE_AFTER = 10_000
# Set on each new connection: a commit returns only once it is on the server's disk, whatever
# the server's default (an acknowledged `submitting` must survive a crash of the server).
_SETUP = "SET synchronous_commit = on; SET idle_in_transaction_session_timeout = {timeout}"
T = TypeVar("T")
_Fn = Callable[["_Run"], Awaitable[Any]]


def _layer() -> ModuleType:
    # The connection layer imports psycopg: imported on first use, so that the rest of the
    # library works without the [postgres] extra.
    try:
        from ..postgres import _connection  # noqa: PLC0415
    except ImportError as exc:
        raise JournalError(f"a postgresql:// journal {NEEDS_PSYCOPG}") from exc
    return _connection


def _one_statement(fn: Callable[[_Run], Awaitable[T]]) -> Callable[[_Run], Awaitable[T]]:
    # A write of one statement needs no BEGIN/COMMIT of its own when it is alone in a group.
    fn.one_statement = True  # type: ignore[attr-defined]
    return fn


@attrs.frozen
class BatchProgress:
    """Where a shared batch stands: jobs per state, live leases per worker, recent pace."""

    counts: dict[JobState, int]
    """How many jobs are in each state (zero counts left out)."""
    workers: dict[str, int]
    """Each worker holding live leases, and how many."""
    ended_last_minute: int
    """Jobs that finished or failed in the last 60 seconds (by the database's clock)."""
    not_downloaded: int = 0
    """Finished jobs (paid for) whose video no worker has saved yet: ``hailuo work`` and a
    rerun of the batch fetch them."""


class _Run:
    """One try of a journal call: its statements, on the try's connection."""

    __slots__ = ("_connection", "_store", "replaying")

    def __init__(self, store: PostgresJobStore, connection: Connection, replaying: bool) -> None:
        self._store = store
        self._connection = connection
        # True when a try before this one was cut off midway: it may have been committed.
        self.replaying = replaying

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        return await (await self._execute(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return await (await self._execute(sql, params)).fetchall()

    async def rowcount(self, sql: str, params: dict[str, Any]) -> int:
        return (await self._execute(sql, params)).rowcount

    async def _execute(self, sql: str, params: dict[str, Any]) -> AsyncCursor[tuple[Any, ...]]:
        self._store._round_trips += 1
        return await self._connection.execute(sql, params)


class PostgresJobStore(GroupCommittedStore["_Fn"]):
    """A :class:`JobStore` in PostgreSQL; any number of named batches share one schema.

    Use ``async with PostgresJobStore("postgresql://...", batch="run-1") as store:``. The
    library creates the schema and its tables on first use and upgrades them; a schema
    written by a newer version raises :class:`JournalSchemaError` when opening. Workers on
    other machines share a batch through :meth:`claim` and leases, with the database's clock.

    ``reconnect_for`` bounds how long a call (opening too: a server away at the start may be
    restarting) keeps reopening a lost connection before it raises
    :class:`JournalConnectionError`; a server that refuses for good (no such database or
    role, a bad password) raises it at once. ``round_trip_timeout`` is how long a call's
    statements may go unanswered before the connection is taken for lost (a network gone
    silent): it is cut, reopened and the call replayed. Raise it for a batch so large that
    recording it takes longer.
    """

    def __init__(
        self,
        dsn: str,
        *,
        batch: str = "default",
        schema: str = "hailuo",
        connect_timeout: float = 10.0,
        reconnect_for: float = 30.0,
        round_trip_timeout: float = DEFAULT_ROUND_TRIP_TIMEOUT,
    ) -> None:
        if not is_postgres_url(dsn):
            raise InvalidRequestError("dsn", "must be a postgresql:// URL")
        if not isinstance(batch, str) or not batch:
            raise InvalidRequestError("batch", "must be a non-empty string")
        try:
            self._statements = _pg_sql.Statements(schema)
        except JournalError as exc:
            raise InvalidRequestError("schema", str(exc)) from None
        if connect_timeout <= 0 or reconnect_for < 0:
            raise InvalidRequestError(
                "connect_timeout", "must be positive (and reconnect_for not negative)"
            )
        self._dsn = dsn
        self._batch = batch
        self._schema = schema
        self._connect_timeout = connect_timeout
        self.reconnect_for = reconnect_for
        self._round_trip_timeout = check_round_trip_timeout(round_trip_timeout)
        self.target = _describe(dsn, schema)
        self._sql = self._statements
        self._session: Session | None = None
        self._writer: GroupCommitter[_Fn] | None = None
        # One call at a time on the connection: a read never lands inside a group's transaction.
        self._one_at_a_time = anyio.Lock()
        self._round_trips = 0
        # The token of each job's submission under way from here (see mark_unsent).
        self._tokens: dict[str, str] = {}
        # Jobs recorded through this store before and since its last ANALYZE (see record).
        self._analysed = self._unanalysed = 0

    def __repr__(self) -> str:
        return f"<PostgresJobStore {self.target} batch={self._batch!r}>"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds the journal's tables."""
        return self._schema

    @property
    def round_trip_timeout(self) -> float:
        """Seconds a call may go unanswered before its connection is taken for lost."""
        return self._round_trip_timeout

    @property
    def round_trips(self) -> int:
        """Statements sent to the server since opening, ``BEGIN`` and ``COMMIT`` included."""
        return self._round_trips

    @property
    def round_trips_cut(self) -> int:
        """Calls cut for going unanswered past ``round_trip_timeout`` since opening."""
        return self._session.cuts if self._session is not None else 0

    @property
    def reconnects(self) -> int:
        """Times a lost connection was opened again since opening."""
        return self._session.reconnects if self._session is not None else 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> PostgresJobStore:
        """Connect, create or upgrade the schema, and return the store."""
        if self._session is not None:
            raise JournalError("the store is already open")
        layer = _layer()
        session: Session = layer.Session(
            self._dsn,
            give_up_after=self.reconnect_for,
            round_trip_timeout=self._round_trip_timeout,
            connect_timeout=self._connect_timeout,
            setup=_SETUP.format(timeout=int(IDLE_IN_TRANSACTION_TIMEOUT_MS)),
            failure=JournalError,
            unreachable=JournalConnectionError,
        )
        # Patient as every call is: a worker started while the database is away waits for it.
        connection = await session.connection(f"cannot connect to {self.target}")
        try:
            await self._migrate(connection)
        except BaseException:
            await session.close()
            raise
        self._round_trips = 0
        self._session = session
        self._writer = GroupCommitter(self._run)
        return self

    async def _migrate(self, connection: Connection) -> None:
        # Through the schema runner that the shared limits use too.
        layer = _layer()
        from ..postgres import _schema  # noqa: PLC0415

        statements = self._statements
        plan = _schema.SchemaPlan(
            version=_pg_sql.SCHEMA_VERSION,
            tables=[statements.version_table],
            read_version=statements.read_version,
            upgrades=statements.upgrades,
            write_version=statements.write_version,
        )
        try:
            await _schema.migrate(connection, self._schema, plan)
        except _schema.SchemaTooNewError as exc:
            raise JournalSchemaError(
                f"the journal in {self.target} has schema version {exc.found}, newer than"
                f" version {exc.supported} that this hailuo-async reads;"
                " upgrade hailuo-async",
                found=exc.found,
                supported=exc.supported,
            ) from None
        except layer.psycopg.errors.InsufficientPrivilege as exc:
            raise JournalPermissionError(
                f"the role may not create or use the journal's tables in {self.target}: {exc}"
                " (grant it CREATE on the database, or USAGE and CREATE on the schema)"
            ) from None
        except layer.psycopg.Error as exc:
            raise JournalError(f"cannot prepare the journal in {self.target}: {exc}") from exc

    async def _close_connection(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, fns: list[_Fn]) -> list[object]:
        """Run ``fns`` atomically (a read, or a group of writes: the GroupCommitter's apply);
        on a lost connection, reconnect and run them again."""
        session = self._session
        if session is None:
            raise JournalClosedError("the journal is not open")

        async def attempt(connection: Connection) -> list[object]:
            run = _Run(self, connection, session.replaying)
            if len(fns) == 1 and getattr(fns[0], "one_statement", False):
                return [await fns[0](run)]
            async with connection.transaction():
                self._round_trips += 2  # BEGIN and COMMIT
                return [await fn(run) for fn in fns]

        async with self._one_at_a_time:
            return await session.run(f"the journal in {self.target}", attempt)

    async def _write(self, fn: Callable[[_Run], Awaitable[T]]) -> T:
        return cast(T, await self._commit(fn))

    async def _read(self, fn: Callable[[_Run], Awaitable[T]]) -> T:
        try:
            results = await self._run([fn])
        except JournalError:
            raise
        except Exception as exc:
            raise JournalError(f"the journal could not read: {exc}") from exc
        return cast(T, results[0])

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one reading statement."""
        return await self._read(lambda run: run.fetchall(sql, params))

    async def _row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one reading statement."""
        return await self._read(lambda run: run.fetchone(sql, params))

    async def _rows_written(self, sql: str, params: dict[str, Any]) -> int:
        """How many rows one writing statement changed, once committed (group-committed)."""
        return await self._write(_one_statement(lambda run: run.rowcount(sql, params)))

    def _params(self, key: str, **params: Any) -> dict[str, Any]:
        return {"batch": self._batch, "key": key, **params}

    async def _transition(
        self, key: str, target: str, statement: str, params: dict[str, Any]
    ) -> None:
        # PostgreSQL text cannot hold NUL: an error message must not fail the write keeping it.
        bound = {
            name: value.replace("\x00", "\ufffd") if isinstance(value, str) else value
            for name, value in self._params(key, **params).items()
        }

        @_one_statement
        async def apply(run: _Run) -> Rejected | None:
            bound["replaying"] = run.replaying
            row = await run.fetchone(statement, bound)
            assert row is not None
            moved, state = row
            return None if moved else Rejected(state)

        rejected = await self._write(apply)
        if rejected is not None:
            raise_rejected(key, target, rejected)

    # -- JobStore ----------------------------------------------------------------------------

    async def bind_provider(self, provider: str) -> str:
        """Record the batch's provider unless one is; return the one recorded (see
        :meth:`JobStore.bind_provider`). Safe for several workers to call at once."""
        params = {"batch": self._batch, "provider": provider}
        statement = self._statements.bind_provider

        @_one_statement
        async def apply(run: _Run) -> str | None:
            row = await run.fetchone(statement, params)
            return None if row is None else str(row[0])

        recorded = await self._write(apply)
        if recorded is None:  # another worker's row, committed after this one's snapshot
            recorded = await self._write(apply)
        if recorded is None:
            raise JournalError(f"the provider of batch {self._batch!r} could not be recorded")
        return recorded

    async def record(self, jobs: Sequence[JobSpec]) -> int:
        """Record jobs not recorded yet (others are left as they are); return how many were new.

        Raises :class:`JobConflictError`, recording nothing, if a key was recorded for a
        different request. Safe for several workers to call with the same jobs.
        """
        keys = [job.key for job in jobs]
        if len(set(keys)) != len(keys):
            raise InvalidRequestError("jobs", "holds the same key more than once")
        if not jobs:
            return 0
        payloads = await anyio.to_thread.run_sync(
            lambda: [
                json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False) for job in jobs
            ]
        )
        params = {
            "batch": self._batch,
            "keys": keys,
            "indexes": [job.index for job in jobs],
            "fingerprints": [job.fingerprint for job in jobs],
            "payloads": payloads,
        }
        wanted = {job.key: job.fingerprint for job in jobs}
        statements = self._statements

        @_one_statement
        async def apply(run: _Run) -> int | list[str]:
            row = await run.fetchone(statements.record, params)
            assert row is not None
            conflicts, inserted, known = row[0] or [], row[1] or [], row[2] or []
            if conflicts:
                return list(conflicts)
            missing = set(keys) - set(inserted) - set(known)
            if missing:
                # Recorded by another worker between our snapshot and our insert (or by our
                # own first try, if this is a retry): compare what it recorded.
                rows = await run.fetchall(
                    statements.fingerprints, {"batch": self._batch, "keys": list(missing)}
                )
                clash = sorted(key for key, fingerprint in rows if wanted[key] != fingerprint)
                if clash:
                    return clash
            return 0 if run.replaying else len(inserted)

        outcome = await self._write(apply)
        if isinstance(outcome, list):
            raise JobConflictError(outcome)
        self._unanalysed += outcome
        if self._unanalysed >= max(ANALYZE_AFTER, self._analysed):
            # The first claims after a large record would sort the whole batch (0.15 s at
            # 100,000 jobs, 0.3-0.5 s at 1,000,000) until autovacuum's ANALYZE came by. Again
            # each time the rows recorded here double: a few ANALYZEs for any batch size.
            await self._read(lambda run: run.rowcount(self._statements.analyze, {}))
            self._analysed += self._unanalysed
            self._unanalysed = 0
        return outcome

    async def mark_submitting(self, key: str, *, worker_id: str | None = None) -> int:
        """Durably note that the POST is about to be sent; return the attempt number.

        Allowed from RECORDED, FAILED and UNKNOWN. With ``worker_id``, only while that worker
        holds a live lease on the job by the database's clock (else :class:`LeaseLostError`);
        without, only while no live lease is held by anyone.
        """
        token = uuid.uuid4().hex
        params = self._params(key, worker=worker_id, token=token)
        sql = self._statements.SUBMITTING

        @_one_statement
        async def apply(run: _Run) -> int | Rejected:
            row = await run.fetchone(sql, params)
            assert row is not None
            attempts, state, owner, live, token, attempts_before = row
            if attempts is not None:
                return int(attempts)
            if state == "submitting" and token == params["token"]:
                # Our own first try, committed before the connection was lost.
                if worker_id is None or (owner == worker_id and live):
                    return int(attempts_before)
                return Rejected(state, "lease ran out while reconnecting", lease_lost=True)
            return Rejected.submitting(state, owner, bool(live))

        attempts = submitting_attempts(key, await self._write(apply))
        self._tokens[key] = token
        return attempts

    async def mark_submitted(self, key: str, task_id: str) -> None:
        """Note the task id the service answered with (from SUBMITTING, or UNKNOWN)."""
        await super().mark_submitted(key, task_id)
        self._tokens.pop(key, None)

    async def mark_unsent(self, key: str) -> None:
        """Note that the POST certainly started nothing: the job goes back to RECORDED.

        From SUBMITTING; or from UNKNOWN, when this store's own submission (its token) was
        the one reaped after its worker's lease ran out: then too nothing was sent.
        """
        token = self._tokens.pop(key, None)
        await self._transition(key, "recorded", self._statements.UNSENT, {"token": token})

    async def mark_finished(
        self,
        key: str,
        result: TaskResult,
        *,
        worker_id: str | None = None,
        hold_for: float | None = None,
    ) -> None:
        """Note the task's final result (from SUBMITTED; again from FINISHED to refresh it).

        With ``worker_id``, only while no other worker holds a live lease on the job, and not
        again once another finished it: a worker whose lease ran out while another took the
        job over gets :class:`InvalidTransitionError`, and leaves the job to that one to
        report. The finished job keeps ``worker_id`` as its owner (with no lease; with
        ``hold_for``, a lease of that many seconds, kept by its heartbeat until the video is
        saved: no other worker fetches a video its finisher is downloading).
        """
        params = {
            "result": dump_result(result),
            "task_id": result.task_id,
            "worker": worker_id,
            "hold": hold_for,
        }
        await self._transition(key, "finished", self._statements.FINISHED, params)

    async def mark_downloaded(
        self, key: str, path: str | os.PathLike[str], *, worker_id: str | None = None
    ) -> None:
        """Note where the finished job's video was saved.

        With ``worker_id``, only while the job is still that worker's: one whose hold ran
        out while another worker took the video over (:meth:`claim_undownloaded`) gets
        :class:`InvalidTransitionError`, and leaves the job to that one to report.
        """
        params = {"path": os.fspath(path), "worker": worker_id}
        await self._transition(key, "downloaded", self._statements.DOWNLOADED, params)

    async def mark_failed(
        self,
        key: str,
        error: BaseException | str,
        *,
        error_type: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Note that the job failed (from any state but FINISHED).

        With ``worker_id``, for a :class:`TaskFailedError` only (the watched task failed):
        only while no other worker holds a live lease on the job, and only once. A worker
        whose lease ran out while another took the job over, or that comes second, gets
        :class:`InvalidTransitionError` and leaves the job to the one that reported it.
        The failed job keeps ``worker_id`` as its owner (with no lease: a later run's
        ``retry_failed`` submits it again as usual).
        """
        if worker_id is None:
            await super().mark_failed(key, error, error_type=error_type)
            return
        if not isinstance(error, TaskFailedError):
            raise InvalidRequestError("error", "a worker reports only a TaskFailedError")
        message, error_type, error_fields = encode_error(error, error_type)
        params = {
            "error": message,
            "error_type": error_type,
            "error_fields": error_fields,
            "task_id": error.task_id,
            "worker": worker_id,
        }
        await self._transition(key, "failed", self._statements.FAILED_BY_WORKER, params)

    async def get(self, key: str) -> JobRecord | None:
        """The job's record, or None if it was never recorded."""
        row = await self._row(self._statements.select_one, self._params(key))
        return None if row is None else to_record(row)

    async def get_many(self, keys: Iterable[str] | None = None) -> dict[str, JobRecord]:
        """Records by key (all of the batch when ``keys`` is None), in the batch's order."""
        params: dict[str, Any] = {"batch": self._batch}
        sql = self._statements.select_all
        if keys is not None:
            params["keys"] = list(dict.fromkeys(keys))
            sql = self._statements.select_keys
        return {row[0]: to_record(row) for row in await self._rows(sql, params)}

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (zero counts left out)."""
        rows = await self._rows(self._statements.counts, {"batch": self._batch})
        return {JobState(state): count for state, count in rows}

    async def _interrupt_and_read(self) -> dict[str, JobRecord]:
        statements = self._statements
        params = {"batch": self._batch, "lost": _pg_sql.LOST_AT_RESUME}

        async def apply(run: _Run) -> dict[str, JobRecord]:
            await run.rowcount(statements.interrupted, params)
            return {
                row[0]: to_record(row) for row in await run.fetchall(statements.select_all, params)
            }

        return await self._write(apply)

    async def _claim(self, worker_id: str, n: int, lease_seconds: float) -> list[JobRecord]:
        # A claim retried after a lost connection may leave leases of its first try behind;
        # they run out like any other.
        params = {"lost": _pg_sql.LOST_WITH_LEASE}
        return await self._lease(self._statements.claim, worker_id, n, lease_seconds, params)

    async def _lease(
        self,
        sql: str,
        worker_id: str,
        n: int,
        lease_seconds: float,
        extra: Mapping[str, object] | None = None,
    ) -> list[JobRecord]:
        params = {
            "batch": self._batch,
            "worker": worker_id,
            "n": n,
            "lease": float(lease_seconds),
            **(extra or {}),
        }

        @_one_statement
        async def apply(run: _Run) -> list[JobRecord]:
            records = [to_record(row) for row in await run.fetchall(sql, params)]
            return sorted(records, key=lambda record: record.index)

        return await self._write(apply)

    async def claim_undownloaded(
        self, worker_id: str, n: int, lease_seconds: float, *, tried: Iterable[str] = ()
    ) -> list[JobRecord]:
        """Lease up to ``n`` finished jobs whose video nobody saved, for a worker to fetch.

        Such a job is finished and paid for: its download failed, or its worker died between
        the end and the file. One scan of the batch's jobs: a worker asks once it has no
        other work left. ``tried``: keys this worker tried to download already (in this run),
        left for another worker or run.
        """
        sql = self._statements.claim_undownloaded
        return await self._lease(sql, worker_id, n, lease_seconds, {"tried": list(tried)})

    async def heartbeat(self, worker_id: str, lease_seconds: float) -> int:
        """Extend the worker's live leases; return how many it still holds.

        A lease that ran out is not revived: another worker may have claimed the job.
        """
        params = {"batch": self._batch, "worker": worker_id, "lease": float(lease_seconds)}
        return await self._rows_written(self._statements.heartbeat, params)

    async def release(self, worker_id: str, keys: Iterable[str] | None = None) -> int:
        """Give up the worker's leases (all, or on ``keys``); return how many were released."""
        params: dict[str, Any] = {"batch": self._batch, "worker": worker_id}
        sql = self._statements.release_all
        if keys is not None:
            params["keys"] = list(keys)
            sql = self._statements.release_keys
        return await self._rows_written(sql, params)

    async def requeue(self, attempts: Mapping[str, int]) -> int:
        """Put failed or unknown jobs back to RECORDED, for the batch's workers to submit again.

        ``attempts`` maps each key to the attempt count its caller read: a job that has moved
        on since (another worker requeued or submitted it) is left alone, so several workers
        asking at once retry each job once. Returns how many jobs were put back.
        """
        if not attempts:
            return 0
        params = {
            "batch": self._batch,
            "keys": list(attempts),
            "attempts": list(attempts.values()),
        }
        return await self._rows_written(self._statements.requeue, params)

    async def work_left(self, worker_id: str) -> int:
        """Jobs with work left (recorded, submitting, submitted) not under this worker's lease.

        Zero means a worker with nothing running is done: every other job has ended.
        """
        row = await self._row(
            self._statements.work_left, {"batch": self._batch, "worker": worker_id}
        )
        return 0 if row is None else int(row[0])

    async def progress(self) -> BatchProgress:
        """The batch's counts by state, its workers' live leases and its recent pace (one
        statement, one scan of the batch's jobs)."""
        rows = await self._rows(self._statements.progress, {"batch": self._batch, "window": 60.0})
        counts: dict[JobState, int] = {}
        workers: dict[str, int] = {}
        not_downloaded = ended = 0
        for state, holder, n, pathless, recent in rows:
            counts[JobState(state)] = counts.get(JobState(state), 0) + int(n)
            if holder is not None:
                workers[str(holder)] = workers.get(str(holder), 0) + int(n)
            if state == JobState.FINISHED:
                not_downloaded += int(pathless)
            ended += int(recent)
        return BatchProgress(
            counts, dict(sorted(workers.items())), ended, not_downloaded=not_downloaded
        )

    async def has_jobs(self) -> bool:
        """True when the batch holds at least one job (one indexed lookup)."""
        row = await self._row(self._statements.has_jobs, {"batch": self._batch})
        return bool(row is not None and row[0])

    async def batches(self) -> list[str]:
        """The names of every batch in the schema (a scan of the table: for error messages)."""
        return [str(name) for (name,) in await self._rows(self._statements.batches, {})]


def _describe(dsn: str, schema: str) -> str:
    """Where the journal lives, for messages: the URL with its password masked, and the schema."""
    return f"{mask_dsn(dsn)} (schema {schema})"
