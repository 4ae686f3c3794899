"""What the PostgreSQL coordination pieces share: account names, errors, retried round trips.

An *account name* says which processes share limits and webhooks: every process that
names the same account (in the same database and schema) shares them. By default it is
derived from the API key with a one-way hash under a domain prefix, so the key itself
never reaches the database, a log line or a ``NOTIFY`` channel.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.abc
import asyncpg

from .._exceptions import HailuoError, InvalidRequestError

__all__ = ["Background", "CoordinationError", "account_name", "check_account", "check_schema"]

logger = logging.getLogger("hailuo_async.postgres")

_T = TypeVar("_T")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Errors that mean "the connection or the server went away": worth another try.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # a connection the server closed while idle can be left in a state it reports so
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class CoordinationError(HailuoError):
    """The PostgreSQL database that coordinates processes could not be used.

    Raised before the request it guards is sent: nothing is spent when it is raised.
    """


def account_name(api_key: str) -> str:
    """The default account name for ``api_key``: a truncated SHA-256, never the key."""
    digest = hashlib.sha256(b"hailuo-async account\x00" + api_key.encode("utf-8")).hexdigest()
    return f"key-{digest[:24]}"


def check_account(account: str | None, api_key: str | None) -> str:
    """The account to use: ``account`` when given (checked), else derived from ``api_key``."""
    if account is None:
        if not api_key:
            raise InvalidRequestError("account", "give an account name or the API key")
        return account_name(api_key)
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise InvalidRequestError(
            "account", "must be 1 to 63 letters, digits or '_.:-', starting with a letter or digit"
        )
    return account


def check_schema(schema: str) -> str:
    """A schema name safe to put in SQL unquoted: lowercase letters, digits and '_'."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise InvalidRequestError("schema", "must be 1 to 63 lowercase letters, digits or '_'")
    return schema


def channel_for(account: str) -> str:
    """The ``LISTEN`` channel of an account: a hash, so any account name makes a valid one."""
    return "hailuo_push_" + hashlib.sha256(account.encode("utf-8")).hexdigest()[:24]


async def patiently(what: str, call: Callable[[], Awaitable[_T]], *, give_up_after: float) -> _T:
    """Run one round trip, trying again while the database is unreachable.

    Connection-level failures (a restart, a dropped network, a terminated backend) are
    retried with backoff for ``give_up_after`` seconds, then raised as
    :class:`CoordinationError`; any other database error is raised at once, as one.
    """
    deadline = time.monotonic() + give_up_after
    delay = 0.05
    while True:
        try:
            return await call()
        except _TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                raise CoordinationError(
                    f"{what}: the coordination database is unreachable ({type(exc).__name__})"
                ) from exc
            logger.warning("%s: database unreachable (%s), trying again", what, type(exc).__name__)
        except asyncpg.PostgresError as exc:
            raise CoordinationError(f"{what}: {type(exc).__name__}: {exc}") from exc
        await anyio.sleep(delay)
        delay = min(delay * 2, 2.0)


class Background:
    """Tasks that run while their owner's ``async with`` is open, and are cancelled on exit."""

    def __init__(self) -> None:
        self._group: anyio.abc.TaskGroup | None = None

    async def open(self) -> None:
        """Start accepting tasks (from the owner's ``__aenter__``)."""
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group

    def start_soon(self, job: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``job(*args)`` until it ends or the owner closes."""
        if self._group is None:
            raise CoordinationError("used outside its 'async with'")
        self._group.start_soon(job, *args)

    async def close(self) -> None:
        """Cancel every task and wait for them (from the owner's ``__aexit__``)."""
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
