"""A coordinated client: webhooks cross processes through PostgreSQL, confirmed by one GET."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pgutil import DSN, admin
from psycopg import sql

from hailuo_async import (
    Coordination,
    HailuoClient,
    Limits,
    PollPolicy,
    RetryPolicy,
    VideoRequest,
)
from hailuo_async.postgres import CoordinationError, account_name
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

SCALE = 0.01
# Far beyond any test's life: a pushed task's watch ends by its webhook, or not at all.
NO_BACKSTOP = 3600.0


def coordinated_client(
    server: FakeHailuoServer,
    schema: str,
    *,
    max_active_jobs: int | None = None,
    lease: float = 30.0,
) -> HailuoClient:
    """A client of the fake that coordinates through the test's schema."""
    return HailuoClient(
        server.api_key,
        base_url=server.url,
        poll_policy=PollPolicy().scaled(SCALE),
        retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05),
        limits=Limits(rate_window=60 * SCALE, max_active_jobs=max_active_jobs),
        coordination=Coordination(DSN, schema=schema, lease=lease),
    )


def event_for(task_id: str) -> dict[str, Any]:
    """The fake gateway's webhook body for a task that claims success."""
    return {
        "event_type": "ASYNC_TASK_RESULT",
        "payload": {"task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}},
    }


async def ended(server: FakeHailuoServer, count: int) -> None:
    """Wait until ``count`` of the fake's jobs have ended (without asking it about any)."""
    while server.stats.tasks_terminal < count:  # noqa: ASYNC110
        await anyio.sleep(0.01)


async def test_webhook_received_elsewhere_ends_the_watch_with_one_get(pg_schema: str) -> None:
    """B publishes A's task's webhook; A confirms it with the only GET; unwatched ids cost none."""
    async with FakeHailuoServer(time_scale=SCALE, seed=1, job_duration=Fixed(30)) as server:
        watcher_side = coordinated_client(server, pg_schema)
        receiver_side = coordinated_client(server, pg_schema)
        async with watcher_side, receiver_side:
            watched = await watcher_side.submit(VideoRequest(prompt="watched"))
            unwatched = await receiver_side.submit(VideoRequest(prompt="nobody watches"))
            await ended(server, 2)
            async with watcher_side.watch(backstop_interval=NO_BACKSTOP) as watcher:
                watcher.add(watched, submitted_at=anyio.current_time(), pushed=True)
                assert await receiver_side.handle_webhook(event_for(unwatched)) is None
                assert await receiver_side.handle_webhook(event_for(watched)) is None
                with anyio.fail_after(30):
                    results = [result async for result in watcher]
            coordinator = watcher_side._coordinator
            assert coordinator is not None
            received = coordinator.bus.received
    assert [result.task_id for result in results] == [watched]
    assert server.stats.polls_by_task == {watched: 1}  # A's confirmation; B fetched nothing
    assert received == 2


async def test_account_defaults_to_a_hash_of_the_key(pg_schema: str) -> None:
    """The account row is named by the key's hash; the key never reaches the database."""
    async with FakeHailuoServer(time_scale=SCALE) as server:
        async with coordinated_client(server, pg_schema) as client:
            await client.submit(VideoRequest(prompt="one"))
    with admin() as connection:
        query = sql.SQL("SELECT account FROM {}.account_limits").format(sql.Identifier(pg_schema))
        rows = connection.execute(query).fetchall()
    assert rows == [(account_name(server.api_key),)]
    assert server.api_key not in str(rows[0][0])


async def test_bus_gap_polls_the_watched_ids_once(pg_schema: str) -> None:
    """After the listener is cut, the watched ids are polled once: a lost push still ends them."""
    async with FakeHailuoServer(time_scale=SCALE, seed=2, job_duration=Fixed(30)) as server:
        client = coordinated_client(server, pg_schema)
        async with client, client.watch(backstop_interval=NO_BACKSTOP) as watcher:
            task_id = await client.submit(VideoRequest(prompt="lost push"))
            watcher.add(task_id, submitted_at=anyio.current_time(), pushed=True)
            await ended(server, 1)
            coordinator = client._coordinator
            assert coordinator is not None
            pid = coordinator.bus.backend_pid
            with admin() as connection:
                connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with anyio.fail_after(60):
                results = [result async for result in watcher]
            gap_polls = coordinator.gap_polls
    assert [result.task_id for result in results] == [task_id]
    assert gap_polls == 1
    assert server.stats.polls_by_task == {task_id: 1}


async def test_coordinated_client_outside_async_with_spends_nothing(pg_schema: str) -> None:
    """Used without ``async with``, a coordinated client raises before any request leaves."""
    async with FakeHailuoServer(time_scale=SCALE) as server:
        client = coordinated_client(server, pg_schema)
        with pytest.raises(CoordinationError):
            await client.submit(VideoRequest(prompt="never sent"))
        await client.aclose()
    assert server.stats.submission_attempts == 0


async def test_wrong_database_is_a_clear_error_before_any_request(pg_schema: str) -> None:
    """A coordination URL naming a missing database fails on entry, naming the problem."""
    missing = DSN.rsplit("/", 1)[0] + "/no_such_database_hailuo"
    async with FakeHailuoServer(time_scale=SCALE) as server:
        client = HailuoClient(server.api_key, base_url=server.url, coordination=missing)
        with pytest.raises(CoordinationError, match="no_such_database_hailuo"):
            async with client:
                await client.submit(VideoRequest(prompt="never sent"))
    assert server.stats.submission_attempts == 0


async def test_a_coordinated_client_opens_again_after_closing(pg_schema: str) -> None:
    """``async with`` twice on one client: each time its connections open, and close after."""
    async with FakeHailuoServer(time_scale=SCALE) as server:
        client = coordinated_client(server, pg_schema)
        for prompt in ("first", "second"):
            async with client:
                await client.submit(VideoRequest(prompt=prompt))
            assert client._coordinator is not None
            assert not client._coordinator.is_open
    assert server.stats.submissions_accepted == 2
