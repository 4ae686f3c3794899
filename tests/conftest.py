from collections.abc import Iterator

import pytest
from pgutil import fresh_schema


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only: aiohttp has no other backend."""
    return "asyncio"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped after it (skips if no server answers)."""
    with fresh_schema() as schema:
        yield schema
