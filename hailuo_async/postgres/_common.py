"""What the PostgreSQL coordination pieces share: account names, schema names, errors.

An *account name* says which processes share limits and webhooks: every process that
names the same account (in the same database and schema) shares them. By default it is
derived from the API key with a one-way hash under a domain prefix, so the key itself
never reaches the database, a log line or a ``NOTIFY`` channel.

The connection they talk through (:class:`._connection.Session`) is in :mod:`._connection`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

from .._dsn import NEEDS_PSYCOPG, mask_dsn

try:
    import psycopg  # noqa: F401
except ImportError as exc:  # the package is imported first through here (see __init__)
    raise ImportError(f"hailuo_async.postgres {NEEDS_PSYCOPG}") from exc

from .._exceptions import HailuoError, InvalidRequestError

__all__ = [
    "Background",
    "CoordinationError",
    "account_name",
    "check_account",
    "check_schema",
]

logger = logging.getLogger("hailuo_async.postgres")

_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class CoordinationError(HailuoError):
    """The PostgreSQL database that coordinates processes could not be used.

    Raised before the request it guards is sent: nothing is spent when it is raised. Its
    message never shows a database password (whatever it quotes is masked).
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (mask_dsn(args[0]), *args[1:])
        super().__init__(*args)


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
    """A schema name of lowercase letters, digits and '_' (the same quoted or not)."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise InvalidRequestError("schema", "must be 1 to 63 lowercase letters, digits or '_'")
    return schema


def channel_for(account: str) -> str:
    """The ``LISTEN`` channel of an account: a hash, so any account name makes a valid one."""
    return "hailuo_push_" + hashlib.sha256(account.encode("utf-8")).hexdigest()[:24]


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
