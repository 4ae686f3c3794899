"""Options every command shares, and the client they make: real service or simulated one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import click

from .._client import HailuoClient
from .._coordination import Coordination
from .._dsn import mask_dsn
from .._limits import Limits
from .._polling import PollPolicy
from .._retry import RetryPolicy
from ..providers import PROVIDER_ENV, PROVIDERS, provider_for
from ..providers._protocol import Provider
from ..testing import FakeHailuoServer
from ._errors import InputError

# Seconds a command tries a service that has not answered it yet (unreachable_after).
UNREACHABLE_AFTER = 2.0

__all__ = [
    "SIMULATED_TIME_SCALE",
    "MissingKeyError",
    "Service",
    "Settings",
    "common_options",
    "connect",
    "setting_value",
    "settings_from",
    "where",
]

#: Real seconds per service second of the simulated service: Hailuo's 30-180 s jobs take
#: 0.6-3.6 s, so a dozen jobs finish in a few seconds.
SIMULATED_TIME_SCALE = 0.02

_F = TypeVar("_F", bound=Callable[..., Any])
_SETTINGS_KEY = "hailuo.settings"


class MissingKeyError(InputError):
    """No API key was given, and the run is not simulated (exit 2, nothing sent)."""

    def __init__(self) -> None:
        super().__init__(
            "no API key: set it with `export HAILUO_API_KEY=...` (or --api-key), "
            "or add --simulate to try everything against a local fake service"
        )


@attrs.frozen(kw_only=True)
class Settings:
    """The shared options of one command line."""

    simulate: bool = False
    debug: bool = False
    provider: str = "gateway"
    api_key: str | None = None
    base_url: str | None = None
    time_scale: float | None = None
    simulate_failure_rate: float = 0.0
    max_retries: int | None = None
    allow_insecure: bool = False

    @property
    def dialect(self) -> Provider:
        """The provider the command talks to (its service, or the simulated one's dialect)."""
        return provider_for(self.provider)

    @property
    def effective_time_scale(self) -> float:
        """Real seconds per service second: the simulated default, 1 for a real service."""
        if self.time_scale is not None:
            return self.time_scale
        return SIMULATED_TIME_SCALE if self.simulate else 1.0


def _store(ctx: click.Context, param: click.Parameter, value: object) -> object:
    assert param.name is not None
    ctx.meta.setdefault(_SETTINGS_KEY, {})[param.name] = value
    return value


_COMMON_OPTIONS = (
    click.option(
        "--simulate",
        is_flag=True,
        envvar="HAILUO_SIMULATE",
        expose_value=False,
        callback=_store,
        help="Run against an in-process fake service (no key, no cost, real MP4 files; every "
        "video is the same short sample clip). Env HAILUO_SIMULATE=1.",
    ),
    click.option(
        "--provider",
        type=click.Choice(sorted(PROVIDERS)),
        metavar="NAME",
        envvar=PROVIDER_ENV,
        expose_value=False,
        callback=_store,
        help="The service's dialect: gateway (the default: the v3 gateway API) or minimax "
        f"(MiniMax's own API); --simulate fakes the same one. Env {PROVIDER_ENV}.",
    ),
    click.option(
        "--api-key",
        envvar="HAILUO_API_KEY",
        metavar="KEY",
        expose_value=False,
        callback=_store,
        help="API key (env HAILUO_API_KEY, the better place for it).",
    ),
    click.option(
        "--base-url",
        envvar="HAILUO_BASE_URL",
        metavar="URL",
        expose_value=False,
        callback=_store,
        help="API base URL (default the provider's public host; env HAILUO_BASE_URL).",
    ),
    click.option(
        "--time-scale",
        type=click.FloatRange(min=0.0, min_open=True),
        envvar="HAILUO_TIME_SCALE",
        metavar="X",
        expose_value=False,
        callback=_store,
        help="Real seconds per service second, for a time-scaled fake service (for instance "
        f"`hailuo fake-server --time-scale X`); --simulate uses {SIMULATED_TIME_SCALE:g}. "
        "Env HAILUO_TIME_SCALE.",
    ),
    click.option(
        "--simulate-failure-rate",
        type=click.FloatRange(0.0, 1.0),
        default=0.0,
        metavar="P",
        expose_value=False,
        callback=_store,
        help="With --simulate: the share of jobs the fake service fails.",
    ),
    click.option(
        "--max-retries",
        type=click.IntRange(min=0),
        envvar="HAILUO_MAX_RETRIES",
        metavar="N",
        expose_value=False,
        callback=_store,
        help="Tries after a failed request that may be retried (default 5; "
        "env HAILUO_MAX_RETRIES).",
    ),
    click.option(
        "--allow-insecure",
        is_flag=True,
        envvar="HAILUO_ALLOW_INSECURE",
        expose_value=False,
        callback=_store,
        help="Allow a plain-http --base-url on another host (sends the key unencrypted; "
        "env HAILUO_ALLOW_INSECURE=1).",
    ),
    click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_store,
        help="Show full tracebacks and the library's debug log.",
    ),
)


