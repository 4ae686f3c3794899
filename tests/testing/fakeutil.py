"""Helpers shared by the fake-service tests: a thin raw HTTP client for the fake."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio

from hailuo_async.testing import RESULT_PATH, SUBMIT_PATH, FakeHailuoServer

VALID_BODY: dict[str, Any] = {"prompt": "a red fox trotting through fresh snow"}
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
        body: Any = VALID_BODY,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """POST a submission: `body` as JSON, or `raw` bytes as they are."""
        sent_headers = {"Content-Type": "application/json", **self.auth()}
        sent_headers.update(headers or {})
        data: Any = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
        if len(data) > 1024 * 1024:
            # aiohttp warns (an error here) about large raw-bytes bodies.
            data = io.BytesIO(data)
        return await self.request(
            "POST", self.server.url + SUBMIT_PATH, headers=sent_headers, data=data, timeout=timeout
        )

    async def create(self, body: Any = VALID_BODY) -> str:
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
    """An Api over a fresh client session."""
    async with aiohttp.ClientSession() as session:
        yield Api(server, session)


@asynccontextmanager
async def running(**knobs: Any) -> AsyncIterator[Api]:
    """Start a fake (fast and seeded unless told otherwise) and an Api onto it."""
    knobs = {"time_scale": 0.001, "seed": 0, **knobs}
    async with FakeHailuoServer(**knobs) as server, open_api(server) as api:
        yield api
