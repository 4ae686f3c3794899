"""Helpers shared by the client tests: tiny aiohttp apps, fast policies and client factories."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from aiohttp import web

from hailuo_async import HailuoClient, Limits, PollPolicy, RetryPolicy
from hailuo_async.testing import FakeHailuoServer, InProcessTransport

LIMIT_FIELDS = ("max_in_flight", "requests_per_minute", "max_active_jobs")
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_retry_after=1.0)
FAST_POLL = PollPolicy(first_poll_delay=0.02, min_interval=0.02, max_interval=0.2)
SCALED_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ClientFactory = Callable[..., HailuoClient]
IN_PROCESS_APP = "https://app.invalid"
"""Where an app served by :func:`answered_by` is, for its transport alone."""


@asynccontextmanager
async def serve_app(app: web.Application, *, shutdown_timeout: float = 0.2) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yield its base URL, and clean it up after."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """Run a tiny aiohttp app answering every path with ``handler``; yield its base URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as url:
        yield url


@asynccontextmanager
async def answered_by(
    handler: Handler, make_client: ClientFactory | None = None, **options: Any
) -> AsyncIterator[HailuoClient]:
    """A client (``make_client(url, **options)``, else ``client_for``) whose every request
    ``handler`` answers in this process, through an in-memory transport: no socket.

    For the tests of what the client makes of answers; those of what a socket does (a
    refused port, a reset, a timeout) use :func:`serve`.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    try:
        assert runner.server is not None
        transport = InProcessTransport({("app.invalid", 443): runner.server})
        make = make_client or partial(client_for, api_key="test-key")
        async with make(IN_PROCESS_APP, transport=transport, **options) as client:
            yield client
    finally:
        await runner.cleanup()


def client_for(url: str, *, api_key: str, **kwargs: Any) -> HailuoClient:
    """A client on ``url`` with ``FAST_RETRY``; keyword arguments add or override options."""
    options: dict[str, Any] = {"retry_policy": FAST_RETRY, **kwargs}
    return HailuoClient(api_key, base_url=url, **options)


def fake_client(
    server: FakeHailuoServer, api_key: str | None = None, **kwargs: Any
) -> HailuoClient:
    """A ``client_for`` the fake (its key unless ``api_key``) in its dialect, policies scaled to
    its time scale, through its transport when it serves in-process."""
    scale = server.config.time_scale
    # Limits' fields may be given as keywords: they join the scaled rate window.
    limit_fields = {name: kwargs.pop(name) for name in LIMIT_FIELDS if name in kwargs}
    options: dict[str, Any] = {
        "provider": server.provider,
        "poll_policy": PollPolicy().scaled(scale),
        "limits": Limits(rate_window=60 * scale, **limit_fields),
        **({"transport": server.transport()} if server.in_process else {}),
        **kwargs,
    }
    return client_for(server.url, api_key=api_key or server.api_key, **options)


def make_client(
    server: FakeHailuoServer, *, retry_policy: RetryPolicy = SCALED_RETRY, **kwargs: Any
) -> HailuoClient:
    """A ``fake_client`` with ``SCALED_RETRY`` (or ``retry_policy``), for batch and watch tests."""
    return fake_client(server, retry_policy=retry_policy, **kwargs)


# The fake server's own tasks: a connection being accepted, then its handler.
SERVER_TASKS = ("RequestHandler", "_accept_connection")


def client_tasks() -> set[asyncio.Task[object]]:
    """Tasks on the loop, less the fake server's own connection tasks."""
    return {
        task
        for task in asyncio.all_tasks()
        if not any(name in getattr(task.get_coro(), "__qualname__", "") for name in SERVER_TASKS)
    }
