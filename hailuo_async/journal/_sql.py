"""The journal's SQLite schema and statements, and the blocking helpers that run them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from ._errors import JournalError, JournalSchemaError
from ._records import JobRecord, JobState, result_from_json

__all__ = [
    "BIND_PROVIDER",
    "CLAIMABLE",
    "DOWNLOADED",
    "FAILED",
    "FINISHED",
    "HEARTBEAT",
    "INSERT",
    "INTERRUPTED",
    "LEASE",
    "LEASE_EXPIRED",
    "PROVIDER_OF",
    "RELEASE_ALL",
    "RELEASE_ONE",
    "RESULT_LOST",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT_ONE",
    "SUBMITTED",
    "SUBMITTING",
    "UNKNOWN",
    "UNSENT",
    "create_schema",
    "fingerprints",
    "select",
    "to_record",
    "transaction",
    "use_wal",
]

SCHEMA_VERSION = 2
"""2 added ``error_fields`` (the failed job's error attributes as JSON); 1 is upgraded in place.

The provider a batch is sent through is a row of ``hailuo_journal_meta`` (``provider:`` and
the batch's name); a batch without one was recorded before providers were: the gateway's.
"""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hailuo_journal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS hailuo_jobs (
        batch TEXT NOT NULL,
        key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        state TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        payload TEXT NOT NULL,
        task_id TEXT,
        result TEXT,
        error TEXT,
        error_type TEXT,
        error_fields TEXT,
        path TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        lease_until REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        submitted_at REAL,
        finished_at REAL,
        downloaded_at REAL,
        PRIMARY KEY (batch, key)
    )""",
    # claim() looks for work by state in batch order.
    "CREATE INDEX IF NOT EXISTS hailuo_jobs_by_state ON hailuo_jobs (batch, state, idx)",
)

_COLUMNS = (
    "key, idx, state, fingerprint, payload, task_id, result, error, error_type, error_fields,"
    " path, attempts, owner, lease_until, created_at, updated_at, submitted_at, finished_at,"
    " downloaded_at"
)
SELECT_ONE = f"SELECT {_COLUMNS} FROM hailuo_jobs WHERE batch = ? AND key = ?"  # noqa: S608

INSERT = """
INSERT INTO hailuo_jobs (batch, key, idx, state, fingerprint, payload, created_at, updated_at)
VALUES (?, ?, ?, 'recorded', ?, ?, ?, ?)
ON CONFLICT (batch, key) DO NOTHING
"""
SUBMITTING = """
UPDATE hailuo_jobs SET state = 'submitting', attempts = attempts + 1, task_id = NULL,
    result = NULL, error = NULL, error_type = NULL, error_fields = NULL, updated_at = :now
WHERE batch = :batch AND key = :key AND state IN ('recorded', 'failed', 'unknown')
    AND CASE WHEN :worker IS NULL THEN owner IS NULL OR lease_until <= :now
             ELSE owner = :worker AND lease_until > :now END
"""
SUBMITTED = """
UPDATE hailuo_jobs SET state = 'submitted', task_id = :task_id, error = NULL, error_type = NULL,
    error_fields = NULL, submitted_at = COALESCE(submitted_at, :now), updated_at = :now
WHERE batch = :batch AND key = :key
    AND (state IN ('submitting', 'unknown') OR (state = 'submitted' AND task_id = :task_id))
"""
# The POST was refused (429, 5xx) or never left: nothing started, the job is new again.
UNSENT = """
UPDATE hailuo_jobs SET state = 'recorded', updated_at = :now
WHERE batch = :batch AND key = :key AND state = 'submitting'
"""
UNKNOWN = """
UPDATE hailuo_jobs SET state = 'unknown', error = :reason, error_type = :error_type,
    error_fields = NULL, owner = NULL, lease_until = NULL, updated_at = :now
WHERE batch = :batch AND key = :key AND state IN ('submitting', 'unknown')
"""
FINISHED = """
UPDATE hailuo_jobs SET state = 'finished', result = :result, error = NULL, error_type = NULL,
    error_fields = NULL, owner = NULL, lease_until = NULL, finished_at = :now, updated_at = :now
WHERE batch = :batch AND key = :key AND state IN ('submitted', 'finished') AND task_id = :task_id
"""
FAILED = """
UPDATE hailuo_jobs SET state = 'failed', error = :error, error_type = :error_type,
    error_fields = :error_fields, owner = NULL, lease_until = NULL, finished_at = :now,
    updated_at = :now
WHERE batch = :batch AND key = :key AND state != 'finished'
"""
# The finished job's video was never saved and can no longer be fetched: failed, so that a
# retry may submit it again. A saved video is kept: that job is done.
RESULT_LOST = """
UPDATE hailuo_jobs SET state = 'failed', error = :error, error_type = NULL, error_fields = NULL,
    owner = NULL, lease_until = NULL, updated_at = :now
WHERE batch = :batch AND key = :key AND state = 'finished' AND path IS NULL
"""
DOWNLOADED = """
UPDATE hailuo_jobs SET path = :path, downloaded_at = :now, updated_at = :now
WHERE batch = :batch AND key = :key AND state = 'finished'
"""
# A `submitting` job nobody is working on any more: its process died between journaling the
# POST and learning its answer. Without a lease (one process) every one found at resume is so.
_INTERRUPTED_SET = """
UPDATE hailuo_jobs SET state = 'unknown', error_type = 'SubmissionUnknownError',
    error_fields = NULL,
    error = 'the process stopped after the submission was journaled and before its answer '
            || 'was read; the service may have started a paid job',
    owner = NULL, lease_until = NULL, updated_at = :now
"""
INTERRUPTED = (
    _INTERRUPTED_SET
    + "WHERE batch = :batch AND state = 'submitting' AND (owner IS NULL OR lease_until <= :now)"
)
LEASE_EXPIRED = (
    _INTERRUPTED_SET
    + "WHERE batch = :batch AND state = 'submitting' AND owner IS NOT NULL"
    + " AND lease_until <= :now"
)
CLAIMABLE = """
SELECT key FROM hailuo_jobs
WHERE batch = :batch AND state IN ('recorded', 'submitted')
    AND (owner IS NULL OR lease_until <= :now)
ORDER BY idx LIMIT :n
"""
LEASE = "UPDATE hailuo_jobs SET owner = ?, lease_until = ? WHERE batch = ? AND key = ?"
HEARTBEAT = """
UPDATE hailuo_jobs SET lease_until = :until
WHERE batch = :batch AND owner = :worker AND lease_until > :now
"""
RELEASE_ALL = """
UPDATE hailuo_jobs SET owner = NULL, lease_until = NULL WHERE batch = :batch AND owner = :worker
"""
RELEASE_ONE = """
UPDATE hailuo_jobs SET owner = NULL, lease_until = NULL
WHERE batch = ? AND owner = ? AND key = ?
"""

# The provider of a batch: its own, or the gateway for a batch recorded before providers.
PROVIDER_OF = "SELECT value FROM hailuo_journal_meta WHERE name = ?"
BIND_PROVIDER = """
INSERT INTO hailuo_journal_meta (name, value)
SELECT :name, CASE WHEN EXISTS (SELECT 1 FROM hailuo_jobs WHERE batch = :batch)
                   THEN 'gateway' ELSE :provider END
WHERE true
ON CONFLICT (name) DO NOTHING
"""

# SQLite's default limit of host parameters is 999 on older builds.
_CHUNK = 500
# Above this many keys, one scan of the batch beats many indexed lookups.
_SCAN_ABOVE = 2_000


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def to_record(row: tuple[Any, ...]) -> JobRecord:
    (
        key,
        index,
        state,
        fingerprint,
        payload,
        task_id,
        result,
        error,
        error_type,
        error_fields,
        path,
        attempts,
        owner,
        lease_until,
        created_at,
        updated_at,
        submitted_at,
        finished_at,
        downloaded_at,
    ) = row
    return JobRecord(
        key=key,
        index=index,
        state=JobState(state),
        fingerprint=fingerprint,
        payload=json.loads(payload),
        task_id=task_id,
        result=None if result is None else result_from_json(json.loads(result)),
        error=error,
        error_type=error_type,
        error_fields=None if error_fields is None else json.loads(error_fields),
        path=path,
        attempts=attempts,
        owner=owner,
        lease_until=_time(lease_until),
        created_at=datetime.fromtimestamp(created_at, timezone.utc),
        updated_at=datetime.fromtimestamp(updated_at, timezone.utc),
        submitted_at=_time(submitted_at),
        finished_at=_time(finished_at),
        downloaded_at=_time(downloaded_at),
    )


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def use_wal(connection: sqlite3.Connection) -> None:
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"the journal needs WAL mode; this file system gave {mode!r}")


