"""The hand-written baselines: submit-then-poll loops on one aiohttp or httpx client.

They do what the simplest correct client does and nothing else: no retries, no limiter, no
decoding into objects. ``PollCadence(kind="eta")`` polls like hailuo_async's default policy
(first poll after ``first_delay``, then near the service's eta, else a 1.5x backoff from
``min_interval``, each wait jittered by 10 %); ``kind="fixed"`` polls every ``interval``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiohttp
import attrs

SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
RESULT_PATH = "/v3/async/task-result"
TERMINAL = frozenset({"TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"})

CadenceKind = Literal["eta", "fixed"]
Fetch = Callable[[str, str, bytes | None, dict[str, str] | None], Awaitable[tuple[int, bytes]]]


@attrs.frozen(kw_only=True)
class PollCadence:
    """When a bare loop polls (seconds, real time)."""

    kind: CadenceKind = "eta"
    first_delay: float = 0.0
    interval: float = 1.0
    min_interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    jitter: float = 0.1
    # "eta": the share of the answer's eta waited (hailuo_async's schedule without a history
    # to learn in, as every poll was placed before issue 16, waits 0.7 of it).
    eta_fraction: float = 1.0

    def first(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.interval
        return self._jittered(min(max(self.first_delay, self.min_interval), self.max_interval), rng)

    def next(self, task: dict[str, Any], unguided: int, rng: random.Random) -> tuple[float, int]:
        if self.kind == "fixed":
            return self.interval, unguided
        eta = task.get("eta")
        if isinstance(eta, (int, float)) and eta > self.min_interval:
            delay, unguided = float(eta) * self.eta_fraction, 0
        else:
            delay, unguided = self.min_interval * self.backoff**unguided, unguided + 1
        delay = min(max(delay, self.min_interval), self.max_interval)
        return self._jittered(delay, rng), unguided

    def _jittered(self, delay: float, rng: random.Random) -> float:
        return delay * rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else delay


@attrs.define
class BareRun:
    """What a bare run saw: when each task was seen ended, and how many requests it sent."""

    done_at: dict[str, float] = attrs.Factory(dict)
    submits: int = 0
    polls: int = 0
    errors: int = 0


async def run_jobs(
    fetch: Fetch,
    *,
    jobs: int,
    active: int,
    cadence: PollCadence,
    body: bytes,
    seed: int = 0,
) -> BareRun:
    """Submit ``jobs`` jobs, at most ``active`` unfinished at once, and poll each to its end."""
    run = BareRun()
    slots = asyncio.Semaphore(active)
    rng = random.Random(seed)

    async def one() -> None:
        async with slots:
            status, raw = await fetch("POST", SUBMIT_PATH, body, None)
            run.submits += 1
            if status != 200:
                run.errors += 1
                return
            task_id = json.loads(raw)["task_id"]
            params = {"task_id": task_id}
            unguided = 0
            await asyncio.sleep(cadence.first(rng))
            while True:
                status, raw = await fetch("GET", RESULT_PATH, None, params)
                run.polls += 1
                if status == 200:
                    task = json.loads(raw)["task"]
                    if task["status"] in TERMINAL:
                        run.done_at[task_id] = time.monotonic()
                        return
                else:
                    run.errors += 1
                    task = {}
                delay, unguided = cadence.next(task, unguided, rng)
                await asyncio.sleep(delay)

    await asyncio.gather(*(one() for _ in range(jobs)))
    return run


def aiohttp_fetcher(session: aiohttp.ClientSession, base_url: str, api_key: str) -> Fetch:
    """Requests through one aiohttp ClientSession."""
    auth = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    post_headers = {**auth, "Content-Type": "application/json"}

    async def fetch(
        method: str, path: str, body: bytes | None, params: dict[str, str] | None
    ) -> tuple[int, bytes]:
        headers = post_headers if body is not None else auth
        async with session.request(
            method, base_url + path, data=body, params=params, headers=headers
        ) as response:
            return response.status, await response.read()

    return fetch


def httpx_fetcher(client: Any, base_url: str, api_key: str) -> Fetch:
    """Requests through one httpx.AsyncClient."""
    auth = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    post_headers = {**auth, "Content-Type": "application/json"}

    async def fetch(
        method: str, path: str, body: bytes | None, params: dict[str, str] | None
    ) -> tuple[int, bytes]:
        headers = post_headers if body is not None else auth
        response = await client.request(
            method, base_url + path, content=body, params=params, headers=headers
        )
        return int(response.status_code), bytes(response.content)

    return fetch


async def run_bare(
    library: Literal["aiohttp", "httpx"],
    *,
    base_url: str,
    api_key: str,
    jobs: int,
    active: int,
    max_connections: int,
    cadence: PollCadence,
    body: bytes,
    seed: int = 0,
) -> BareRun:
    """One bare run on a fresh client of ``library`` with ``max_connections`` connections."""
    if library == "aiohttp":
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            fetch = aiohttp_fetcher(session, base_url, api_key)
            return await run_jobs(
                fetch, jobs=jobs, active=active, cadence=cadence, body=body, seed=seed
            )
    import httpx

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        fetch = httpx_fetcher(client, base_url, api_key)
        return await run_jobs(
            fetch, jobs=jobs, active=active, cadence=cadence, body=body, seed=seed
        )
