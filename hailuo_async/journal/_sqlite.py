"""SQLiteJobStore: a batch's journal in one SQLite file, for one process.

Durability: the database is in WAL mode with ``synchronous=FULL`` by default, so every commit
fsyncs the write-ahead log before it returns and a change that was acknowledged survives a
killed process *and* a power cut. ``synchronous=NORMAL`` skips that fsync (the WAL is synced
only at checkpoints): acknowledged changes then survive a killed process but the last ones
may be lost with the machine, which for ``submitting`` means a job that might be paid twice.
FULL costs one fsync per commit, and :class:`GroupCommitter` shares that fsync among all the
writes waiting at the time, so it is the default.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import anyio

from .._download import fsync_directory
from .._exceptions import InvalidRequestError, JournalInUseError
from .._lockfile import FileHold, hold_file
from . import _sql as sql
from ._committed import GroupCommittedStore, Rejected, raise_rejected, submitting_attempts
from ._errors import (
    JobConflictError,
    JournalClosedError,
    JournalError,
)
from ._group import GroupCommitter
from ._keys import JobSpec
from ._records import JobRecord, JobState

__all__ = ["SQLiteJobStore", "Synchronous"]

Synchronous = Literal["FULL", "NORMAL"]
T = TypeVar("T")


class SQLiteJobStore(GroupCommittedStore[Callable[[sqlite3.Connection], Any]]):
    """A :class:`JobStore` in one SQLite file; several batches may share a file.

    Use ``async with SQLiteJobStore(path, batch="run-1") as store:``, or ``await
    store.open()`` and ``await store.aclose()``. All database work runs on a worker thread,
    one call at a time; writes are group-committed. One process per batch: a second process
    working on the same batch must go through :meth:`claim` and leases.

    A batch run (``generate_many``) holds the file for its whole length (:meth:`hold`): a
    second run on the same file, in this process or another, gets
    :class:`~hailuo_async.JournalInUseError` naming the holder before it reads anything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch: str = "default",
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidRequestError("synchronous", "must be 'FULL' or 'NORMAL'")
        if not isinstance(batch, str) or not batch:
            raise InvalidRequestError("batch", "must be a non-empty string")
        self._path = Path(path)
        self._batch = batch
        self._sql = sql
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._writer: GroupCommitter[Callable[[sqlite3.Connection], Any]] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._hold: FileHold | None = None
        # A batch run on this store: the hold it took (None if the store was held already).
        self._running = False
        self._run_hold: FileHold | None = None

    def __repr__(self) -> str:
        return f"<SQLiteJobStore {str(self._path)!r} batch={self._batch!r}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- holding the file --------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True while this store holds its file (:meth:`hold`)."""
        return self._hold is not None and self._hold.held

    def hold(self) -> None:
        """Hold the journal file for this store until :meth:`aclose`: no other run may.

        Raises :class:`~hailuo_async.JournalInUseError`, naming the holder (host, process
        id, since when), when another store holds it, in this process or another. The hold
        is an operating-system lock: a killed process holds nothing (see
        :mod:`hailuo_async._lockfile`). Calling it again while held does nothing.
        """
        if not self.held:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._hold = hold_file(self._path)

    def _begin_run(self) -> None:
        """A batch run starts on this store: hold the file unless held already."""
        if self._running:
            raise JournalInUseError(
                str(self._path), "a batch of this process already runs on this store"
            )
        if not self.held:
            self.hold()
            self._run_hold = self._hold
        self._running = True

    def _end_run(self) -> None:
        """The batch run ends: let the file go if the run took the hold."""
        self._running = False
        hold, self._run_hold = self._run_hold, None
        if hold is not None and hold is self._hold:
            hold.release()
            self._hold = None

    async def aclose(self) -> None:
        """Commit writes still due, close the connection, and let the file go."""
        try:
            await super().aclose()
        finally:
            hold, self._hold = self._hold, None
            if hold is not None:
                hold.release()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SQLiteJobStore:
        """Open (creating if needed) the database; return the store."""
        if self._connection is not None:
            raise JournalError("the store is already open")
        self._limiter = anyio.CapacityLimiter(1)
        try:
            connection = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {str(self._path)!r}: {exc}") from exc
        self._connection = connection
        self._writer = GroupCommitter(self._run_group)
        return self

    def _connect(self) -> sqlite3.Connection:
        created = not self._path.exists()
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            sql.use_wal(connection)
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            # On macOS a plain fsync leaves data in the drive's cache; FULL should mean the disk.
            connection.execute("PRAGMA fullfsync=ON")
            connection.execute("BEGIN IMMEDIATE")
            sql.create_schema(connection)
            connection.execute("COMMIT")
            if created:
                fsync_directory(self._path.parent)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await anyio.to_thread.run_sync(connection.close, limiter=self._limiter)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run_group(self, writes: list[Callable[[sqlite3.Connection], Any]]) -> list[object]:
        # The GroupCommitter's apply: one group's writes in one transaction, on the thread.
        connection = self._connection
        if connection is None:
            raise JournalClosedError("the journal is not open")
        return await anyio.to_thread.run_sync(
            sql.transaction, connection, writes, limiter=self._limiter
        )

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return cast(T, await self._commit(fn))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        connection, limiter = self._connection, self._limiter
        if connection is None or limiter is None:
            raise JournalClosedError("the journal is not open")
        try:
            return await anyio.to_thread.run_sync(fn, connection, limiter=limiter)
        except sqlite3.Error as exc:
            raise JournalError(f"the journal could not read: {exc}") from exc

    def _rejection(self, connection: sqlite3.Connection, key: str) -> Rejected:
        row = connection.execute(
            "SELECT state FROM hailuo_jobs WHERE batch = ? AND key = ?", (self._batch, key)
        ).fetchone()
        return Rejected(None if row is None else row[0])

    async def _transition(
        self, key: str, target: str, statement: str, params: dict[str, Any]
    ) -> None:
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> Rejected | None:
            bound = {**params, "batch": batch, "key": key, "now": time.time()}
            if connection.execute(statement, bound).rowcount == 1:
                return None
            return self._rejection(connection, key)

        rejected = await self._write(apply)
        if rejected is not None:
            raise_rejected(key, target, rejected)

    # -- JobStore ----------------------------------------------------------------------------

    async def bind_provider(self, provider: str) -> str:
        """Record the batch's provider unless one is; return the one recorded (see
        :meth:`JobStore.bind_provider`)."""
        name = f"provider:{self._batch}"
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> str:
            connection.execute(
                sql.BIND_PROVIDER, {"name": name, "batch": batch, "provider": provider}
            )
            return str(connection.execute(sql.PROVIDER_OF, (name,)).fetchone()[0])

        return await self._write(apply)

    async def record(self, jobs: Sequence[JobSpec]) -> int:
        """Record jobs not recorded yet (others are left as they are); return how many were new.

        Raises :class:`JobConflictError`, recording nothing, if a key was recorded for a
        different request.
        """
        keys = [job.key for job in jobs]
        if len(set(keys)) != len(keys):
            raise InvalidRequestError("jobs", "holds the same key more than once")
        batch = self._batch

        def encode() -> list[str]:
            return [
                json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False) for job in jobs
            ]

        # Encoded before joining a group, so a payload that cannot be encoded fails this call
        # alone, not every write committed with it.
        payloads = await anyio.to_thread.run_sync(encode)

        def apply(connection: sqlite3.Connection) -> int | list[str]:
            known = sql.fingerprints(connection, batch, keys)
            conflicts = [
                job.key for job in jobs if known.get(job.key, job.fingerprint) != job.fingerprint
            ]
            if conflicts:
                return conflicts
            now = time.time()
            rows = [
                (batch, job.key, job.index, job.fingerprint, payload, now, now)
                for job, payload in zip(jobs, payloads, strict=True)
                if job.key not in known
            ]
            connection.executemany(sql.INSERT, rows)
            return len(rows)

        outcome = await self._write(apply)
        if isinstance(outcome, list):
            raise JobConflictError(outcome)
        return outcome

    async def mark_submitting(self, key: str, *, worker_id: str | None = None) -> int:
        """Durably note that the POST is about to be sent; return the attempt number.

        Allowed from RECORDED, FAILED and UNKNOWN. With ``worker_id``, only while that worker
        holds a live lease on the job (else :class:`LeaseLostError`); without, only while no
        live lease is held by anyone.
        """
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> int | Rejected:
            now = time.time()
            params = {"batch": batch, "key": key, "worker": worker_id, "now": now}
            if connection.execute(sql.SUBMITTING, params).rowcount == 1:
                row = connection.execute(
                    "SELECT attempts FROM hailuo_jobs WHERE batch = ? AND key = ?", (batch, key)
                ).fetchone()
                return int(row[0])
            row = connection.execute(
                "SELECT state, owner, lease_until FROM hailuo_jobs WHERE batch = ? AND key = ?",
                (batch, key),
            ).fetchone()
            if row is None:
                return Rejected(None)
            state, owner, lease_until = row
            live = owner is not None and lease_until is not None and lease_until > now
            return Rejected.submitting(state, owner, live)

        return submitting_attempts(key, await self._write(apply))

    async def get(self, key: str) -> JobRecord | None:
        """The job's record, or None if it was never recorded."""
        batch = self._batch

        def read(connection: sqlite3.Connection) -> JobRecord | None:
            row = connection.execute(sql.SELECT_ONE, (batch, key)).fetchone()
            return None if row is None else sql.to_record(row)

        return await self._read(read)

    async def get_many(self, keys: Iterable[str] | None = None) -> dict[str, JobRecord]:
        """Records by key (all of the batch when ``keys`` is None), in the batch's order."""
        wanted = None if keys is None else list(dict.fromkeys(keys))
        batch = self._batch

        def read(connection: sqlite3.Connection) -> dict[str, JobRecord]:
            return sql.select(connection, batch, wanted)

        return await self._read(read)

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (zero counts left out)."""
        batch = self._batch

        def read(connection: sqlite3.Connection) -> dict[JobState, int]:
            rows = connection.execute(
                "SELECT state, COUNT(*) FROM hailuo_jobs WHERE batch = ? GROUP BY state", (batch,)
            ).fetchall()
            return {JobState(state): count for state, count in rows}

        return await self._read(read)

    async def _interrupt_and_read(self) -> dict[str, JobRecord]:
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> dict[str, JobRecord]:
            connection.execute(sql.INTERRUPTED, {"batch": batch, "now": time.time()})
            return sql.select(connection, batch, None)

        return await self._write(apply)

    async def _claim(self, worker_id: str, n: int, lease_seconds: float) -> list[JobRecord]:
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> list[JobRecord]:
            now = time.time()
            connection.execute(sql.LEASE_EXPIRED, {"batch": batch, "now": now})
            keys = [
                row[0]
                for row in connection.execute(
                    sql.CLAIMABLE, {"batch": batch, "now": now, "n": n}
                ).fetchall()
            ]
            until = now + lease_seconds
            connection.executemany(sql.LEASE, [(worker_id, until, batch, key) for key in keys])
            records = sql.select(connection, batch, keys)
            return [records[key] for key in keys]

        return await self._write(apply)

    async def heartbeat(self, worker_id: str, lease_seconds: float) -> int:
        """Extend the worker's live leases; return how many it still holds.

        A lease that ran out is not revived: another worker may have claimed the job.
        """
        batch = self._batch

        def apply(connection: sqlite3.Connection) -> int:
            now = time.time()
            params = {"batch": batch, "worker": worker_id, "now": now, "until": now + lease_seconds}
            return int(connection.execute(sql.HEARTBEAT, params).rowcount)

        return await self._write(apply)

    async def release(self, worker_id: str, keys: Iterable[str] | None = None) -> int:
        """Give up the worker's leases (all, or on ``keys``); return how many were released."""
        batch = self._batch
        wanted = None if keys is None else list(keys)

        def apply(connection: sqlite3.Connection) -> int:
            if wanted is None:
                params = {"batch": batch, "worker": worker_id}
                return int(connection.execute(sql.RELEASE_ALL, params).rowcount)
            before = connection.total_changes
            connection.executemany(sql.RELEASE_ONE, [(batch, worker_id, key) for key in wanted])
            return connection.total_changes - before

        return await self._write(apply)
