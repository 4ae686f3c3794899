"""The library's schemas in PostgreSQL: the one runner that creates and upgrades them.

:func:`migrate` creates or upgrades one set of tables (a :class:`SchemaPlan`) in a schema,
under :data:`SCHEMA_LOCK`: the journal's (:mod:`..journal._pg_sql`) and the shared
limits' (:func:`limits_plan`, below) both go through it, and may share one schema.

The shared limits' tables and functions:

Every change of the limits is one call of a PL/pgSQL function that locks the account's
row (``FOR UPDATE``) and reads the database's clock (``clock_timestamp()``), so processes
on machines whose clocks disagree still agree on the schedule, and each decision is made
on fresh data under the lock: one round trip per decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from psycopg import sql

from ._common import CoordinationError
from ._connection import Connection

__all__ = [
    "LIMITS_SCHEMA_VERSION",
    "SCHEMA_LOCK",
    "SchemaPlan",
    "SchemaTooNewError",
    "Statement",
    "create_limits_schema",
    "in_schema",
    "limits_plan",
    "migrate",
]

Statement = str | sql.Composed
"""One statement of a :class:`SchemaPlan`: text, or composed with the schema's name."""

SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hailuo-async schema ' || %s))"
"""The lock every creator of one of the library's schemas takes first, keyed by its name.

The journal and the shared limits may create the same schema at the same moment (N workers
starting on an empty database); ``CREATE SCHEMA IF NOT EXISTS`` can still collide, so both
take this transaction-scoped advisory lock before they look.
"""


class SchemaTooNewError(Exception):
    """The schema was written by a newer version of the library (its caller says so)."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"schema version {found}, newer than {supported}")
        self.found = found
        self.supported = supported


@attrs.frozen
class SchemaPlan:
    """One set of tables, as :func:`migrate` creates and upgrades it."""

    version: int
    """The version this library writes."""
    tables: Sequence[Statement]
    """Run first, every time (``CREATE TABLE IF NOT EXISTS``: at least the version's table)."""
    read_version: Statement
    """One row holding the schema's version; no row, or NULL, in a new schema."""
    upgrades: Mapping[int, Sequence[Statement]]
    """``upgrades[v]`` takes the tables from version ``v - 1`` to ``v`` (0: none yet)."""
    write_version: Statement
    """Notes each version reached (its one parameter)."""
    refresh: Sequence[Statement] = ()
    """Run last, every time (``CREATE OR REPLACE FUNCTION``)."""


async def migrate(connection: Connection, schema: str, plan: SchemaPlan) -> int:
    """Create or upgrade ``plan``'s tables in ``schema`` (created if missing); return the
    version found (0 when new). One transaction; :class:`SchemaTooNewError` changes nothing."""
    async with connection.transaction():
        # One creator at a time: others wait, then find the schema at its version.
        await connection.execute(SCHEMA_LOCK, (schema,))
        cursor = await connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        )
        # Looked up first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even
        # when the schema exists.
        if await cursor.fetchone() is None:
            await connection.execute(in_schema(schema, "CREATE SCHEMA {s}"))
        for statement in plan.tables:
            await connection.execute(statement)
        row = await (await connection.execute(plan.read_version)).fetchone()
        found = 0 if row is None or row[0] is None else int(row[0])
        if found > plan.version:
            raise SchemaTooNewError(found, plan.version)
        for version in range(found + 1, plan.version + 1):
            for statement in plan.upgrades.get(version, ()):
                await connection.execute(statement)
            await connection.execute(plan.write_version, (version,))
        for statement in plan.refresh:
            await connection.execute(statement)
    return found


