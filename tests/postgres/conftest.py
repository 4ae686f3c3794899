"""PostgreSQL tests: a real server at HAILUO_TEST_POSTGRES, a fresh schema per test.

Without a server they skip with a loud reason, unless HAILUO_REQUIRE_POSTGRES=1 (set by
.ci/run): then they fail. The ``pg_schema`` fixture (tests/conftest.py) does both.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from pgserver import PrivateCluster
from pgutil import DSN, admin, require_postgres

from hailuo_async.journal import PostgresJobStore


@pytest.fixture
async def store(pg_schema: str) -> AsyncIterator[PostgresJobStore]:
    """An open store in the test's own schema."""
    async with PostgresJobStore(DSN, batch="b", schema=pg_schema) as opened:
        yield opened


@pytest.fixture
def app_dsn() -> str:
    """The test DSN with an application_name no other test uses, to find its backends."""
    require_postgres()
    separator = "&" if "?" in DSN else "?"
    return f"{DSN}{separator}application_name=hailuo_test_{secrets.token_hex(4)}"


@pytest.fixture
def powerless_role() -> Iterator[str]:
    """A login role with no privilege beyond connecting; dropped after the test."""
    require_postgres()
    role = f"hailuo_nobody_{secrets.token_hex(4)}"
    with admin() as connection:
        connection.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        with admin() as connection:
            connection.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of the session's own, for tests that restart it; removed at the end.

    Made once (initdb takes a few seconds); skips loudly without the binaries, unless
    HAILUO_REQUIRE_POSTGRES=1.
    """
    cluster = PrivateCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def private_pg(private_cluster: PrivateCluster) -> Iterator[tuple[PrivateCluster, str]]:
    """The private cluster, running, and a fresh schema in it (dropped after the test)."""
    private_cluster.ensure_running()
    schema = f"hailuo_test_{secrets.token_hex(6)}"
    try:
        yield private_cluster, schema
    finally:
        private_cluster.ensure_running()
        with psycopg.connect(private_cluster.dsn(), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