def common_options(command: _F) -> _F:
    """Add the shared options (--simulate, --api-key, --debug ...) to a command."""
    for option in reversed(_COMMON_OPTIONS):
        command = option(command)
    return command


def setting_value(ctx: click.Context, name: str) -> object:
    """The value of one shared option (``--base-url`` ...) as given on this command line."""
    values: dict[str, Any] = ctx.meta.get(_SETTINGS_KEY, {})
    return values.get(name)


def settings_from(ctx: click.Context) -> Settings:
    """The shared options of the command being run."""
    values: dict[str, Any] = ctx.meta.get(_SETTINGS_KEY, {})
    return Settings(
        simulate=bool(values.get("simulate")),
        debug=bool(values.get("debug")),
        provider=values.get("provider") or "gateway",
        api_key=values.get("api_key") or None,
        base_url=values.get("base_url") or None,
        time_scale=values.get("time_scale"),
        simulate_failure_rate=values.get("simulate_failure_rate") or 0.0,
        max_retries=values.get("max_retries"),
        allow_insecure=bool(values.get("allow_insecure")),
    )


@attrs.frozen
class Service:
    """A client ready to use, and what it talks to."""

    client: HailuoClient
    simulated: bool
    time_scale: float

    @property
    def description(self) -> str:
        """A few words on the service, for headers."""
        provider = self.client.provider.name
        if self.simulated:
            return f"simulated {provider} service (time x{self.time_scale:g})"
        coordination = self.client.coordination
        place = f"{self.client.base_url} ({provider})"
        if coordination is None:
            return place
        return f"{place}, limits shared through {where(coordination)}"


def check_key(settings: Settings) -> None:
    """Raise MissingKeyError before anything starts when a real run has no key."""
    if not settings.simulate and not settings.api_key:
        raise MissingKeyError


@asynccontextmanager
async def connect(
    settings: Settings,
    *,
    requests_per_minute: float | None = None,
    max_active_jobs: int | None = None,
    coordination: Coordination | None = None,
) -> AsyncIterator[Service]:
    """A client for the real service, or for a fake one started here with ``--simulate``.

    With ``coordination`` (never with ``--simulate``), the limits are the account's, shared
    with every process coordinated through that database; a database that cannot be used
    is an InputError (exit 2) raised before any request.
    """
    check_key(settings)
    scale = settings.effective_time_scale
    options: dict[str, Any] = {}
    if settings.max_retries is not None:
        options["max_retries"] = settings.max_retries
    limits = Limits(requests_per_minute=requests_per_minute, max_active_jobs=max_active_jobs)
    if settings.simulate:
        fake = FakeHailuoServer(
            time_scale=scale,
            failure_rate=settings.simulate_failure_rate,
            provider=settings.dialect.name,
        )
        # fake.client() paces the polls and the rate window to the fake's time scale.
        async with fake, fake.client(limits=limits, **options) as client:
            yield Service(client=client, simulated=True, time_scale=scale)
        return
    if scale != 1.0:
        options["poll_policy"] = PollPolicy().scaled(scale)
    options["limits"] = attrs.evolve(limits, rate_window=60.0 * scale)
    # A command that has not reached the service yet says so within seconds, not after the
    # whole retry schedule: a wrong --base-url, or a service down.
    options["retry_policy"] = RetryPolicy(unreachable_after=UNREACHABLE_AFTER)
    client = HailuoClient(
        settings.api_key,
        provider=settings.provider,
        base_url=settings.base_url,
        allow_insecure=settings.allow_insecure,
        coordination=coordination,
        **options,
    )
    async with _opened(client, coordination):
        yield Service(client=client, simulated=False, time_scale=scale)


def where(coordination: Coordination) -> str:
    """The coordination database and schema, without the URL's password."""
    return f"{mask_dsn(coordination.dsn)} (schema {coordination.schema})"


@asynccontextmanager
async def _opened(
    client: HailuoClient, coordination: Coordination | None
) -> AsyncIterator[HailuoClient]:
    """``async with client``; a coordination database that cannot be used is exit 2.

    Once open, the client waits out a database that goes away (a restart, a network cut);
    on starting, a command fails at once instead, before anything is sent, so a wrong URL
    is one line rather than half a minute of retries.
    """
    if coordination is None:
        async with client:
            yield client
        return
    # Imported only here: a process without coordination never loads the database driver.
    import psycopg  # noqa: PLC0415

    from ..postgres import CoordinationError  # noqa: PLC0415

    def refused(exc: BaseException) -> InputError:
        reason = mask_dsn(" ".join(str(exc).split()))  # psycopg's messages span lines
        return InputError(
            f"cannot coordinate limits through {where(coordination)}: {reason} (nothing was "
            "sent; check --coordination or the journal URL, or add --no-coordination)"
        )

    try:
        probe = await psycopg.AsyncConnection.connect(coordination.dsn, connect_timeout=10)
    except (psycopg.Error, OSError) as exc:
        raise refused(exc) from None
    await probe.close()
    try:
        await client.__aenter__()
    except CoordinationError as exc:
        raise refused(exc) from None
    try:
        yield client
    finally:
        await client.aclose()