LIMITS_SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS {s}.limits_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.account_limits (
    account text PRIMARY KEY,
    -- request rate: requests per rate_window seconds; NULL while being discovered
    rate_window double precision NOT NULL,
    utilisation double precision NOT NULL,
    rate double precision,
    rate_adaptive boolean NOT NULL,
    rate_changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_free timestamptz NOT NULL DEFAULT '-infinity',
    first_sent timestamptz,
    window_start timestamptz NOT NULL DEFAULT '-infinity',
    window_count bigint NOT NULL DEFAULT 0,
    previous_count bigint NOT NULL DEFAULT 0,
    -- 429 pauses, per kind of call
    submit_paused_until timestamptz NOT NULL DEFAULT '-infinity',
    poll_paused_until timestamptz NOT NULL DEFAULT '-infinity',
    rate_limited bigint NOT NULL DEFAULT 0,
    -- active jobs: the cap, and how it is being discovered
    active_cap integer NOT NULL,
    active_adaptive boolean NOT NULL,
    active_slow_start boolean NOT NULL,
    active_ceiling integer NOT NULL,
    clean_completions integer NOT NULL DEFAULT 0,
    probe_after integer NOT NULL DEFAULT 100
);
CREATE TABLE IF NOT EXISTS {s}.account_holders (
    account text NOT NULL REFERENCES {s}.account_limits ON DELETE CASCADE,
    holder text NOT NULL,
    active integer NOT NULL DEFAULT 0,
    on_server integer NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    -- while the holder waits for a place (it asks again before then); NULL otherwise
    waiting_until timestamptz,
    -- the server process of its connection, and when that server started: a holder whose
    -- process is gone from the same server is dead, or reconnecting (absent_since)
    backend_pid integer,
    server_started timestamptz,
    absent_since timestamptz,
    PRIMARY KEY (account, holder)
);
"""

# A version-1 table: the columns version 2 added.
_UPGRADE_TO_2 = """
ALTER TABLE {s}.account_holders
    ADD COLUMN IF NOT EXISTS waiting_until timestamptz,
    ADD COLUMN IF NOT EXISTS backend_pid integer,
    ADD COLUMN IF NOT EXISTS server_started timestamptz,
    ADD COLUMN IF NOT EXISTS absent_since timestamptz;
"""

_LOCK_ACCOUNT = """
CREATE OR REPLACE FUNCTION {s}.lock_account(p_account text) RETURNS {s}.account_limits
LANGUAGE plpgsql AS $fn$
DECLARE
    r {s}.account_limits%ROWTYPE;
BEGIN
    SELECT * INTO r FROM {s}.account_limits WHERE account = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % has no limits row', p_account;
    END IF;
    RETURN r;