def create_schema(connection: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        connection.execute(statement)
    row = connection.execute(
        "SELECT value FROM hailuo_journal_meta WHERE name = 'schema_version'"
    ).fetchone()
    if row is None:
        connection.execute(
            "INSERT INTO hailuo_journal_meta (name, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    elif row[0] == "1":
        _upgrade_from_1(connection)
    elif row[0] != str(SCHEMA_VERSION):
        raise JournalSchemaError(
            f"the journal has schema version {row[0]}; this library reads {SCHEMA_VERSION}",
            found=int(row[0]),
            supported=SCHEMA_VERSION,
        )


def _upgrade_from_1(connection: sqlite3.Connection) -> None:
    # Runs inside create_schema's transaction, so a crash leaves version 1 whole.
    connection.execute("ALTER TABLE hailuo_jobs ADD COLUMN error_fields TEXT")
    connection.execute(
        "UPDATE hailuo_journal_meta SET value = ? WHERE name = 'schema_version'",
        (str(SCHEMA_VERSION),),
    )


def transaction(
    connection: sqlite3.Connection, writes: list[Callable[[sqlite3.Connection], object]]
) -> list[object]:
    # IMMEDIATE takes the write lock up front, so a second process waits (busy_timeout)
    # instead of failing half way through the group.
    connection.execute("BEGIN IMMEDIATE")
    try:
        results = [write(connection) for write in writes]
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return results


def _rows(
    connection: sqlite3.Connection, columns: str, batch: str, keys: Sequence[str] | None
) -> list[Any]:
    """Rows (``key`` first, ``idx`` second) of the batch, or of ``keys``, in batch order."""
    if keys is None or len(keys) > _SCAN_ABOVE:
        sql = f"SELECT {columns} FROM hailuo_jobs WHERE batch = ? ORDER BY idx"  # noqa: S608
        rows = connection.execute(sql, (batch,)).fetchall()
        if keys is not None:
            wanted = set(keys)
            rows = [row for row in rows if row[0] in wanted]
        return rows
    rows = []
    for chunk in _chunks(keys):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT {columns} FROM hailuo_jobs WHERE batch = ? AND key IN ({marks})"  # noqa: S608
        rows.extend(connection.execute(sql, (batch, *chunk)).fetchall())
    rows.sort(key=lambda row: row[1])
    return rows


def select(
    connection: sqlite3.Connection, batch: str, keys: Sequence[str] | None
) -> dict[str, JobRecord]:
    """Records of the batch (or of ``keys``) by key, in batch order."""
    return {row[0]: to_record(row) for row in _rows(connection, _COLUMNS, batch, keys)}


def fingerprints(connection: sqlite3.Connection, batch: str, keys: Sequence[str]) -> dict[str, str]:
    """The recorded fingerprint of each of ``keys`` that is recorded."""
    return {row[0]: row[2] for row in _rows(connection, "key, idx, fingerprint", batch, keys)}
