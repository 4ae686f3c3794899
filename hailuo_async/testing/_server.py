"""FakeHailuoServer: the API (in the gateway's or MiniMax's dialect) and the storage host."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import attrs
from aiohttp import web
from yarl import URL

from .._client import HailuoClient
from .._limits import Limits
from .._polling import PollPolicy
from ._config import FakeHailuoConfig, Provider, StorageFaults
from ._gateway import RESULT_PATH, SUBMIT_PATH, GatewayDialect
from ._in_process import InProcessTransport, ServerEnd
from ._minimax import MiniMaxDialect
from ._service import Dialect, FakeService
from ._stats import Stats
from ._tasks import FakeTask
from ._validation import SubmitRequest

__all__ = [
    "IN_PROCESS_STORAGE_URL",
    "IN_PROCESS_URL",
    "RESULT_PATH",
    "SUBMIT_PATH",
    "FakeHailuoServer",
]

# Names reserved never to resolve (RFC 2606): a client without the fake's transport fails to
# connect instead of reaching anything. https, though nothing is encrypted: nothing leaves
# the process, and the client sends its key over plain http to loopback hosts only.
IN_PROCESS_URL = "https://api.fake-hailuo.invalid"
"""The fake's API URL when it serves in-process."""
IN_PROCESS_STORAGE_URL = "https://storage.fake-hailuo.invalid"
"""The fake's storage host when it serves in-process."""

_DIALECTS: dict[Provider, Callable[[FakeService], Dialect]] = {
    "gateway": GatewayDialect,
    "minimax": MiniMaxDialect,
}