END
$fn$;
"""

_RESERVE = """
CREATE OR REPLACE FUNCTION {s}.reserve_requests(
    p_account text, p_kind text, p_count integer, p_increase double precision
) RETURNS TABLE (first_start timestamptz, spacing double precision,
                 paused_till timestamptz, db_now timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    r {s}.account_limits%ROWTYPE;
    t timestamptz := clock_timestamp();
    win interval;
    pause timestamptz;
    gap double precision;
    tolerance double precision;
    start_at timestamptz;
BEGIN
    r := {s}.lock_account(p_account);
    win := r.rate_window * interval '1 second';
    pause := CASE p_kind WHEN 'submit' THEN r.submit_paused_until ELSE r.poll_paused_until END;
    IF pause > t THEN
        RETURN QUERY SELECT NULL::timestamptz, 0.0::double precision, pause, t;
        RETURN;
    END IF;
    IF r.rate_adaptive AND r.rate IS NOT NULL THEN
        -- additive increase, in proportion to the time since the rate last changed
        r.rate := r.rate * (1 + p_increase
            * least(extract(epoch FROM t - r.rate_changed_at), r.rate_window) / r.rate_window);
        r.rate_changed_at := t;
    END IF;
    gap := CASE WHEN r.rate IS NULL THEN 0.0 ELSE r.rate_window / (r.rate * r.utilisation) END;
    -- A given rate carries spacing nobody used over to later requests, as far as the share
    -- the spacing leaves unspent allows: then any window holds at most rate - 1 starts (one
    -- of the account's requests kept for the spread of arrival times).
    tolerance := CASE WHEN r.rate IS NULL OR r.rate_adaptive THEN 0.0
                      ELSE gap * greatest(0.0, r.rate - 2.0 - r.rate * r.utilisation) END;
    start_at := greatest(r.next_free - tolerance * interval '1 second', t);
    IF t >= r.window_start + win THEN
        r.previous_count := CASE WHEN t < r.window_start + 2 * win THEN r.window_count ELSE 0 END;
        r.window_start := t;
        r.window_count := 0;
    END IF;
    UPDATE {s}.account_limits SET
        rate = r.rate,
        rate_changed_at = r.rate_changed_at,
        next_free = greatest(r.next_free, t) + gap * p_count * interval '1 second',
        first_sent = coalesce(r.first_sent, t),
        window_start = r.window_start,
        window_count = r.window_count + p_count,
        previous_count = r.previous_count
    WHERE account = p_account;
    RETURN QUERY SELECT start_at, gap, pause, t;
END
$fn$;
"""

_RATE_LIMITED = """
CREATE OR REPLACE FUNCTION {s}.note_rate_limited(
    p_account text, p_kind text, p_pause double precision, p_rate_exceeded boolean,
    p_decrease double precision, p_floor double precision
) RETURNS timestamptz
LANGUAGE plpgsql AS $fn$
DECLARE
    r {s}.account_limits%ROWTYPE;
    t timestamptz := clock_timestamp();
    pause_end timestamptz := clock_timestamp() + p_pause * interval '1 second';
    into_window double precision;
    sent double precision;
BEGIN
    r := {s}.lock_account(p_account);
    IF p_kind = 'submit' THEN
        r.submit_paused_until := greatest(r.submit_paused_until, pause_end);
        pause_end := r.submit_paused_until;
    ELSE
        r.poll_paused_until := greatest(r.poll_paused_until, pause_end);
        pause_end := r.poll_paused_until;
    END IF;
    IF p_rate_exceeded AND r.rate_adaptive THEN
        IF r.rate IS NULL THEN
            -- the first cut: from the rate sent over the last window, once one has passed
            IF r.first_sent IS NOT NULL
               AND t - r.first_sent >= r.rate_window * interval '1 second' THEN
                into_window := least(1.0,
                    extract(epoch FROM t - r.window_start) / r.rate_window);
                sent := r.window_count + r.previous_count * (1.0 - into_window);
                r.rate := greatest(p_floor, sent * p_decrease);
                r.rate_changed_at := t;
            END IF;
        ELSE
            -- multiplicative decrease; 429s of the same moment are echoes of one cut
            IF t - r.rate_changed_at
               >= (r.rate_window / greatest(r.rate, 1.0)) * 4 * interval '1 second' THEN
                r.rate := greatest(p_floor, r.rate * p_decrease);
            END IF;
            r.rate_changed_at := t;
        END IF;
    END IF;
    UPDATE {s}.account_limits SET
        submit_paused_until = r.submit_paused_until,
        poll_paused_until = r.poll_paused_until,
        rate = r.rate,
        rate_changed_at = r.rate_changed_at,
        rate_limited = r.rate_limited + 1
    WHERE account = p_account;
    RETURN pause_end;
END
$fn$;
"""

_SYNC_ACTIVE = """
CREATE OR REPLACE FUNCTION {s}.sync_active_jobs(
    p_account text, p_holder text, p_lease double precision,
    p_active integer, p_on_server integer, p_want boolean, p_waiting boolean,
    p_ask_every double precision, p_absent_grace double precision,
    p_submitted integer, p_completed integer, p_rate_limited boolean, p_client_pid integer
) RETURNS TABLE (granted boolean, cap integer, total_active integer, room integer,
                 holders integer, db_now timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    r {s}.account_limits%ROWTYPE;
    t timestamptz := clock_timestamp();
    started timestamptz := pg_postmaster_start_time();
    -- a waiting holder asks again every p_ask_every seconds: silent for four, it is gone
    waiting timestamptz := CASE WHEN p_want OR p_waiting
        THEN t + 4 * p_ask_every * interval '1 second' END;
    -- The server process of this connection, when the client is connected to it directly:
    -- behind a pooler (PgBouncer) the client's pid is the pooler's, and a server process
    -- outlives (or leaves before) its clients, so only the lease can tell.
    own_pid integer := CASE WHEN p_client_pid = pg_backend_pid() THEN pg_backend_pid() END;
    mine integer := p_active;
    total integer;
    total_on_server integer;
    contenders integer;
    everyone integer;
    learned integer;
    ok boolean;
    free integer;
BEGIN
    r := {s}.lock_account(p_account);
    -- A holder whose server process has gone from this server (the same one it last used)
    -- was killed, or is reconnecting: seen gone for p_absent_grace seconds, it is dead.
    IF EXISTS (SELECT 1 FROM {s}.account_holders
               WHERE account = p_account AND holder <> p_holder AND absent_since IS NULL
                 AND server_started = started) THEN
        UPDATE {s}.account_holders SET absent_since = t
            WHERE account = p_account AND holder <> p_holder AND absent_since IS NULL
              AND server_started = started
              AND backend_pid <> ALL (ARRAY(SELECT pid FROM pg_stat_get_activity(NULL)));
    END IF;
    -- a dead holder, or one that stopped renewing its lease (stopped), frees its places
    DELETE FROM {s}.account_holders
        WHERE account = p_account AND holder <> p_holder
          AND (expires_at < t OR absent_since <= t - p_absent_grace * interval '1 second');
    INSERT INTO {s}.account_holders AS h (account, holder, active, on_server, expires_at,
            waiting_until, backend_pid, server_started, absent_since)
        VALUES (p_account, p_holder, p_active, p_on_server, t + p_lease * interval '1 second',
                waiting, own_pid, started, NULL)
        ON CONFLICT (account, holder) DO UPDATE SET
            active = excluded.active, on_server = excluded.on_server,
            expires_at = excluded.expires_at, waiting_until = excluded.waiting_until,
            backend_pid = excluded.backend_pid, server_started = excluded.server_started,
            absent_since = NULL;
    IF r.active_adaptive AND r.active_slow_start THEN
        r.active_cap := least(r.active_ceiling, r.active_cap + p_submitted);
    END IF;
    IF p_completed > 0 AND r.active_adaptive AND NOT r.active_slow_start THEN
        r.clean_completions := r.clean_completions + p_completed;
        IF r.clean_completions >= r.probe_after AND r.active_cap < r.active_ceiling THEN
            r.clean_completions := 0;
            r.active_cap := r.active_cap + 1;
        END IF;
    END IF;
    SELECT coalesce(sum(active), 0), coalesce(sum(on_server), 0),
           count(*) FILTER (WHERE active > 0 OR waiting_until > t OR holder = p_holder),
           count(*)
        INTO total, total_on_server, contenders, everyone
        FROM {s}.account_holders WHERE account = p_account;
    IF p_rate_limited AND r.active_adaptive THEN
        r.clean_completions := 0;
        learned := greatest(1, total_on_server);
        IF learned < r.active_cap THEN
            IF r.active_slow_start THEN
                r.active_slow_start := false;
            ELSE
                r.probe_after := least(r.probe_after * 4, 1048576);
            END IF;
            r.active_cap := learned;
        END IF;
    END IF;
    -- The fair share: a free place goes to a waiting holder with the fewest places. A
    -- holder never takes one while another that holds fewer is waiting for one, so a
    -- process that joins late gets the next places that free up, and the holders even out.
    ok := p_want AND total < r.active_cap AND NOT EXISTS (
        SELECT 1 FROM {s}.account_holders
        WHERE account = p_account AND holder <> p_holder
          AND waiting_until > t AND active < mine);
    IF ok THEN
        mine := mine + 1;
        total := total + 1;
        UPDATE {s}.account_holders SET active = mine,
                waiting_until = CASE WHEN p_waiting THEN waiting END
            WHERE account = p_account AND holder = p_holder;
    END IF;
    -- How many more this holder may take now: every free place while nobody else waits,
    -- else up to its share of the holders that hold or want places.
    free := greatest(0, r.active_cap - total);
    IF EXISTS (SELECT 1 FROM {s}.account_holders
               WHERE account = p_account AND holder <> p_holder AND waiting_until > t) THEN
        free := least(free, greatest(0, ceil(r.active_cap::numeric / contenders)::integer - mine));
    END IF;
    UPDATE {s}.account_limits SET
        active_cap = r.active_cap,
        active_slow_start = r.active_slow_start,
        clean_completions = r.clean_completions,
        probe_after = r.probe_after
    WHERE account = p_account;
    RETURN QUERY SELECT ok, r.active_cap, total, free, everyone, t;
END
$fn$;
"""


def in_schema(schema: str, text: str) -> sql.Composed:
    """The statement ``text`` with ``{s}`` standing for ``schema`` (quoted)."""
    return sql.SQL(text).format(s=sql.Identifier(schema))


def limits_plan(schema: str) -> SchemaPlan:
    """The shared limits' tables and functions in ``schema``."""
    return SchemaPlan(
        version=LIMITS_SCHEMA_VERSION,
        tables=[in_schema(schema, _TABLES)],
        read_version=in_schema(schema, "SELECT version FROM {s}.limits_meta"),
        upgrades={2: [in_schema(schema, _UPGRADE_TO_2)]},
        write_version=in_schema(
            schema,
            "INSERT INTO {s}.limits_meta (version) VALUES (%s)"
            " ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
        ),
        refresh=[
            in_schema(schema, function)
            for function in (_LOCK_ACCOUNT, _RESERVE, _RATE_LIMITED, _SYNC_ACTIVE)
        ],
    )


async def create_limits_schema(connection: Connection, schema: str) -> None:
    """Create or upgrade the limits' tables and functions in ``schema`` (idempotent)."""
    try:
        await migrate(connection, schema, limits_plan(schema))
    except SchemaTooNewError as exc:
        raise CoordinationError(
            f"schema {schema!r} holds shared limits of version {exc.found}, newer than"
            f" this library's {exc.supported}: upgrade hailuo-async"
        ) from None
