"""What both dialects share: tasks and their timing, limits, faults, storage, webhook delivery.

A dialect (``_gateway``, ``_minimax``) owns its paths, its wire shapes and its request rules;
it calls into :class:`FakeService` for everything that is the same whichever API is spoken,
so a limit, a fault or a counter behaves alike in both.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import hmac
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ._config import FakeHailuoConfig
from ._faults import DROPPED, draw_fault, drop_connection, malformed_json, server_error
from ._stats import Stats, bump
from ._storage import VideoStore
from ._tasks import FakeTask, schedule_task
from ._validation import RequestError, SubmitRequest

__all__ = ["Dialect", "FakeService", "RateLimited"]

# An injected rate-limit answer asks the client to wait this long, in service seconds.
_INJECTED_RETRY_AFTER = (1.0, 5.0)
# However squeezed the service's time, a loopback receiver gets this long (real seconds).
_MIN_WEBHOOK_TIMEOUT = 0.05

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RateLimited(Exception):
    """A request refused by a limit: the dialect's middleware words the answer."""

    def __init__(self, cause: str, message: str, wait: float) -> None:
        super().__init__(message)
        self.cause = cause
        """Its key in ``Stats.rate_limited``: "rate_window", "active_cap", "injected", "burst"."""
        self.message = message
        self.wait = wait
        """Real seconds until a retry could pass."""


class Dialect(Protocol):
    """One API's paths and wire shapes over the shared machinery."""

    def routes(self) -> list[web.RouteDef]:
        """The API's endpoints."""

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turns refusals (``RequestError``, ``RateLimited``, unknown paths) into this API's
        error answers."""

    def new_task_id(self, rng: random.Random) -> str:
        """A task id in this API's style, drawn from ``rng``."""

    def status_of(self, task: FakeTask, now: float) -> str:
        """The task's status at ``now``, as this API words it."""

    def task_created(self, task: FakeTask, now: float) -> None:
        """A task was accepted (start its push deliveries, if it asked for them)."""

    def task_ended(self, task: FakeTask) -> None:
        """The task's schedule reached its end (SUCCEED or FAILED)."""


