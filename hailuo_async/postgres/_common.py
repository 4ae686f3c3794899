"""What the PostgreSQL coordination pieces share: account names, errors, the connection.

An *account name* says which processes share limits and webhooks: every process that
names the same account (in the same database and schema) shares them. By default it is
derived from the API key with a one-way hash under a domain prefix, so the key itself
never reaches the database, a log line or a ``NOTIFY`` channel.

Each piece talks to the database through a :class:`Session`: one psycopg
``AsyncConnection`` in autocommit mode, opened on first use and opened again after it is
lost. Statements of one process share it one at a time (psycopg serialises them), which
costs nothing here: each is one short round trip. A round trip left unanswered for
``round_trip_timeout`` seconds means the network went silent: the connection is closed and
the round trip replayed on a new one, as after a restart (see :mod:`.._pg_liveness`).
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

try:
    import psycopg
    from psycopg import conninfo, pq
except ImportError as exc:  # the package is imported first through here (see __init__)
    raise ImportError(
        "hailuo_async.postgres needs psycopg 3: pip install -e '.[postgres]' in the checkout"
        " (or 'psycopg[binary]>=3.2')"
    ) from exc

from .._dsn import mask_dsn
from .._exceptions import HailuoError, InvalidRequestError
from .._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT, check_round_trip_timeout, with_keepalives

__all__ = [
    "Background",
    "CoordinationError",
    "Session",
    "account_name",
    "check_account",
    "check_schema",
]

logger = logging.getLogger("hailuo_async.postgres")

_T = TypeVar("_T")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Server errors that mean "the connection or the server went away": worth another try.
# (Class 08 is "connection exception"; 57P0x are shutdowns and a server not yet ready.)
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# A server that answers a connection attempt with FATAL refuses it for good (no such
# database or role, bad password)... unless it is only starting, stopping or full.
# libpq's messages are matched in English; in another locale every refusal is retried.
_REFUSED = "FATAL:"
_NOT_READY = ("starting up", "shutting down", "recovery", "not yet accepting", "too many", "slots")


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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # No SQLSTATE: the client lost or could not reach the server.
    return exc.sqlstate is None or exc.sqlstate.startswith(_TRANSIENT_SQLSTATES)


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
        except (OSError, psycopg.Error) as exc:
            name = type(exc).__name__
            if not _is_transient(exc):
                raise CoordinationError(f"{what}: {name}: {exc}") from exc
            if time.monotonic() + delay > deadline:
                raise CoordinationError(
                    f"{what}: the coordination database is unreachable ({name}: {exc})"
                ) from exc
            logger.warning("%s: database unreachable (%s), trying again", what, name)
        await anyio.sleep(delay)
        delay = min(delay * 2, 2.0)


Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class Session:
    """One autocommit connection to the coordination database, reopened when it is lost.

    A round trip interrupted midway (cancelled, timed out, or failed inside a
    transaction) leaves the connection in an unknown state: it is closed, and the next
    round trip opens another. ``reconnects`` counts the connections opened after the first.
    ``on_discard`` is told each time the connection is closed that way (the shared limits
    then sync at once: their holder is known by its connection's server process).
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str,
        give_up_after: float,
        round_trip_timeout: float = DEFAULT_ROUND_TRIP_TIMEOUT,
        on_discard: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_discard = on_discard
        self._application_name = application_name
        self._give_up_after = give_up_after
        self._round_trip_timeout = check_round_trip_timeout(round_trip_timeout)
        self._connection: Connection | None = None
        self._opening = anyio.Lock()
        self._connected_once = False
        self.reconnects = 0

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the open connection (for operators and tests)."""
        connection = self._connection
        return None if connection is None or connection.closed else connection.info.backend_pid

    async def run(self, what: str, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        """``work(connection)``, tried again on a new connection while the database is away."""

        async def once() -> _T:
            connection = await self._connected()
            try:
                with anyio.fail_after(self._round_trip_timeout):
                    return await work(connection)
            except TimeoutError:
                # Unanswered: the peer went silent. Replayed on a new connection.
                logger.warning("%s: no answer in %g s", what, self._round_trip_timeout)
                await self.discard(connection)
                raise
            except BaseException:
                if connection.info.transaction_status != pq.TransactionStatus.IDLE:
                    await self.discard(connection)
                raise

        return await patiently(what, once, give_up_after=self._give_up_after)

    async def connection(self, what: str) -> Connection:
        """The open connection, opened (patiently) if there is none."""
        return await patiently(what, self._connected, give_up_after=self._give_up_after)

    async def discard(self, connection: Connection) -> None:
        """Close ``connection`` (if still the session's, it is replaced on next use)."""
        if self._connection is connection:
            self._connection = None
            if self._on_discard is not None:
                self._on_discard()
        with anyio.CancelScope(shield=True):
            await connection.close()

    async def close(self) -> None:
        """Close the connection, if open."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await self.discard(connection)  # no longer the session's: on_discard is not told

    async def _connected(self) -> Connection:
        async with self._opening:
            connection = self._connection
            if connection is None or connection.closed:
                self._connection = connection = await self._connect()
            return connection

    async def _connect(self) -> Connection:
        try:
            options = with_keepalives(conninfo.conninfo_to_dict(self._dsn))
            options["application_name"] = self._application_name
            options.setdefault("connect_timeout", max(1, min(10, round(self._give_up_after))))
            connection = await psycopg.AsyncConnection.connect(**options, autocommit=True)
        except psycopg.ProgrammingError:
            # Not the driver's words: they may quote a piece of the URL, say its password.
            raise CoordinationError(
                "connecting: bad database address (libpq cannot read it)"
            ) from None
        except psycopg.OperationalError as exc:
            message = str(exc)
            refused = _REFUSED in message and not any(word in message for word in _NOT_READY)
            # Once connected, a refusal is the server restarting: it is waited out.
            if refused and not self._connected_once:
                raise CoordinationError(f"connecting: {message}") from None
            raise
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        return connection


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
