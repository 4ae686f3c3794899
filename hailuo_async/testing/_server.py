"""FakeHailuoServer: the API and the storage host, each on its own local port."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import hmac
import inspect
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import aiohttp
import attrs
from aiohttp import web

from .._client import HailuoClient
from .._limits import Limits
from .._polling import PollPolicy
from ._config import FakeHailuoConfig, StorageFaults
from ._faults import DROPPED, draw_fault, drop_connection, malformed_json, server_error
from ._stats import Stats, bump
from ._storage import VideoStore
from ._tasks import FAILED, SUCCEED, FakeTask, eta_factor, new_task_id, result_body, schedule_task
from ._validation import RequestError, SubmitRequest, parse_submit_body

__all__ = ["RESULT_PATH", "SUBMIT_PATH", "FakeHailuoServer"]

SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
RESULT_PATH = "/v3/async/task-result"

# An injected 429 asks the client to wait this long, in service seconds.
_INJECTED_RETRY_AFTER = (1.0, 5.0)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WEBHOOK_EVENT_TYPE = "ASYNC_TASK_RESULT"
# However squeezed the service's time, a loopback receiver gets this long (real seconds).
_MIN_WEBHOOK_TIMEOUT = 0.05


class FakeHailuoServer:
    """A local, faithful fake of the Hailuo-02 API, over real HTTP.

    Use it as ``async with FakeHailuoServer(time_scale=0.01) as server:`` and point a client
    at ``server.url`` with ``server.api_key``. Video URLs point at ``server.storage_url``, a
    second port standing in for the storage host. Everything the fake reports (eta, TTLs,
    Retry-After) is in real seconds; ``time_scale`` only stretches or squeezes the service.
    """

    def __init__(
        self,
        config: FakeHailuoConfig | None = None,
        /,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        access_log: bool = False,
        **knobs: Any,
    ) -> None:
        """Take a :class:`FakeHailuoConfig`, its fields as keywords, or both (keywords win)."""
        base = config if config is not None else FakeHailuoConfig()
        # attrs checks the names and values: an unknown knob is a TypeError naming it.
        config = attrs.evolve(base, **knobs) if knobs else base
        self._init(config, host=host, port=port, storage_port=storage_port, access_log=access_log)

    @classmethod
    def from_config(
        cls,
        config: FakeHailuoConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        access_log: bool = False,
    ) -> FakeHailuoServer:
        """A server built from a ready-made config (the same as ``FakeHailuoServer(config)``)."""
        return cls(config, host=host, port=port, storage_port=storage_port, access_log=access_log)

    def _init(
        self,
        config: FakeHailuoConfig,
        *,
        host: str,
        port: int,
        storage_port: int,
        access_log: bool,
    ) -> None:
        self.config = config
        self.seed: int = config.seed if config.seed is not None else secrets.randbits(63)
        """The seed in use: pass it back as `seed=` to replay a run."""
        self.stats = Stats()
        self._host = host
        self._port = port
        self._storage_port = storage_port
        self._access_log = access_log
        self._tasks: dict[str, FakeTask] = {}
        self._id_rng = random.Random(f"{self.seed}:ids")
        self._fault_rng = random.Random(f"{self.seed}:faults")
        self._eta_rng = random.Random(f"{self.seed}:eta")
        self._webhook_rng = random.Random(f"{self.seed}:webhooks")
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._webhook_session: aiohttp.ClientSession | None = None
        self._windows: dict[str, collections.deque[float]] = {}
        self._active: dict[str, list[float]] = {}
        self._terminal_timers: dict[str, asyncio.TimerHandle] = {}
        self._wall_offset = time.time() - time.monotonic()
        self._storage = VideoStore(
            stats=self.stats,
            faults=config.storage_faults,
            rng=random.Random(f"{self.seed}:storage"),
            ttl_real=config.video_url_ttl * config.time_scale,
            time_scale=config.time_scale,
            wall_offset=self._wall_offset,
            profile=config.profile,
        )
        self._runners: list[web.AppRunner] = []
        self._closing: asyncio.Event | None = None
        self._url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind both ports and start serving."""
        if self._runners:
            raise RuntimeError("FakeHailuoServer is already started")
        self._closing = asyncio.Event()
        api = web.Application(middlewares=[self._api_middleware])
        api.router.add_post(SUBMIT_PATH, self._submit)
        api.router.add_get(RESULT_PATH, self._result)
        storage = web.Application()
        storage.router.add_get("/videos/{name}", self._storage.handle)
        storage.router.add_get("/prod/{name}", self._storage.handle)  # the "captured" profile
        try:
            api_port = await self._serve(api, self._port)
            storage_port = await self._serve(storage, self._storage_port)
        except BaseException:
            await self.close()
            raise
        self._url = f"http://{self._url_host()}:{api_port}"
        self._storage.base_url = f"http://{self._url_host()}:{storage_port}"

    async def _serve(self, app: web.Application, port: int) -> int:
        # A short shutdown timeout: a test's `async with` should not wait on a hung client.
        logger = logging.getLogger("aiohttp.access") if self._access_log else None
        runner = web.AppRunner(app, access_log=logger, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self._host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        return bound

    async def close(self) -> None:
        """Stop serving and release both ports; safe to call twice."""
        if self._closing is not None:
            self._closing.set()
        for timer in self._terminal_timers.values():
            timer.cancel()
        self._terminal_timers.clear()
        await self._stop_webhooks()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> FakeHailuoServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- public inspection ----------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The bearer key the fake accepts."""
        return self.config.api_key

    @property
    def url(self) -> str:
        """The API base URL, without a trailing slash."""
        if self._url is None:
            raise RuntimeError("FakeHailuoServer is not started")
        return self._url

    @property
    def storage_faults(self) -> StorageFaults:
        """The storage host's faults in force; set it to change them while serving.

        Video URLs minted before the change keep what they were minted with (a
        ``wrong_content`` URL serves something else until it expires).
        """
        return self._storage.faults

    @storage_faults.setter
    def storage_faults(self, faults: StorageFaults) -> None:
        self._storage.faults = faults

    @property
    def storage_url(self) -> str:
        """The storage host's base URL (video URLs live under it)."""
        if not self._storage.base_url:
            raise RuntimeError("FakeHailuoServer is not started")
        return self._storage.base_url

    def client(self, **options: Any) -> HailuoClient:
        """A :class:`~hailuo_async.HailuoClient` for this fake, paced to its time scale.

        It has the fake's URL and key, a poll policy scaled by ``time_scale`` (a first poll
        after 10 service seconds comes after 0.1 s at ``time_scale=0.01``) and a rate-limit
        "minute" as long as the fake's. ``options`` are passed on to ``HailuoClient`` and win
        over these.
        """
        scale = self.config.time_scale
        paced: dict[str, Any] = {"base_url": self.url}
        if scale != 1.0:
            paced["poll_policy"] = PollPolicy().scaled(scale)
            limits = options.pop("limits", None) or Limits()
            if limits.rate_window == Limits().rate_window:
                limits = attrs.evolve(limits, rate_window=60.0 * scale)
            paced["limits"] = limits
        return HailuoClient(self.api_key, **{**paced, **options})

    @property
    def tasks(self) -> Mapping[str, FakeTask]:
        """Every task created, by id, lost ones included (a read-only live view)."""
        return MappingProxyType(self._tasks)

    @property
    def task_ids(self) -> list[str]:
        """The ids of every task created, in order."""
        return list(self.stats.task_ids)

    @property
    def lost_task_ids(self) -> list[str]:
        """Tasks created whose id the client never received."""
        return list(self.stats.lost_task_ids)

    def task_status(self, task_id: str) -> str:
        """The task's status now; KeyError for an unknown id."""
        return self._tasks[task_id].status_at(time.monotonic())

    def finished_at(self, task_id: str) -> float | None:
        """The `time.monotonic()` instant the task became terminal, None while it is not."""
        task = self._tasks[task_id]
        return task.finished_at if time.monotonic() >= task.finished_at else None

    # -- request plumbing -----------------------------------------------------------------

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except RequestError as error:
            if error.status in (400, 413):
                bump(self.stats.rejected_by_field, error.field)
            response = web.json_response(error.body(), status=error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
        except web.HTTPException as error:
            # Unknown paths and methods still answer in the gateway's JSON style.
            reason = error.reason.upper().replace(" ", "_")
            body = {"code": error.status, "reason": reason, "message": error.text or ""}
            response = web.json_response(body, status=error.status)
            if "Allow" in error.headers:
                response.headers["Allow"] = error.headers["Allow"]
        if response.status != DROPPED:
            bump(self.stats.responses_by_status, response.status)
        return response

    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def _authenticate(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.config.api_key.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise RequestError(
                401, "Authorization", "missing or invalid API key", "UNAUTHENTICATED"
            )
        return self.config.api_key

    def _too_many(self, cause: str, message: str, wait_real: float) -> web.Response:
        bump(self.stats.rate_limited, cause)
        body = {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": message, "metadata": {}}
        response = web.json_response(body, status=429)
        if self.config.retry_after:
            response.headers["Retry-After"] = self._retry_after_value(wait_real)
        return response

    def _retry_after_value(self, wait_real: float) -> str:
        if self.config.time_scale == 1.0:
            return str(max(1, math.ceil(wait_real)))
        # A scaled service waits fractions of a second; say so to the millisecond.
        return f"{max(0.001, math.ceil(wait_real * 1000.0) / 1000.0):.3f}"

    def _admit(self, key: str, now: float) -> web.Response | None:
        """Count the request against the key's sliding window, or answer 429."""
        limit = self.config.requests_per_minute
        if limit is None:
            return None
        window = 60.0 * self.config.time_scale
        admitted = self._windows.setdefault(key, collections.deque())
        while admitted and admitted[0] <= now - window:
            admitted.popleft()
        if len(admitted) >= limit:
            return self._too_many(
                "rate_window",
                f"rate limit exceeded: {limit} requests per minute",
                admitted[0] + window - now,
            )
        admitted.append(now)
        return None

    def _check_active_cap(self, key: str, now: float) -> web.Response | None:
        cap = self.config.max_active_tasks
        if cap is None:
            return None
        ends = self._active.setdefault(key, [])
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        if len(ends) >= cap:
            return self._too_many(
                "active_cap",
                f"too many active tasks: at most {cap} may be queued or processing",
                ends[0] - now,
            )
        return None

    async def _read_body(self, request: web.Request) -> bytes:
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

    async def _pause(self, seconds: float) -> None:
        # Wakes early when the server closes, so a slow fault never holds up shutdown.
        assert self._closing is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _inject_early(self, fault: str | None, request: web.Request) -> web.Response | None:
        """The faults that strike before the request has any effect."""
        if fault is None or fault not in ("reset", "server_error", "rate_limit"):
            return None
        bump(self.stats.faults_injected, fault)
        if fault == "reset":
            return drop_connection(request)
        if fault == "server_error":
            return server_error(self._fault_rng)
        wait = self._fault_rng.uniform(*_INJECTED_RETRY_AFTER) * self.config.time_scale
        return self._too_many("injected", "rate limit exceeded, please slow down", wait)

    # -- endpoints ------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        self.stats.submission_attempts += 1
        key = self._authenticate(request)
        refusal = self._admit(key, time.monotonic())
        if refusal is not None:
            return refusal
        submission = parse_submit_body(
            await self._read_body(request), max_image_bytes=self.config.max_image_bytes
        )
        refusal = self._check_active_cap(key, time.monotonic())
        if refusal is not None:
            return refusal
        fault = draw_fault(self._fault_rng, self.config.faults, submit=True)
        early = self._inject_early(fault, request)
        if early is not None:
            return early

        task = self._create_task(key, submission)
        if fault == "accepted_but_lost":
            bump(self.stats.faults_injected, fault)
            self.stats.lost_task_ids.append(task.task_id)
            return drop_connection(request)
        body = {"task_id": task.task_id}
        if fault == "malformed_json":
            bump(self.stats.faults_injected, fault)
            self.stats.lost_task_ids.append(task.task_id)
            return malformed_json(body, self._fault_rng)
        if fault == "slow":
            bump(self.stats.faults_injected, fault)
            await self._pause(self.config.faults.slow_seconds)
        if request.transport is None or request.transport.is_closing():
            # The client gave up (a timeout, say) after the job was accepted.
            self.stats.lost_task_ids.append(task.task_id)
        return web.json_response(body)

    async def _result(self, request: web.Request) -> web.StreamResponse:
        self.stats.polls_total += 1
        key = self._authenticate(request)
        refusal = self._admit(key, time.monotonic())
        if refusal is not None:
            return refusal
        task_id = request.query.get("task_id", "")
        if not task_id:
            raise RequestError(400, "task_id", "is required")
        task = self._tasks.get(task_id)
        if task is None or task.api_key != key:
            raise RequestError(404, "task_id", "task not found", "NOT_FOUND")
        bump(self.stats.polls_by_task, task_id)
        fault = draw_fault(self._fault_rng, self.config.faults, submit=False)
        early = self._inject_early(fault, request)
        if early is not None:
            return early

        now = time.monotonic()
        body = self._result_body(task, now)
        if fault == "malformed_json":
            bump(self.stats.faults_injected, fault)
            return malformed_json(body, self._fault_rng)
        if fault == "slow":
            bump(self.stats.faults_injected, fault)
            await self._pause(self.config.faults.slow_seconds)
        return web.json_response(body)

    # -- tasks ----------------------------------------------------------------------------

    def _create_task(self, key: str, submission: SubmitRequest) -> FakeTask:
        now = time.monotonic()
        index = len(self._tasks)
        task = schedule_task(
            task_id=new_task_id(self._id_rng),
            api_key=key,
            request=submission,
            created_at=now,
            config=self.config,
            rng=random.Random(f"{self.seed}:task:{index}"),
        )
        self._tasks[task.task_id] = task
        stats = self.stats
        stats.submissions_accepted += 1
        stats.task_ids.append(task.task_id)
        digest = hashlib.sha256(submission.canonical.encode("utf-8", "surrogatepass")).hexdigest()
        stats.task_ids_by_body.setdefault(digest, []).append(task.task_id)
        if self.config.max_active_tasks is not None:
            heapq.heappush(self._active.setdefault(key, []), task.finished_at)
        timer = asyncio.get_running_loop().call_later(
            max(0.0, task.finished_at - now), self._task_terminal, task.task_id
        )
        self._terminal_timers[task.task_id] = timer
        hook = _webhook_of(task)
        if hook is not None and hook[1] is not None:
            # test_mode: one simulated event at once, and none when the task really ends.
            self._send_webhook(hook[0], self._webhook_body(task, now, force_status=hook[1]))
        return task

    def _task_terminal(self, task_id: str) -> None:
        """Runs once per task, at the moment its schedule makes it SUCCEED or FAILED."""
        self._terminal_timers.pop(task_id, None)
        self.stats.tasks_terminal += 1
        task = self._tasks[task_id]
        hook = _webhook_of(task)
        if hook is not None and hook[1] is None:
            self._send_webhook(hook[0], self._webhook_body(task, time.monotonic()))

    # -- webhooks (API.md section 3) -----------------------------------------------------

    def _webhook_body(
        self, task: FakeTask, now: float, *, force_status: str | None = None
    ) -> bytes:
        """The ASYNC_TASK_RESULT event: the task-result body, its `extra` naming the webhook."""
        if force_status is None:
            payload = self._result_body(task, now)
        else:
            payload = self._result_body(task, max(now, task.finished_at))
            payload["task"].update(
                status=force_status,
                eta=0,
                progress_percent=100 if force_status == SUCCEED else 0,
                reason="" if force_status == SUCCEED else (task.reason or "test mode: simulated"),
            )
            payload["videos"] = (
                [self._storage.mint(task.task_id, now)] if force_status == SUCCEED else []
            )
        extra = task.request.extra or {}
        payload["extra"]["webhook"] = extra.get("webhook")
        event = {"event_type": WEBHOOK_EVENT_TYPE, "payload": payload}
        return json.dumps(event, ensure_ascii=False).encode("utf-8")

    def _send_webhook(self, url: str, body: bytes) -> None:
        """Deliver one event in the background: maybe dropped, maybe twice, with retries."""
        # Both draws every time, so a run's later draws do not depend on earlier outcomes.
        dropped = self._webhook_rng.random() < self.config.webhook_drop
        duplicated = self._webhook_rng.random() < self.config.webhook_duplicate
        if self._closing is None or self._closing.is_set():
            return
        if dropped:
            self.stats.webhooks_dropped += 1
            return
        copies = 1
        if duplicated:
            self.stats.webhooks_duplicated += 1
            copies = 2
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delivery = loop.create_task(self._deliver_webhook(url, body))
            self._webhook_tasks.add(delivery)
            delivery.add_done_callback(self._webhook_tasks.discard)

    async def _deliver_webhook(self, url: str, body: bytes) -> None:
        config = self.config
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession()
        session = self._webhook_session
        timeout = aiohttp.ClientTimeout(
            total=max(_MIN_WEBHOOK_TIMEOUT, config.webhook_timeout * config.time_scale)
        )
        wait = config.webhook_retry_delay * config.time_scale
        headers = {"Content-Type": "application/json", "User-Agent": "fake-hailuo-webhook/1"}
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
                return
        self.stats.webhooks_failed += 1

    async def _stop_webhooks(self) -> None:
        """Cancel the deliveries under way and close their session."""
        deliveries = list(self._webhook_tasks)
        for delivery in deliveries:
            delivery.cancel()
        if deliveries:
            await asyncio.gather(*deliveries, return_exceptions=True)
        self._webhook_tasks.clear()
        session, self._webhook_session = self._webhook_session, None
        if session is not None:
            await session.close()

    def _result_body(self, task: FakeTask, now: float) -> dict[str, Any]:
        succeeded = now >= task.finished_at and not task.fails
        return result_body(
            task,
            now,
            eta_noise=eta_factor(self._eta_rng, self.config.eta_error),
            forecasts=self.config.forecasts,
            wall_offset=self._wall_offset,
            time_scale=self.config.time_scale,
            videos=[self._storage.mint(task.task_id, now)] if succeeded else [],
            profile=self.config.profile,
        )

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"<FakeHailuoServer {where} tasks={len(self._tasks)} seed={self.seed}>"


def _signature() -> inspect.Signature:
    """FakeHailuoServer's signature with each knob of the config spelt out, for help() and IDEs."""
    own = inspect.signature(FakeHailuoServer.__init__).parameters.values()
    fixed = [parameter for parameter in own if parameter.kind is not parameter.VAR_KEYWORD]
    knobs = [
        inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.type
        )
        for field in attrs.fields(FakeHailuoConfig)
    ]
    return inspect.Signature([*fixed[1:], *knobs], return_annotation=None)


# The constructor takes the config's fields as **knobs; say which they are.
setattr(FakeHailuoServer, "__signature__", _signature())  # noqa: B010


def _webhook_of(task: FakeTask) -> tuple[str, str | None] | None:
    """The task's webhook URL and, in test mode, the status its simulated event reports."""
    webhook = (task.request.extra or {}).get("webhook")
    if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
        return None
    test_mode = webhook.get("test_mode")
    if isinstance(test_mode, dict) and test_mode.get("enabled") is True:
        status = test_mode.get("return_task_status")
        return webhook["url"], status if status in (SUCCEED, FAILED) else SUCCEED
    return webhook["url"], None