class FakeService:
    """The fake's state and the steps every endpoint of either dialect is made of."""

    def __init__(self, config: FakeHailuoConfig, dialect: Callable[[FakeService], Dialect]) -> None:
        self.config = config
        self.seed: int = config.seed if config.seed is not None else secrets.randbits(63)
        self.stats = Stats()
        self.tasks: dict[str, FakeTask] = {}
        self.id_rng = random.Random(f"{self.seed}:ids")
        self.fault_rng = random.Random(f"{self.seed}:faults")
        self.eta_rng = random.Random(f"{self.seed}:eta")
        self.webhook_rng = random.Random(f"{self.seed}:webhooks")
        self.webhook_tasks: set[asyncio.Task[None]] = set()
        self.webhook_session: aiohttp.ClientSession | None = None
        self._windows: dict[str, collections.deque[float]] = {}
        self._active: dict[str, list[float]] = {}
        self._terminal_timers: dict[str, asyncio.TimerHandle] = {}
        self._burst_until = 0.0
        self.wall_offset = time.time() - time.monotonic()
        self.started_at = time.monotonic()
        self.storage = VideoStore(
            stats=self.stats,
            faults=config.storage_faults,
            rng=random.Random(f"{self.seed}:storage"),
            ttl_real=config.url_ttl * config.time_scale,
            time_scale=config.time_scale,
            wall_offset=self.wall_offset,
            profile=config.profile,
        )
        self.closing: asyncio.Event | None = None
        self.dialect = dialect(self)

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Start the clocks: called as the server starts serving."""
        self.closing = asyncio.Event()
        self.started_at = time.monotonic()

    async def close(self) -> None:
        """Cancel the timers and the webhook deliveries; close their session."""
        if self.closing is not None:
            self.closing.set()
        for timer in self._terminal_timers.values():
            timer.cancel()
        self._terminal_timers.clear()
        deliveries = list(self.webhook_tasks)
        for delivery in deliveries:
            delivery.cancel()
        if deliveries:
            await asyncio.gather(*deliveries, return_exceptions=True)
        self.webhook_tasks.clear()
        session, self.webhook_session = self.webhook_session, None
        if session is not None:
            await session.close()

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count every API request by the service second it came in, and every answer."""
        second = int((time.monotonic() - self.started_at) / self.config.time_scale)
        bump(self.stats.requests_by_second, second)
        response = await handler(request)
        if response.status != DROPPED:
            bump(self.stats.responses_by_status, response.status)
        return response

    # -- the steps of a request -----------------------------------------------------------

    def authenticate(self, request: web.Request) -> str:
        """The account's key, or a RequestError 401 if the bearer key is missing or wrong."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.config.api_key.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise RequestError(
                401, "Authorization", "missing or invalid API key", "UNAUTHENTICATED"
            )
        return self.config.api_key

    def admit(self, request: web.Request) -> str:
        """Authenticate the request and count it against its key's sliding window.

        Returns the key; raises RequestError (401) or RateLimited. During a burst of injected
        rate-limit answers every request is refused, uncounted.
        """
        key = self.authenticate(request)
        now = time.monotonic()
        if now < self._burst_until:
            raise self._refuse(
                "burst", "rate limit exceeded, please slow down", self._burst_until - now
            )
        limit = self.config.requests_per_minute
        if limit is None:
            return key
        window = 60.0 * self.config.time_scale
        admitted = self._windows.setdefault(key, collections.deque())
        while admitted and admitted[0] <= now - window:
            admitted.popleft()
        if len(admitted) >= limit:
            raise self._refuse(
                "rate_window",
                f"rate limit exceeded: {limit} requests per minute",
                admitted[0] + window - now,
            )
        admitted.append(now)
        self.stats.busiest_window = max(self.stats.busiest_window, len(admitted))
        return key

    def check_active_cap(self, key: str) -> None:
        """Refuse (RateLimited) a submission past the cap on queued plus processing tasks."""
        cap = self.config.max_active_tasks
        if cap is None:
            return
        now = time.monotonic()
        ends = self._active.setdefault(key, [])
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        if len(ends) >= cap:
            raise self._refuse(
                "active_cap",
                f"too many active tasks: at most {cap} may be queued or processing",
                ends[0] - now,
            )

    def _refuse(self, cause: str, message: str, wait: float) -> RateLimited:
        bump(self.stats.rate_limited, cause)
        return RateLimited(cause, message, wait)

    async def read_body(self, request: web.Request) -> bytes:
        """The whole JSON body, or a RequestError (wrong Content-Type, too large)."""
        if request.content_type != "application/json":
            raise RequestError(400, "Content-Type", "must be application/json")
        limit = self.config.max_body_bytes
        too_large = RequestError(413, "body", f"larger than {limit} bytes", "PAYLOAD_TOO_LARGE")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def required(self, request: web.Request, name: str) -> str:
        """A query parameter, or a RequestError (400) naming it."""
        value = request.query.get(name, "")
        if not value:
            raise RequestError(400, name, "is required")
        return value

    def polled_task(self, request: web.Request, key: str, *, unknown: RequestError) -> FakeTask:
        """The task a poll names, counted in ``polls_by_task``; ``unknown`` if there is none
        (or another account made it)."""
        task_id = self.required(request, "task_id")
        task = self.task_of(key, task_id)
        if task is None:
            raise unknown
        bump(self.stats.polls_by_task, task_id)
        return task

    def strike(
        self, request: web.Request, *, submit: bool
    ) -> tuple[str | None, web.StreamResponse | None]:
        """Draw at most one fault for a request that would otherwise succeed; with it, the
        answer to send at once when the fault strikes before the request has any effect."""
        fault = draw_fault(self.fault_rng, self.config.faults, submit=submit)
        return fault, self._inject_early(fault, request)

    def _inject_early(self, fault: str | None, request: web.Request) -> web.StreamResponse | None:
        """A reset or a 5xx; an injected rate limit is raised as RateLimited."""
        if fault is None or fault not in ("reset", "server_error", "rate_limit"):
            return None
        bump(self.stats.faults_injected, fault)
        if fault == "reset":
            return drop_connection(request)
        if fault == "server_error":
            return server_error(self.fault_rng)
        scale = self.config.time_scale
        wait = self.fault_rng.uniform(*_INJECTED_RETRY_AFTER) * scale
        burst = self.config.faults.rate_limit_burst * scale
        if burst > 0:
            self._burst_until = max(self._burst_until, time.monotonic() + burst)
            wait = max(wait, burst)
        raise self._refuse("injected", "rate limit exceeded, please slow down", wait)

    async def answer_created(
        self,
        request: web.Request,
        task: FakeTask,
        fault: str | None,
        body: dict[str, Any],
    ) -> web.StreamResponse:
        """Answer a submission that made ``task`` with ``body``, unless a fault loses it."""
        stats = self.stats
        if fault == "accepted_but_lost":
            bump(stats.faults_injected, fault)
            stats.lost_task_ids.append(task.task_id)
            return drop_connection(request)
        if fault == "malformed_json":
            bump(stats.faults_injected, fault)
            stats.lost_task_ids.append(task.task_id)
            return malformed_json(body, self.fault_rng)
        if fault == "slow":
            bump(stats.faults_injected, fault)
            await self.pause(self.config.faults.slow_seconds)
        if request.transport is None or request.transport.is_closing():
            # The client gave up (a timeout, say) after the job was accepted.
            stats.lost_task_ids.append(task.task_id)
        return web.json_response(body)

    async def answer(self, fault: str | None, body: dict[str, Any]) -> web.StreamResponse:
        """Answer a query with ``body``, truncated or held back if the fault says so."""
        if fault == "malformed_json":
            bump(self.stats.faults_injected, fault)
            return malformed_json(body, self.fault_rng)
        if fault == "slow":
            bump(self.stats.faults_injected, fault)
            await self.pause(self.config.faults.slow_seconds)
        return web.json_response(body)

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake early when the server closes, so a slow fault never holds it up."""
        assert self.closing is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    def task_of(self, key: str, task_id: str) -> FakeTask | None:
        """The task if it exists and this key's account made it."""
        task = self.tasks.get(task_id)
        return task if task is not None and task.api_key == key else None

    # -- tasks ----------------------------------------------------------------------------

    def create_task(
        self,
        key: str,
        submission: SubmitRequest,
        *,
        fail_reason: str | None = None,
        task_id: str | None = None,
    ) -> FakeTask:
        """Accept a submission: draw the task's schedule and count a paid job.

        ``task_id`` names a task taken before this fake started (see ``add_task``): it is
        not counted as a submission.
        """
        now = time.monotonic()
        index = len(self.tasks)
        task = schedule_task(
            task_id=task_id if task_id is not None else self.dialect.new_task_id(self.id_rng),
            api_key=key,
            request=submission,
            created_at=now,
            config=self.config,
            rng=random.Random(f"{self.seed}:task:{index}"),
            fail_reason=fail_reason,
        )
        self.tasks[task.task_id] = task
        stats = self.stats
        if task_id is None:
            stats.submissions_accepted += 1
            stats.task_ids.append(task.task_id)
            digest = hashlib.sha256(
                submission.canonical.encode("utf-8", "surrogatepass")
            ).hexdigest()
            stats.task_ids_by_body.setdefault(digest, []).append(task.task_id)
        if self.config.max_active_tasks is not None:
            heapq.heappush(self._active.setdefault(key, []), task.finished_at)
        timer = asyncio.get_running_loop().call_later(
            max(0.0, task.finished_at - now), self._task_terminal, task.task_id
        )
        self._terminal_timers[task.task_id] = timer
        self.dialect.task_created(task, now)
        return task

    def _task_terminal(self, task_id: str) -> None:
        """Runs once per task, at the moment its schedule makes it SUCCEED or FAILED."""
        self._terminal_timers.pop(task_id, None)
        self.stats.tasks_terminal += 1
        self.dialect.task_ended(self.tasks[task_id])

    # -- webhooks -------------------------------------------------------------------------

    def spawn(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Run a delivery in the background until it ends or the server closes."""
        task = asyncio.get_running_loop().create_task(delivery)
        self.webhook_tasks.add(task)
        task.add_done_callback(self.webhook_tasks.discard)

    def webhook_copies(self) -> int:
        """How many times to deliver the next event: 0 (dropped, or closing), 1 or 2."""
        # Both draws every time, so a run's later draws do not depend on earlier outcomes.
        dropped = self.webhook_rng.random() < self.config.webhook_drop
        duplicated = self.webhook_rng.random() < self.config.webhook_duplicate
        if self.closing is None or self.closing.is_set():
            return 0
        if dropped:
            self.stats.webhooks_dropped += 1
            return 0
        if duplicated:
            self.stats.webhooks_duplicated += 1
            return 2
        return 1

    def http(self) -> aiohttp.ClientSession:
        """The session webhook deliveries share (made on first use, closed with the server)."""
        if self.webhook_session is None:
            self.webhook_session = aiohttp.ClientSession()
        return self.webhook_session

    def scaled_timeout(self, service_seconds: float, floor: float) -> aiohttp.ClientTimeout:
        """A timeout of ``service_seconds`` on the fake's clock, never under ``floor`` real s."""
        return aiohttp.ClientTimeout(total=max(floor, service_seconds * self.config.time_scale))

    async def deliver_webhook(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        """POST one event, retrying as the gateway does until a 2xx; True once delivered."""
        config = self.config
        session = self.http()
        timeout = self.scaled_timeout(config.webhook_timeout, _MIN_WEBHOOK_TIMEOUT)
        wait = config.webhook_retry_delay * config.time_scale
        for attempt in range(config.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(wait)
                wait *= 2
            self.stats.webhook_attempts += 1
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as reply:
                    delivered = 200 <= reply.status < 300
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                delivered = False
            if delivered:
                self.stats.webhooks_sent += 1
                return True
        self.stats.webhooks_failed += 1
        return False