class FakeHailuoServer:
    """A local, faithful fake of the Hailuo-02 API, over real HTTP.

    Use it as ``async with FakeHailuoServer(time_scale=0.01) as server:`` and point a client
    at ``server.url`` with ``server.api_key``. Video URLs point at ``server.storage_url``, a
    second port standing in for the storage host. Everything the fake reports (eta, TTLs,
    Retry-After) is in real seconds; ``time_scale`` only stretches or squeezes the service.
    ``provider="minimax"`` makes it speak MiniMax's own v1 video API instead of the
    gateway's: the same tasks, limits, faults and counters, in MiniMax's paths and answers.

    ``in_process=True`` binds no port: the fake answers only through :meth:`transport`
    (which :meth:`client` passes on), in memory, at :data:`IN_PROCESS_URL`. The same
    HTTP is spoken either way, faults included; what needs a socket (another process, a
    client other than aiohttp, a port that refuses) needs a fake on ports.
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
        in_process: bool = False,
        **knobs: Any,
    ) -> None:
        """Take a :class:`FakeHailuoConfig`, its fields as keywords, or both (keywords win)."""
        base = config if config is not None else FakeHailuoConfig()
        # attrs checks the names and values: an unknown knob is a TypeError naming it.
        self.config = attrs.evolve(base, **knobs) if knobs else base
        self._service = FakeService(self.config, _DIALECTS[self.config.provider])
        self.seed: int = self._service.seed
        """The seed in use: pass it back as `seed=` to replay a run."""
        self.stats: Stats = self._service.stats
        self._storage = self._service.storage
        self._host = host
        self._port = port
        self._storage_port = storage_port
        self._access_log = access_log
        self._in_process = in_process
        self._runners: list[web.AppRunner] = []
        self._url: str | None = None

    @classmethod
    def from_config(cls, config: FakeHailuoConfig, **serving: Any) -> FakeHailuoServer:
        """A server built from a ready-made config (the same as ``FakeHailuoServer(config)``).

        ``serving`` takes the constructor's other keywords: ``host``, ``port``,
        ``storage_port``, ``access_log`` and ``in_process``.
        """
        return cls(config, **serving)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving: bind both ports, or (in-process) only get ready to answer."""
        if self._runners:
            raise RuntimeError("FakeHailuoServer is already started")
        service = self._service
        service.open()
        api = web.Application(middlewares=[service.count_requests, service.dialect.middleware])
        api.add_routes(service.dialect.routes())
        storage = web.Application()
        storage.router.add_get("/videos/{name}", self._storage.handle)
        storage.router.add_get("/prod/{name}", self._storage.handle)  # the "captured" profile
        try:
            api_runner = await self._ready(api)
            storage_runner = await self._ready(storage)
            if self._in_process:
                self._url, self._storage.base_url = IN_PROCESS_URL, IN_PROCESS_STORAGE_URL
            else:
                api_port = await self._bind(api_runner, self._port)
                storage_port = await self._bind(storage_runner, self._storage_port)
                self._url = f"http://{self._url_host()}:{api_port}"
                self._storage.base_url = f"http://{self._url_host()}:{storage_port}"
        except BaseException:
            await self.close()
            raise

    async def _ready(self, app: web.Application) -> web.AppRunner:
        # A short shutdown timeout: a test's `async with` should not wait on a hung client.
        logger = logging.getLogger("aiohttp.access") if self._access_log else None
        runner = web.AppRunner(app, access_log=logger, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _bind(self, runner: web.AppRunner, port: int) -> int:
        site = web.TCPSite(runner, self._host, port)
        await site.start()
        bound: int = runner.addresses[-1][1]
        return bound

    async def close(self) -> None:
        """Stop serving and release both ports; safe to call twice."""
        await self._service.close()
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
    def provider(self) -> Provider:
        """The dialect spoken: "gateway" or "minimax"."""
        return self.config.provider

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

    @property
    def in_process(self) -> bool:
        """True when the fake binds no port and answers only through :meth:`transport`."""
        return self._in_process

    def transport(self) -> InProcessTransport:
        """A transport that reaches this fake's API and storage host in memory, no socket.

        Give it to a client (``HailuoClient(..., transport=server.transport())``); it
        refuses every other host, and every connection once the fake is closed.
        """
        if len(self._runners) != 2:
            raise RuntimeError("FakeHailuoServer is not started")
        api, storage = self._runners
        return InProcessTransport(
            {
                _host_and_port(self.url): _server_end(api),
                _host_and_port(self.storage_url): _server_end(storage),
            }
        )

    def client(self, **options: Any) -> HailuoClient:
        """A :class:`~hailuo_async.HailuoClient` for this fake, paced to its time scale.

        It has the fake's URL, key and provider, a poll policy scaled by ``time_scale`` (a
        first poll after 10 service seconds comes after 0.1 s at ``time_scale=0.01``), a
        rate-limit "minute" as long as the fake's and, in-process, the fake's
        :meth:`transport`. ``options`` are passed on to ``HailuoClient`` and win over these.
        """
        scale = self.config.time_scale
        paced: dict[str, Any] = {"base_url": self.url}
        if self._in_process:
            paced["transport"] = self.transport()
        if self.provider != "gateway":
            paced["provider"] = self.provider
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
        return MappingProxyType(self._service.tasks)

    @property
    def task_ids(self) -> list[str]:
        """The ids of every task created, in order."""
        return list(self.stats.task_ids)

    @property
    def lost_task_ids(self) -> list[str]:
        """Tasks created whose id the client never received."""
        return list(self.stats.lost_task_ids)

    def task_status(self, task_id: str) -> str:
        """The task's status now, in the dialect's words; KeyError for an unknown id."""
        return self._service.dialect.status_of(self._service.tasks[task_id], time.monotonic())

    def finished_at(self, task_id: str) -> float | None:
        """The `time.monotonic()` instant the task became terminal, None while it is not."""
        task = self._service.tasks[task_id]
        return task.finished_at if time.monotonic() >= task.finished_at else None

    def add_task(
        self, task_id: str, prompt: str = "a task taken before this fake started"
    ) -> FakeTask:
        """Know ``task_id`` as a task of this fake's key, submitted now and running on its
        schedule, as the real service knows the tasks an earlier process submitted.

        For tests that resume a journal whose jobs a service of an earlier run took: the
        task is not counted as a submission (``stats`` sees no POST for it). It has no
        webhook. KeyError if the fake already knows the id; call it once started.
        """
        if task_id in self._service.tasks:
            raise KeyError(f"the fake already knows task {task_id!r}")
        submission = SubmitRequest(
            prompt=prompt,
            duration=6,
            resolution="768P",
            enable_prompt_expansion=True,
            fast_pretreatment=False,
            image=None,
            end_image=None,
            extra=None,
            canonical=prompt,
        )
        return self._service.create_task(self.api_key, submission, task_id=task_id)

    def expire_urls(self) -> int:
        """Expire every video URL handed out so far (they answer 403); return how many.

        A fresh poll (gateway) or retrieve (MiniMax) gives a live URL again.
        """
        return self._storage.expire_all()

    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def __repr__(self) -> str:
        where = self._url or "not started"
        tasks = len(self._service.tasks)
        return f"<FakeHailuoServer {where} tasks={tasks} seed={self.seed} {self.provider}>"


def _host_and_port(url: str) -> tuple[str, int]:
    parsed = URL(url)
    return parsed.host or "", parsed.port or 0


def _server_end(runner: web.AppRunner) -> ServerEnd:
    """The server's end of a new in-process connection, or None once the runner is cleaned up."""

    def accept() -> asyncio.Protocol | None:
        server = runner.server
        return server() if server is not None else None

    return accept


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
