"""A network to PostgreSQL that goes silent: no reset, no close, nothing answers.

The relay (``pgserver.Link``) silences its links for good, as a firewall dropping their
packets would; links made once it is restored go through. A client that did not bound its
round trips would wait on a silenced link for ever: every test ends only if the client
gave the link up (the relay counts it) and replayed its work on a new one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from pgserver import Link
from pgutil import DSN, require_postgres

from hailuo_async import VideoRequest
from hailuo_async.extend import job_specs
from hailuo_async.journal import JobState, PostgresJobStore
from hailuo_async.postgres import SharedAccountLimits

pytestmark = pytest.mark.anyio

# libpq waits at least 2 s for a connection; the round trips are bounded tighter for speed.
QUICK = "connect_timeout=2"


@asynccontextmanager
async def serving() -> AsyncIterator[Link]:
    """A relay to the shared server, serving for the block's length."""
    require_postgres()
    relay = Link(DSN)
    async with anyio.create_task_group() as group:
        await group.start(relay.serve)
        yield relay
        group.cancel_scope.cancel()


async def test_a_journal_write_on_a_silent_link_is_cut_and_replayed(pg_schema: str) -> None:
    """The link goes silent under a write and a heartbeat: both land once, on a new connection."""
    requests = [VideoRequest(f"a heron, take {i}") for i in range(3)]
    specs = job_specs(requests, [f"job-{i}" for i in range(3)])
    async with (
        serving() as link,
        PostgresJobStore(
            f"{link.dsn()}?{QUICK}", batch="b", schema=pg_schema, round_trip_timeout=1
        ) as store,
    ):
        await store.record(specs)
        claimed = await store.claim("w", 2, 60)
        link.blackhole()
        async with anyio.create_task_group() as group:
            group.start_soon(link.restore_after, 2)
            with anyio.fail_after(60):
                attempt = await store.mark_submitting("job-0", worker_id="w")
                held = await store.heartbeat("w", 60)
        records = await store.get_many()
        cut, reconnects = store.round_trips_cut, store.reconnects
    assert [r.key for r in claimed] == ["job-0", "job-1"]
    assert (attempt, held) == (1, 2)
    assert records["job-0"].state is JobState.SUBMITTING
    assert records["job-0"].attempts == 1
    assert cut >= 1
    assert reconnects >= 1
    assert link.abandoned >= 1


async def test_shared_limits_give_up_a_silent_link() -> None:
    """The shared limits' link goes silent: a request slot is still granted, on a new one."""
    schema = f"hailuo_test_{secrets.token_hex(6)}"
    account = f"blackhole-{secrets.token_hex(4)}"
    try:
        async with (
            serving() as link,
            SharedAccountLimits(
                f"{link.dsn()}?{QUICK}",
                account=account,
                schema=schema,
                requests_per_minute=6000,
                max_active_jobs=5,
                round_trip_timeout=1,
            ) as limits,
        ):
            link.blackhole()
            async with anyio.create_task_group() as group:
                group.start_soon(link.restore_after, 2)
                with anyio.fail_after(60):
                    async with limits.requests.slot("poll"):
                        pass
                    granted = await limits.active_jobs.try_acquire()
            reconnects = limits.reconnects
    finally:
        await _drop(schema)
    assert granted
    assert reconnects >= 1
    assert link.abandoned >= 1


async def _drop(schema: str) -> None:
    def drop() -> None:
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    await anyio.to_thread.run_sync(drop)
