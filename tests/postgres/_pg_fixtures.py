"""Fixtures for the shared-limits and push-bus tests: a real server, a schema per test.

The server is read from ``HAILUO_TEST_POSTGRES``; when none answers the tests skip with a
loud reason, unless ``HAILUO_REQUIRE_POSTGRES=1`` (CI), which makes them fail instead.
(Kept apart from ``conftest.py`` so that it can merge with the job store's fixtures.)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import attrs
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@attrs.frozen
class PgSchema:
    """A DSN and a schema made for one test, dropped after it."""

    dsn: str
    schema: str


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _server_dsn() -> str:
    dsn = os.environ.get("HAILUO_TEST_POSTGRES", DEFAULT_DSN)
    try:
        asyncio.run(_execute(dsn, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"NO POSTGRESQL SERVER at HAILUO_TEST_POSTGRES ({type(exc).__name__}: {exc})"
        if os.environ.get("HAILUO_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and HAILUO_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return dsn


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A schema of its own on the test server, dropped with everything in it afterwards."""
    dsn = _server_dsn()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield PgSchema(dsn=dsn, schema=schema)
    asyncio.run(_execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
