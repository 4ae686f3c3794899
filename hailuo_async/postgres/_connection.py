"""The one PostgreSQL connection layer: how a connection is opened, lost, and opened again.

Both users of PostgreSQL go through here, each with its own :class:`Session` (one
``AsyncConnection``): the journal (:mod:`..journal._postgres`) and the coordination pieces
(shared limits, push bus). The rules, each in one place:

- **libpq options** (:func:`libpq_options`): TCP keepalives and ``tcp_user_timeout``
  unless the URL sets them (a silent peer is dropped by the kernel in about half a minute,
  see :mod:`.._pg_liveness`), an ``application_name``, and a ``connect_timeout``.
- **A lost connection** (:func:`is_lost`): a socket error or a timeout, a driver error with
  no SQLSTATE (the client lost or could not reach the server), SQLSTATE class 08
  (connection exception) or 57P01-57P03 (shutdowns, a server not yet ready), or any error
  after which the connection is broken or closed. Such a failure is worth another try on a
  new connection; any other error is the caller's to raise.
- **A refused connection** (:func:`refused_for_good`): a ``FATAL`` answer to a connection
  attempt (no such database or role, bad password), unless the server is only starting,
  stopping or full.
- **The reconnect policy** (:data:`RECONNECT`): tries again after 0.05 s, doubling up to
  1 s between tries, until the caller's bound (the journal's ``reconnect_for``, the
  coordination's ``give_up_after``) would be passed; then the caller raises its own error.
- **The retry loop** (:meth:`Session.run`): each try bounded by ``round_trip_timeout``
  (an unanswered one counts as lost), lost connections and deadlocks tried again, any
  other error raised as the caller's own error type.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import attrs
import psycopg
from psycopg import conninfo, pq

from .._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT, check_round_trip_timeout
from ._common import CoordinationError, logger

__all__ = [
    "RECONNECT",
    "Connection",
    "ReconnectPolicy",
    "Session",
    "is_lost",
    "libpq_options",
    "refused_for_good",
]

_T = TypeVar("_T")

# Probes after 10 s of silence, every 5 s; data unacknowledged for 30 s ends the connection.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
# Class 08 is "connection exception"; 57P0x are shutdowns and a server not yet ready.
_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# libpq's messages are matched in English; in another locale every refusal is retried.
_REFUSED = "FATAL:"
_NOT_READY = ("starting up", "shutting down", "recovery", "not yet accepting", "too many", "slots")


def libpq_options(
    dsn: str, *, connect_timeout: float, application_name: str | None = None
) -> dict[str, Any]:
    """libpq's connection parameters for ``dsn``, with the library's settings it lacks.

    ``application_name``, when given, replaces the URL's (the coordination finds its own
    server processes by it); else the URL's is kept, or ``hailuo-async`` set. Raises
    ``psycopg.ProgrammingError`` when libpq cannot read ``dsn``.
    """
    options = {**_KEEPALIVES, **conninfo.conninfo_to_dict(dsn)}
    if application_name is not None:
        options["application_name"] = application_name
    options.setdefault("application_name", "hailuo-async")
    options.setdefault("connect_timeout", max(1, round(connect_timeout)))
    return options


def is_lost(exc: BaseException, connection: psycopg.BaseConnection[Any] | None = None) -> bool:
    """True when ``exc`` means the connection (or the server) went away: try again.

    ``connection``, when given, is the one ``exc`` came from: any error that left it
    broken or closed counts (a restart, or the server ending a transaction left idle).
    """
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if connection is not None and (connection.broken or connection.closed):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    return exc.sqlstate is None or exc.sqlstate.startswith(_LOST_SQLSTATES)


def refused_for_good(exc: psycopg.OperationalError) -> bool:
    """True when a connection attempt was refused for good, not for a passing reason."""
    message = str(exc)
    return _REFUSED in message and not any(word in message for word in _NOT_READY)


@attrs.frozen
class ReconnectPolicy:
    """The pauses between tries on a lost connection: exponential, capped, and bounded."""

    first_delay: float = 0.05
    """Seconds before the second try."""
    longest_delay: float = 1.0
    """The cap on the pause as it doubles."""

    def delays(self, give_up_after: float) -> Iterator[float]:
        """The pauses to take, ending before one would pass ``give_up_after`` s from now."""
        return self._until(time.monotonic() + give_up_after)

    def _until(self, deadline: float) -> Iterator[float]:
        delay = self.first_delay
        while time.monotonic() + delay <= deadline:
            yield delay
            delay = min(delay * 2, self.longest_delay)


RECONNECT = ReconnectPolicy()
"""The policy of every PostgreSQL connection of the library."""


async def _pause(
    what: str,
    exc: BaseException,
    delays: Iterator[float],
    give_up_after: float,
    unreachable: Callable[[str], Exception],
) -> None:
    """Sleep before the next try, or raise ``unreachable`` once the bound is reached."""
    name = type(exc).__name__
    delay = next(delays, None)
    if delay is None:
        raise unreachable(
            f"{what}: the database is unreachable (could not reconnect within"
            f" {give_up_after:g} s): {name}: {exc}"
        ) from exc
    reason = "deadlock" if isinstance(exc, psycopg.errors.DeadlockDetected) else "unreachable"
    logger.warning("%s: database %s (%s), trying again", what, reason, name)
    await anyio.sleep(delay)


Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class Session:
    """One autocommit connection, reopened when it is lost: the journal's and the coordination's.

    :meth:`run` is the one retry loop of the library's PostgreSQL work: each try is bounded
    by ``round_trip_timeout`` (unanswered: the peer went silent, the try is cut); a lost
    connection (:func:`is_lost`) or a deadlock (the server rolled the whole try back) is
    tried again on a new connection under :data:`RECONNECT` for ``give_up_after`` seconds,
    then raised as ``unreachable``; any other database error is raised at once as
    ``failure``. A first connection refused for good (a bad address, no such database or
    role) raises ``unreachable`` at once. A try interrupted midway (cut, cancelled, or
    failed inside a transaction) leaves the connection in an unknown state: it is closed,
    and the next try opens another.

    ``setup`` runs on each new connection (the journal's durability settings).
    ``on_discard`` is told each time the connection is closed that way (the shared limits
    then sync at once: their holder is known by its connection's server process).
    ``reconnects`` counts the connections opened after the first, ``cuts`` the tries cut
    for going unanswered.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str | None = None,
        give_up_after: float,
        round_trip_timeout: float = DEFAULT_ROUND_TRIP_TIMEOUT,
        connect_timeout: float | None = None,
        setup: str = "",
        on_discard: Callable[[], None] | None = None,
        failure: Callable[[str], Exception] = CoordinationError,
        unreachable: Callable[[str], Exception] = CoordinationError,
    ) -> None:
        self._dsn = dsn
        self._on_discard = on_discard
        self._application_name = application_name
        self._give_up_after = give_up_after
        self._round_trip_timeout = check_round_trip_timeout(round_trip_timeout)
        # By default no longer than the caller would wait for the database anyway.
        self._connect_timeout = (
            min(10, give_up_after) if connect_timeout is None else connect_timeout
        )
        self._setup = setup
        self._failure = failure
        self._unreachable = unreachable
        self._connection: Connection | None = None
        self._opening = anyio.Lock()
        self._connected_once = False
        self.reconnects = 0
        self.cuts = 0
        self.replaying = False

    @property
    def round_trip_timeout(self) -> float:
        """Seconds a try may go unanswered before it is cut."""
        return self._round_trip_timeout

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the open connection (for operators and tests)."""
        connection = self._connection
        return None if connection is None or connection.closed else connection.info.backend_pid

    async def run(self, what: str, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        """``work(connection)``, tried again on a new connection while the database is away.

        While a try runs after one whose outcome is unknown (its connection was lost midway:
        it may have been committed), :attr:`replaying` is true; a caller that runs one call
        at a time reads it to recognise its own first try.
        """
        delays = RECONNECT.delays(self._give_up_after)
        self.replaying = False
        while True:
            connection: Connection | None = None
            started = False
            try:
                connection = await self._connected()
                started = True
                with anyio.fail_after(self._round_trip_timeout):
                    return await work(connection)
            except (OSError, psycopg.Error) as exc:  # TimeoutError (a cut try) is an OSError
                # A connection that could not be opened is a passing failure (a refusal for
                # good raised `unreachable` already).
                lost = not started or is_lost(exc, connection)
                if connection is not None and (lost or _in_transaction(connection)):
                    await self.discard(connection)
                if isinstance(exc, TimeoutError):
                    self.cuts += 1
                    logger.warning("%s: no answer in %g s", what, self._round_trip_timeout)
                if lost:
                    self.replaying = self.replaying or started
                elif not isinstance(exc, psycopg.errors.DeadlockDetected):
                    raise self._failure(f"{what}: {type(exc).__name__}: {exc}") from exc
                await _pause(what, exc, delays, self._give_up_after, self._unreachable)
            except BaseException:
                if connection is not None and _in_transaction(connection):
                    await self.discard(connection)
                raise

    async def connection(self, what: str) -> Connection:
        """The open connection, opened if there is none.

        A first connection refused for good (a bad address, no such database or role)
        raises ``unreachable`` at once; a connection that fails for a passing reason (no
        answer, a server restarting, a network cut) is tried again, by :meth:`run`.
        """
        return await self.run(what, _as_is)

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
            options = libpq_options(
                self._dsn,
                connect_timeout=self._connect_timeout,
                application_name=self._application_name,
            )
            connection = await psycopg.AsyncConnection.connect(**options, autocommit=True)
        except psycopg.ProgrammingError:
            # Not the driver's words: they may quote a piece of the URL, say its password.
            raise self._unreachable(
                "connecting: bad database address (not valid: libpq cannot read it)"
            ) from None
        except psycopg.OperationalError as exc:
            # Once connected, a refusal is the server restarting: it is waited out.
            if refused_for_good(exc) and not self._connected_once:
                raise self._unreachable(f"connecting: {exc}") from None
            raise
        if self._setup:
            try:
                await connection.execute(self._setup.encode())
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.close()
                raise
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        return connection


async def _as_is(connection: Connection) -> Connection:
    return connection


def _in_transaction(connection: Connection) -> bool:
    """True unless the connection is idle between statements (a try was interrupted midway)."""
    return connection.info.transaction_status != pq.TransactionStatus.IDLE
