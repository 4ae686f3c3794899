"""Helpers shared by the fake-service tests: a thin raw HTTP client for the fake."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from clientutil import serve_app

from hailuo_async.testing import FakeHailuoServer
from hailuo_async.testing._server import RESULT_PATH, SUBMIT_PATH

VALID_BODY: dict[str, Any] = {"prompt": "a red fox trotting through fresh snow"}
VALID: Any = object()
"""Stands for a valid body in the fake's dialect (``None`` is sent as JSON null)."""
TERMINAL = ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED")


class Reply:
    """Status, headers and body of one response, read in full."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:200]!r}>"


class Api:
    """Raw requests against a running FakeHailuoServer."""

    submit_path = SUBMIT_PATH
    valid_body: Any = VALID_BODY

    def __init__(self, server: FakeHailuoServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    def auth(self, key: str | None = None) -> dict[str, str]:
        """An Authorization header with the server's key (or `key`)."""
        return {"Authorization": f"Bearer {key if key is not None else self.server.api_key}"}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """Send one request and read the whole answer."""
        async with self.session.request(
            method,
            url,
            headers=headers,
            data=data,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.read()
            return Reply(response.status, dict(response.headers), body)

    async def submit(
        self,
        body: Any = VALID,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """POST a submission: `body` (default: a valid one) as JSON, or `raw` bytes as they are."""
        sent_headers = {"Content-Type": "application/json", **self.auth()}
        sent_headers.update(headers or {})
        body = self.valid_body if body is VALID else body
        data: Any = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
        if len(data) > 1024 * 1024:
            # aiohttp warns (an error here) about large raw-bytes bodies.
            data = io.BytesIO(data)
        return await self.request(
            "POST",
            self.server.url + self.submit_path,
            headers=sent_headers,
            data=data,
            timeout=timeout,
        )

    async def create(self, body: Any = VALID) -> str:
        """Submit a valid body and return the task id."""
        reply = await self.submit(body)
        assert reply.status == 200, reply
        task_id: str = reply.json()["task_id"]
        return task_id

    async def result(self, task_id: str, *, headers: dict[str, str] | None = None) -> Reply:
        """GET the task result."""
        return await self.request(
            "GET",
            self.server.url + RESULT_PATH,
            headers=headers if headers is not None else self.auth(),
            params={"task_id": task_id},
        )

    async def poll(self, task_id: str) -> dict[str, Any]:
        """The task-result JSON, asserting a 200."""
        reply = await self.result(task_id)
        assert reply.status == 200, reply
        data: dict[str, Any] = reply.json()
        return data

    async def wait_terminal(self, task_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the task is SUCCEED or FAILED."""
        deadline = time.monotonic() + timeout
        while True:
            data = await self.poll(task_id)
            if data["task"]["status"] in TERMINAL:
                return data
            assert time.monotonic() < deadline, f"task {task_id} never finished"
            await anyio.sleep(0.01)


@asynccontextmanager
async def open_api(server: FakeHailuoServer) -> AsyncIterator[Api]:
    """An Api over a fresh client session, through the fake's transport (in-process or not)."""
    async with _session(server) as session:
        yield Api(server, session)


def _session(server: FakeHailuoServer) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=server.transport().connector(limit=0))


@asynccontextmanager
async def running(**knobs: Any) -> AsyncIterator[Api]:
    """Start a fake (fast, seeded and in-process unless told otherwise) and an Api onto it."""
    knobs = {"time_scale": 0.001, "seed": 0, "in_process": True, **knobs}
    async with FakeHailuoServer(**knobs) as server, open_api(server) as api:
        yield api


MINIMAX_BODY: dict[str, Any] = {"model": "MiniMax-Hailuo-02", "prompt": "a red fox in the snow"}
MINIMAX_TERMINAL = ("Success", "Fail")


class MiniMaxApi(Api):
    """Raw requests against a FakeHailuoServer speaking MiniMax's v1 video API."""

    submit_path = "/v1/video_generation"
    valid_body = MINIMAX_BODY

    async def create(self, body: Any = VALID) -> str:
        """Submit a valid body and return the task id, asserting a clean answer."""
        answer = (await self.submit(body)).json()
        assert answer["base_resp"] == {"status_code": 0, "status_msg": "success"}, answer
        task_id: str = answer["task_id"]
        return task_id

    async def query(self, task_id: str, *, headers: dict[str, str] | None = None) -> Reply:
        """GET /v1/query/video_generation."""
        return await self.request(
            "GET",
            self.server.url + "/v1/query/video_generation",
            headers=headers if headers is not None else self.auth(),
            params={"task_id": task_id},
        )

    async def retrieve(self, file_id: str, *, headers: dict[str, str] | None = None) -> Reply:
        """GET /v1/files/retrieve."""
        return await self.request(
            "GET",
            self.server.url + "/v1/files/retrieve",
            headers=headers if headers is not None else self.auth(),
            params={"file_id": file_id},
        )

    async def wait_terminal(self, task_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """Query until the task is Success or Fail; return that answer."""
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.query(task_id)
            assert reply.status == 200, reply
            data: dict[str, Any] = reply.json()
            if data["status"] in MINIMAX_TERMINAL:
                return data
            assert time.monotonic() < deadline, f"task {task_id} never finished"
            await anyio.sleep(0.01)


@asynccontextmanager
async def running_minimax(**knobs: Any) -> AsyncIterator[MiniMaxApi]:
    """Start a MiniMax-speaking fake (fast, seeded and in-process unless told otherwise) and an
    Api onto it."""
    knobs = {"time_scale": 0.001, "seed": 0, "provider": "minimax", "in_process": True, **knobs}
    async with FakeHailuoServer(**knobs) as server, _session(server) as session:
        yield MiniMaxApi(server, session)


@asynccontextmanager
async def serving(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[str]:
    """Serve ``handler`` for POSTs to ``path`` on a free loopback port; yield its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    async with serve_app(app, shutdown_timeout=0.1) as base_url:
        yield base_url + path
