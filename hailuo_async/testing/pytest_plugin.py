"""pytest fixtures for testing code against the fake Hailuo service.

Installed packages register this module automatically through the ``pytest11`` entry point
``hailuo_async = "hailuo_async.testing.pytest_plugin"``: nothing goes in conftest.py.

The fixtures run under anyio's pytest plugin. Mark tests ``@pytest.mark.anyio`` and use the
asyncio backend (aiohttp runs on asyncio only; other backends are skipped), e.g.::

    @pytest.fixture
    def anyio_backend() -> str:
        return "asyncio"

    @pytest.mark.anyio
    async def test_my_app(fake_hailuo: FakeHailuoServer) -> None:
        client = MyClient(base_url=fake_hailuo.url, api_key=fake_hailuo.api_key)
        ...

    @pytest.mark.anyio
    async def test_retries(fake_hailuo_factory: FakeHailuoFactory) -> None:
        async with fake_hailuo_factory(faults=Faults(server_error=0.3)) as server:
            ...

``fake_minimax`` is the same fake speaking MiniMax's own API; the factory makes one with
``fake_hailuo_factory(provider="minimax", ...)``, and one with no port at all, answering in
memory through ``server.transport()`` (which ``server.client()`` uses), with
``fake_hailuo_factory(in_process=True, ...)``.

Sessions that never ask for these fixtures are not affected by the plugin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ._server import FakeHailuoServer

__all__ = [
    "FAST_DEFAULTS",
    "FakeHailuoFactory",
    "fake_hailuo",
    "fake_hailuo_factory",
    "fake_minimax",
]

FakeHailuoFactory = Callable[..., FakeHailuoServer]
"""Takes FakeHailuoServer's keyword arguments; returns a server to enter with `async with`."""

FAST_DEFAULTS: dict[str, Any] = {"time_scale": 0.001, "seed": 0}
"""The fixtures' defaults: 30-180 s jobs finish in 0.03-0.18 s, and runs are reproducible."""


def _backend_name(anyio_backend: object) -> str:
    if isinstance(anyio_backend, tuple):
        return str(anyio_backend[0])
    return str(anyio_backend)


@pytest.fixture
def fake_hailuo_factory() -> FakeHailuoFactory:
    """Build fake servers with chosen knobs (fast defaults); enter each with `async with`."""

    def factory(**knobs: Any) -> FakeHailuoServer:
        return FakeHailuoServer(**{**FAST_DEFAULTS, **knobs})

    return factory


@pytest.fixture
async def fake_hailuo(
    anyio_backend: object, fake_hailuo_factory: FakeHailuoFactory
) -> AsyncIterator[FakeHailuoServer]:
    """A running fake Hailuo service with the fast defaults, closed after the test."""
    async with _started(anyio_backend, fake_hailuo_factory()) as server:
        yield server


@pytest.fixture
async def fake_minimax(
    anyio_backend: object, fake_hailuo_factory: FakeHailuoFactory
) -> AsyncIterator[FakeHailuoServer]:
    """A running fake speaking MiniMax's v1 video API, with the fast defaults."""
    async with _started(anyio_backend, fake_hailuo_factory(provider="minimax")) as server:
        yield server


@asynccontextmanager
async def _started(
    anyio_backend: object, server: FakeHailuoServer
) -> AsyncIterator[FakeHailuoServer]:
    if _backend_name(anyio_backend) != "asyncio":
        pytest.skip("the fake Hailuo service runs on asyncio only")
    async with server:
        yield server
