"""FakeHailuoServer: the API (in the gateway's or MiniMax's dialect) and the storage host."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import attrs
from aiohttp import web

from .._client import HailuoClient
from .._limits import Limits
from .._polling import PollPolicy
from ._config import FakeHailuoConfig, Provider, StorageFaults
from ._gateway import RESULT_PATH, SUBMIT_PATH, GatewayDialect
from ._minimax import MiniMaxDialect
from ._service import Dialect, FakeService
from ._stats import Stats
from ._tasks import FakeTask

__all__ = ["RESULT_PATH", "SUBMIT_PATH", "FakeHailuoServer"]

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
        self._service = FakeService(config, _DIALECTS[config.provider])
        self.seed: int = self._service.seed
        """The seed in use: pass it back as `seed=` to replay a run."""
        self.stats: Stats = self._service.stats
        self._storage = self._service.storage
        self._host = host
        self._port = port
        self._storage_port = storage_port
        self._access_log = access_log
        self._runners: list[web.AppRunner] = []
        self._url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind both ports and start serving."""
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

    def client(self, **options: Any) -> HailuoClient:
        """A :class:`~hailuo_async.HailuoClient` for this fake, paced to its time scale.

        It has the fake's URL, key and provider, a poll policy scaled by ``time_scale`` (a
        first poll after 10 service seconds comes after 0.1 s at ``time_scale=0.01``) and a
        rate-limit "minute" as long as the fake's. ``options`` are passed on to
        ``HailuoClient`` and win over these.
        """
        scale = self.config.time_scale
        paced: dict[str, Any] = {"base_url": self.url}
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
