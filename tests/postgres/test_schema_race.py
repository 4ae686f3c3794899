"""Processes that start together on an empty database create its schema once, without error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import psycopg
import pytest
from pgutil import DSN, admin

from hailuo_async.journal import PostgresJobStore
from hailuo_async.postgres._schema import create_limits_schema

pytestmark = pytest.mark.anyio


async def _open_limits(schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as connection:
        await create_limits_schema(connection, schema)


async def _open_journal(schema: str) -> None:
    async with PostgresJobStore(DSN, batch="race", schema=schema):
        pass


async def test_journals_and_limits_created_at_once_in_one_fresh_schema(pg_schema: str) -> None:
    """Four journals and four limit setups racing on a missing schema all open, one schema made."""
    failures: list[BaseException] = []

    async def attempt(opener: Callable[[str], Awaitable[None]]) -> None:
        try:
            await opener(pg_schema)
        except Exception as exc:
            failures.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(attempt, _open_journal)
            group.start_soon(attempt, _open_limits)
    assert failures == []
    with admin() as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,)
        ).fetchall()
    assert {"schema_version", "limits_meta", "account_limits"} <= {row[0] for row in tables}
