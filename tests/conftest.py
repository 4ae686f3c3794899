import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only: aiohttp has no other backend."""
    return "asyncio"
