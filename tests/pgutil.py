"""The PostgreSQL server the tests use, and a fresh schema for each test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager

import anyio
import psycopg
import pytest
from anyio.abc import Process

DSN = os.environ.get("HAILUO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("HAILUO_REQUIRE_POSTGRES") == "1"

_unreachable: list[str] = []


def require_postgres() -> None:
    """Skip (loudly) when no server answers at DSN; fail instead when HAILUO_REQUIRE_POSTGRES=1."""
    if not _unreachable:
        try:
            with psycopg.connect(DSN, connect_timeout=3) as connection:
                connection.execute("SELECT 1")
            _unreachable.append("")
        except psycopg.Error as exc:
            _unreachable.append(f"no PostgreSQL answers at HAILUO_TEST_POSTGRES={DSN}: {exc}")
    reason = _unreachable[0]
    if not reason:
        return
    if REQUIRED:
        pytest.fail(f"HAILUO_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL TESTS: {reason}")


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the test database, for setting up and checking."""
    return psycopg.connect(DSN, autocommit=True)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A schema name no other test uses; the schema (if created) is dropped afterwards."""
    require_postgres()
    schema = f"hailuo_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        with admin() as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def running(
    command: Sequence[str], env: Mapping[str, str] | None = None
) -> AsyncIterator[Process]:
    """A child process, killed (if still running) and reaped when the block ends."""
    async with await anyio.open_process(list(command), env=env) as process:
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
