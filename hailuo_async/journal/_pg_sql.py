"""The journal's PostgreSQL schema, its upgrades, and the statements the store sends.

Every statement a job's life needs is one round trip: a transition is an ``UPDATE`` whose
answer also says, when nothing moved, what the job was (for the error), so no second query is
needed. The database's clock (``clock_timestamp()``, read at the statement) is the only clock:
workers on machines whose clocks disagree still agree on who holds a lease.

Times are ``timestamptz`` in the table and read back as epoch seconds, so rows decode with the
same code as SQLite's (:func:`._sql.to_record`).
"""

from __future__ import annotations

import re

from ._errors import JournalError

__all__ = ["SCHEMA_VERSION", "Statements", "check_schema_name"]

# Version 1: the jobs table and its indexes; 2: the batches' providers. Add an entry to
# _UPGRADES for each new version.
SCHEMA_VERSION = 2

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# The whole SELECT list, in the order of _sql.to_record.
_COLUMNS = (
    "key, idx, state, fingerprint, payload, task_id, result, error, error_type, error_fields,"
    " path, attempts, owner, extract(epoch FROM lease_until)::float8,"
    " extract(epoch FROM created_at)::float8,"
    " extract(epoch FROM updated_at)::float8, extract(epoch FROM submitted_at)::float8,"
    " extract(epoch FROM finished_at)::float8, extract(epoch FROM downloaded_at)::float8"
)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer NOT NULL,
    upgraded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""

# _UPGRADES[v] takes a schema at version v - 1 to version v.
_UPGRADES: dict[int, tuple[str, ...]] = {
    1: (
        # payload and result are JSON kept as text: jsonb refuses a \u0000 a prompt may hold.
        """CREATE TABLE {s}.hailuo_jobs (
            batch text NOT NULL,
            key text NOT NULL,
            idx integer NOT NULL,
            state text NOT NULL CHECK (state IN
                ('recorded', 'submitting', 'submitted', 'finished', 'failed', 'unknown')),
            fingerprint text NOT NULL,
            payload text NOT NULL,
            task_id text,
            result text,
            error text,
            error_type text,
            error_fields text,
            path text,
            attempts integer NOT NULL DEFAULT 0,
            owner text,
            lease_until timestamptz,
            submit_token text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            submitted_at timestamptz,
            finished_at timestamptz,
            downloaded_at timestamptz,
            PRIMARY KEY (batch, key)
        )""",
        # claim() walks the jobs with work left in batch order.
        "CREATE INDEX hailuo_jobs_open ON {s}.hailuo_jobs (batch, idx)"
        " WHERE state IN ('recorded', 'submitted')",
        # The reaper looks for submissions whose lease ran out.
        "CREATE INDEX hailuo_jobs_submitting ON {s}.hailuo_jobs (batch, lease_until)"
        " WHERE state = 'submitting'",
        "CREATE INDEX hailuo_jobs_owner ON {s}.hailuo_jobs (batch, owner) WHERE owner IS NOT NULL",
    ),
    # The provider each batch is sent through (a batch without a row predates providers).
    2: (
        """CREATE TABLE {s}.hailuo_batches (
            batch text PRIMARY KEY,
            provider text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
    ),
}

_NOW = "clock_timestamp()"
_ONE = "batch = %(batch)s AND key = %(key)s"
_LOST = (
    "state = 'unknown', error_type = 'SubmissionUnknownError', error = %(lost)s,"
    f" error_fields = NULL, owner = NULL, lease_until = NULL, updated_at = {_NOW}"
)
LOST_AT_RESUME = (
    "the process stopped after the submission was journaled and before its answer was read;"
    " the service may have started a paid job"
)
LOST_WITH_LEASE = (
    "the worker's lease ran out after the submission was journaled and before its answer was"
    " read; the service may have started a paid job"
)


def check_schema_name(schema: str) -> str:
    """The schema name, if it is a plain lower-case identifier (it is put into SQL text)."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise JournalError(
            f"the schema name {schema!r} must be 1 to 63 lower-case letters, digits or"
            " underscores, not starting with a digit"
        )
    return schema


# Jobs with work left that nobody holds; finished ones whose video nobody saved or holds.
_CLAIMABLE = f"state IN ('recorded', 'submitted') AND (owner IS NULL OR lease_until <= {_NOW})"
_UNDOWNLOADED = (
    f"state = 'finished' AND path IS NULL AND (lease_until IS NULL OR lease_until <= {_NOW})"
    " AND NOT key = ANY(%(tried)s::text[])"
)


def _lease_picked(s: str, open_jobs: str) -> str:
    """``picked AS (...) UPDATE ...``: lease the first jobs where ``open_jobs`` holds to the
    worker, and return them. SKIP LOCKED: claimers never wait for each other."""
    return f"""picked AS (
    SELECT key FROM {s}.hailuo_jobs
    WHERE batch = %(batch)s AND {open_jobs}
    ORDER BY idx LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.hailuo_jobs AS j
SET owner = %(worker)s, lease_until = {_NOW} + make_interval(secs => %(lease)s)
FROM picked WHERE j.batch = %(batch)s AND j.key = picked.key
RETURNING {_COLUMNS.replace("key, idx", "j.key, j.idx", 1)}"""  # noqa: S608


def _transition(set_clause: str, condition: str) -> str:
    # One round trip: `moved` says whether the row changed; `before` (the snapshot the
    # statement started from) says what the job was when it did not.
    return f"""
WITH before AS (SELECT state FROM {{s}}.hailuo_jobs WHERE {_ONE}),
moved AS (
    UPDATE {{s}}.hailuo_jobs SET {set_clause}, updated_at = {_NOW}
    WHERE {_ONE} AND ({condition}) RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM moved), (SELECT state FROM before)"""  # noqa: S608


class Statements:
    """The SQL text of every statement, for the tables in one schema."""

    def __init__(self, schema: str) -> None:
        s = f'"{check_schema_name(schema)}"'
        self.schema = s
        self.version_table = _VERSION_TABLE.format(s=s)
        self.read_version = f"SELECT max(version) FROM {s}.schema_version"  # noqa: S608
        self.write_version = f"INSERT INTO {s}.schema_version (version) VALUES (%s)"  # noqa: S608
        self.upgrades = {
            version: tuple(statement.format(s=s) for statement in statements)
            for version, statements in _UPGRADES.items()
        }
        self.select_one = f"SELECT {_COLUMNS} FROM {s}.hailuo_jobs WHERE {_ONE}"  # noqa: S608
        self.select_all = (
            f"SELECT {_COLUMNS} FROM {s}.hailuo_jobs WHERE batch = %(batch)s ORDER BY idx"  # noqa: S608
        )
        self.select_keys = (
            f"SELECT {_COLUMNS} FROM {s}.hailuo_jobs"  # noqa: S608
            " WHERE batch = %(batch)s AND key = ANY(%(keys)s) ORDER BY idx"
        )
        # A batch recorded before providers were is the gateway's. A row inserted by another
        # worker since this statement's snapshot is not seen: the caller asks again.
        self.bind_provider = f"""
WITH inserted AS (
    INSERT INTO {s}.hailuo_batches (batch, provider)
    SELECT %(batch)s, CASE WHEN EXISTS (SELECT 1 FROM {s}.hailuo_jobs WHERE batch = %(batch)s)
                           THEN 'gateway' ELSE %(provider)s END
    ON CONFLICT (batch) DO NOTHING
    RETURNING provider
)
SELECT provider FROM inserted
UNION ALL SELECT provider FROM {s}.hailuo_batches WHERE batch = %(batch)s"""  # noqa: S608
        self.counts = (
            f"SELECT state, count(*) FROM {s}.hailuo_jobs"  # noqa: S608
            " WHERE batch = %(batch)s GROUP BY state"
        )
        # Where a batch stands, in one scan of its jobs: counted by state and by the worker
        # holding a live lease (NULL: nobody), with the jobs whose video nobody saved and
        # those ended in the last %(window)s seconds. (Plain GROUP BY: it scans in parallel.)
        self.progress = f"""
WITH now AS (SELECT {_NOW} AS t)
SELECT state, CASE WHEN lease_until > (SELECT t FROM now) THEN owner END AS holder, count(*),
       count(*) FILTER (WHERE path IS NULL),
       count(*) FILTER (WHERE state IN ('finished', 'failed')
                        AND finished_at > (SELECT t FROM now) - make_interval(secs => %(window)s))
FROM {s}.hailuo_jobs WHERE batch = %(batch)s GROUP BY 1, 2"""  # noqa: S608
        # The planner's statistics, after a large record: without them the first claims
        # sort the whole batch instead of walking the index in order.
        self.analyze = f"ANALYZE {s}.hailuo_jobs"
        self.has_jobs = f"SELECT EXISTS (SELECT 1 FROM {s}.hailuo_jobs WHERE batch = %(batch)s)"  # noqa: S608
        self.batches = f"SELECT DISTINCT batch FROM {s}.hailuo_jobs ORDER BY batch"  # noqa: S608
        # Conflicts are read from the statement's snapshot; a job recorded at the same moment
        # by another worker is compared afterwards (see PostgresJobStore.record).
        self.record = f"""
WITH incoming AS (
    SELECT * FROM unnest(%(keys)s::text[], %(indexes)s::int[], %(fingerprints)s::text[],
                         %(payloads)s::text[]) AS t(key, idx, fingerprint, payload)
),
known AS (
    SELECT j.key, j.fingerprint <> i.fingerprint AS conflict
    FROM {s}.hailuo_jobs j JOIN incoming i ON j.key = i.key
    WHERE j.batch = %(batch)s AND j.key = ANY(%(keys)s)
),
inserted AS (
    INSERT INTO {s}.hailuo_jobs
        (batch, key, idx, state, fingerprint, payload, created_at, updated_at)
    SELECT %(batch)s, key, idx, 'recorded', fingerprint, payload, {_NOW}, {_NOW} FROM incoming
    WHERE NOT EXISTS (SELECT 1 FROM known WHERE conflict)
    ON CONFLICT (batch, key) DO NOTHING
    RETURNING key
)
SELECT (SELECT array_agg(key ORDER BY key) FROM known WHERE conflict),
       (SELECT array_agg(key) FROM inserted),
       (SELECT array_agg(key) FROM known)"""  # noqa: S608
        self.fingerprints = (
            f"SELECT key, fingerprint FROM {s}.hailuo_jobs"  # noqa: S608
            " WHERE batch = %(batch)s AND key = ANY(%(keys)s)"
        )
        # Fencing: with a worker, only while its lease is live by the database's clock;
        # without, only while nobody holds a live lease. `before` also returns what a retry
        # after a lost connection needs to know whether its first try was committed.
        self.SUBMITTING = f"""
WITH before AS (
    SELECT state, owner, lease_until > {_NOW} AS live, submit_token, attempts
    FROM {s}.hailuo_jobs WHERE {_ONE}
),
moved AS (
    UPDATE {s}.hailuo_jobs SET state = 'submitting', attempts = attempts + 1, task_id = NULL,
        result = NULL, error = NULL, error_type = NULL, error_fields = NULL,
        submit_token = %(token)s,
        updated_at = {_NOW}
    WHERE {_ONE} AND state IN ('recorded', 'failed', 'unknown')
        AND CASE WHEN %(worker)s::text IS NULL
                 THEN owner IS NULL OR lease_until IS NULL OR lease_until <= {_NOW}
                 ELSE owner = %(worker)s AND lease_until > {_NOW} END
    RETURNING attempts
)
SELECT (SELECT attempts FROM moved), b.state, b.owner, b.live, b.submit_token, b.attempts
FROM (SELECT 1) AS one LEFT JOIN before b ON true"""  # noqa: S608
        self.SUBMITTED = _transition(
            f"state = 'submitted', task_id = %(task_id)s, error = NULL, error_type = NULL,"
            f" error_fields = NULL, submitted_at = COALESCE(submitted_at, {_NOW})",
            "state IN ('submitting', 'unknown') OR (state = 'submitted' AND task_id = %(task_id)s)",
        ).format(s=s)
        # A retry after a lost connection finds the job already moved: the first try landed.
        # A job reaped as unknown (its worker's lease ran out) whose submission is still the
        # caller's own (its token) started nothing either: it goes back too.
        self.UNSENT = _transition(
            "state = 'recorded', error = NULL, error_type = NULL, error_fields = NULL",
            "state = 'submitting' OR (%(replaying)s AND state = 'recorded')"
            " OR (state = 'unknown' AND submit_token = %(token)s)",
        ).format(s=s)
        self.UNKNOWN = _transition(
            "state = 'unknown', error = %(reason)s, error_type = %(error_type)s,"
            " error_fields = NULL, owner = NULL, lease_until = NULL",
            "state IN ('submitting', 'unknown')",
        ).format(s=s)
        # With a worker, only while no other worker holds the job: one whose lease ran out
        # (stopped, or cut off) while another took the job over leaves it to that one. The
        # finisher stays the owner (with no lease): a retry after a lost connection knows
        # its own first try by it, and a late worker knows the job was another's. A finisher
        # about to download the video keeps a lease of %(hold)s seconds on it instead, until
        # the video is saved (DOWNLOADED drops it): no other worker fetches it meanwhile.
        self.FINISHED = _transition(
            f"state = 'finished', result = %(result)s, error = NULL, error_type = NULL,"
            f" error_fields = NULL, owner = %(worker)s, finished_at = {_NOW},"
            " lease_until = CASE WHEN %(hold)s::float8 IS NULL THEN NULL"
            f" ELSE {_NOW} + make_interval(secs => %(hold)s::float8) END",
            "task_id = %(task_id)s AND CASE WHEN %(worker)s::text IS NULL"
            " THEN state IN ('submitted', 'finished')"
            " ELSE (state = 'submitted' AND (owner IS NULL OR owner = %(worker)s"
            f" OR lease_until <= {_NOW})) OR (state = 'finished' AND owner = %(worker)s) END",
        ).format(s=s)
        self.FAILED = _transition(
            f"state = 'failed', error = %(error)s, error_type = %(error_type)s,"
            " error_fields = %(error_fields)s, owner = NULL, lease_until = NULL,"
            f" finished_at = {_NOW}",
            "state <> 'finished'",
        ).format(s=s)
        # A watched task that failed, reported by a worker: fenced as FINISHED is, so two
        # workers watching it report it once. The reporter stays the owner (with no lease,
        # so a later run's retry may submit the job again); its own retry after a lost
        # connection finds the job failed under its name.
        self.FAILED_BY_WORKER = _transition(
            f"state = 'failed', error = %(error)s, error_type = %(error_type)s,"
            " error_fields = %(error_fields)s, owner = %(worker)s, lease_until = NULL,"
            f" finished_at = {_NOW}",
            "task_id = %(task_id)s AND ((state = 'submitted' AND (owner IS NULL"
            f" OR owner = %(worker)s OR lease_until <= {_NOW}))"
            " OR (%(replaying)s AND state = 'failed' AND owner = %(worker)s))",
        ).format(s=s)
        # A retry after a lost connection finds the job already failed: the first try landed.
        self.RESULT_LOST = _transition(
            "state = 'failed', error = %(error)s, error_type = NULL, error_fields = NULL,"
            " owner = NULL, lease_until = NULL",
            "(state = 'finished' AND path IS NULL) OR (%(replaying)s AND state = 'failed')",
        ).format(s=s)
        # The video is saved: a lease held for its download is dropped (the owner's name stays).
        # With a worker, only while the job is still its own: a finisher whose hold ran out
        # while another worker took the video over (claim_undownloaded) leaves it to that one.
        self.DOWNLOADED = _transition(
            f"path = %(path)s, downloaded_at = {_NOW}, lease_until = NULL",
            "state = 'finished' AND (%(worker)s::text IS NULL OR owner = %(worker)s)",
        ).format(s=s)
        # At resume, every submission nobody holds a live lease on was interrupted.
        self.interrupted = (
            f"UPDATE {s}.hailuo_jobs SET {_LOST}"  # noqa: S608
            f" WHERE batch = %(batch)s AND state = 'submitting'"
            f" AND (owner IS NULL OR lease_until <= {_NOW})"
        )
        # One round trip: reap the submissions of dead workers, then lease the first jobs
        # with work left that nobody holds. SKIP LOCKED: claimers never wait for each other.
        self.claim = f"""
WITH reaped AS (
    UPDATE {s}.hailuo_jobs SET {_LOST}
    WHERE batch = %(batch)s AND key IN (
        SELECT key FROM {s}.hailuo_jobs
        WHERE batch = %(batch)s AND state = 'submitting' AND lease_until <= {_NOW}
        FOR UPDATE SKIP LOCKED)
),
{_lease_picked(s, _CLAIMABLE)}"""  # noqa: S608
        # Finished jobs whose video was never saved (the download failed, or its worker died
        # between the end and the file): leased to a worker that downloads. Their finisher's
        # name (an owner with no lease) gives way to the downloader's.
        self.claim_undownloaded = "WITH " + _lease_picked(s, _UNDOWNLOADED)
        self.heartbeat = (
            f"UPDATE {s}.hailuo_jobs"  # noqa: S608
            f" SET lease_until = {_NOW} + make_interval(secs => %(lease)s)"
            f" WHERE batch = %(batch)s AND owner = %(worker)s AND lease_until > {_NOW}"
        )
        # Leases only: a finished job keeps its finisher's name.
        self.release_all = (
            f"UPDATE {s}.hailuo_jobs SET owner = NULL, lease_until = NULL"  # noqa: S608
            " WHERE batch = %(batch)s AND owner = %(worker)s AND lease_until IS NOT NULL"
        )
        self.release_keys = self.release_all + " AND key = ANY(%(keys)s)"
        # A failed (or unknown) job back to `recorded` for the workers to claim, only if it
        # is still at the attempt the caller saw: each failure is retried once per request,
        # however many workers ask at the same time.
        self.requeue = f"""
UPDATE {s}.hailuo_jobs AS j SET state = 'recorded', owner = NULL, lease_until = NULL,
    updated_at = {_NOW}
FROM unnest(%(keys)s::text[], %(attempts)s::int[]) AS t(key, attempts)
WHERE j.batch = %(batch)s AND j.key = t.key AND j.attempts = t.attempts
    AND j.state IN ('failed', 'unknown')"""  # noqa: S608
        # A worker's batch is done when no job has work left that it does not hold itself.
        self.work_left = (
            f"SELECT count(*) FROM {s}.hailuo_jobs"  # noqa: S608
            " WHERE batch = %(batch)s AND state IN ('recorded', 'submitting', 'submitted')"
            f" AND NOT (owner IS NOT NULL AND owner = %(worker)s AND lease_until > {_NOW})"
        )
