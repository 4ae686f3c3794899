"""Account limits shared by every process that names the same account, through PostgreSQL.

:class:`SharedAccountLimits` is an async context manager; inside it, ``.requests`` (a
:class:`SharedRequestLimiter`) and ``.active_jobs`` (a :class:`SharedActiveJobLimit`) have
the methods of :class:`~hailuo_async._limits.RequestLimiter` and
:class:`~hailuo_async._limits.ActiveJobLimit`, so a client uses either kind alike.

Contracts:

- **Request rate** (submits and polls; downloads go to the storage host and are not
  counted): the account's row holds a GCRA schedule, ``next_free``. One call of
  ``reserve_requests`` hands out the next ``k`` start times, ``spacing`` seconds apart on
  the database's clock; a caller sleeps until its start. Concurrent waiters of one process
  share one round trip (group reservation), so a busy process makes fewer than one round
  trip per request, an idle one exactly one. A reservation is never taken back: a waiter
  cancelled while asleep wastes its start time, which only lowers the rate. With the rate
  given, spacing nobody used (the start of a run, while every place holds a job not yet
  due for a poll) carries over to later requests as far as the share of the rate the
  spacing leaves unspent (``1 - utilisation``) allows: no window of the rate's length then
  holds more than ``rate - 1`` starts, one request kept for the spread of arrival times.
- **429 pause**: a 429 writes ``paused_until`` for its kind of call (one round trip, in the
  background: the method is synchronous); every process meets it at its next reservation.
  ``paused_for`` answers from what this process last saw.
- **Discovered limits** (AIMD) live in the row: the rate grows in each reservation and is
  cut by a 429; the active-job cap grows by one per accepted submission until the first
  429 on a submit, then probes upward after clean completions, as in one process.
- **Active jobs**: each process is a *holder* with a lease (renewed every ``lease / 3``
  seconds) and its own counts; a place is granted only while the live holders' total is
  under the cap, decided under the row's lock. The places are shared fairly: a holder
  waiting for one says so (for four ``wait_poll_interval`` after each ask), and no holder
  is granted a place while another that holds fewer waits; with nobody waiting, any
  holder may take every free place. A holder whose lease lapses (stopped past it, a lost
  machine), or whose connection's server process has been gone for a second from the
  server it last synced with (killed), is deleted by the next process that syncs, and its
  places are free again. A holder that comes back after losing its places re-registers
  those it still holds: until they end the total may pass the cap, and the service's own
  429s (which pause everyone) cover it.
- When the database cannot be reached for ``give_up_after`` seconds, the call raises
  :class:`CoordinationError` *before* the request it guards is sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import anyio
import attrs
from psycopg import sql

from .._exceptions import InvalidRequestError
from .._limits import RequestKind
from .._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT, check_round_trip_timeout
from ._common import Background, CoordinationError, check_account, check_schema
from ._connection import Connection, Session
from ._schema import create_limits_schema, in_schema

__all__ = [
    "ActiveJobCount",
    "Reservation",
    "SharedAccountLimits",
    "SharedActiveJobLimit",
    "SharedRequestLimiter",
]

logger = logging.getLogger("hailuo_async.postgres")

_PACED_KINDS: tuple[RequestKind, ...] = ("submit", "poll")

# The statements each process sends; {s} stands for the schema.
# Joining is one round trip: ON CONFLICT ... DO UPDATE returns the row in both cases.
_JOIN = """
INSERT INTO {s}.account_limits AS a (account, rate_window, utilisation, rate, rate_adaptive,
    active_cap, active_adaptive, active_slow_start, active_ceiling)
VALUES (%(account)s, %(window)s, %(utilisation)s, %(rate)s::double precision,
        %(rate)s::double precision IS NULL, coalesce(%(cap)s::integer, 4),
        %(cap)s::integer IS NULL, %(cap)s::integer IS NULL, 10000)
ON CONFLICT (account) DO UPDATE SET
    rate_window = excluded.rate_window,
    utilisation = excluded.utilisation,
    rate = CASE WHEN excluded.rate_adaptive THEN a.rate ELSE excluded.rate END,
    rate_adaptive = excluded.rate_adaptive AND a.rate_adaptive,
    active_cap = CASE WHEN excluded.active_adaptive THEN a.active_cap
                      ELSE excluded.active_cap END,
    active_adaptive = excluded.active_adaptive AND a.active_adaptive,
    active_slow_start = excluded.active_adaptive AND a.active_slow_start
RETURNING active_cap, active_adaptive
"""
# paused_till is '-infinity' when not paused, which Python's datetime cannot hold.
_RESERVE = (
    "SELECT first_start, spacing, greatest(paused_till, db_now), db_now"
    " FROM {s}.reserve_requests(%s, %s, %s, %s)"
)
_RATE_LIMITED = "SELECT {s}.note_rate_limited(%s, %s, %s, %s, %s, %s)"
_SYNC_ACTIVE = (
    "SELECT granted, cap, total_active, room, holders, db_now"
    " FROM {s}.sync_active_jobs(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# Seconds a holder's server process must stay gone before its places are freed: its own
# reconnection (a connection dropped while it lives) re-registers it well within them.
_ABSENT_GRACE = 1.0
# Leaving deletes the holder's row only once no other server process of this holder is
# left: a round trip cut off at exit (its connection closed) still runs on its own, and its
# upsert would bring the row back after the DELETE. The answer counts those left.
_LEAVE = """
WITH others AS (
    SELECT count(*) AS n FROM pg_stat_activity
    WHERE application_name = %(application)s AND pid <> pg_backend_pid()
), gone AS (
    DELETE FROM {s}.account_holders
    WHERE account = %(account)s AND holder = %(holder)s AND (SELECT n FROM others) = 0
)
SELECT n FROM others
"""


@attrs.frozen
class Reservation:
    """Start times handed out by one round trip, on the database's clock.

    ``first_start`` is ``None`` when the kind of call is paused until ``paused_until``.
    """

    first_start: dt.datetime | None
    spacing: float
    paused_until: dt.datetime
    db_now: dt.datetime
    received: float  # time.monotonic() when the answer arrived

    def start(self, index: int) -> dt.datetime:
        """The database time at which the ``index``-th request of this batch may start."""
        assert self.first_start is not None
        return self.first_start + dt.timedelta(seconds=self.spacing * index)

    def local(self, moment: dt.datetime) -> float:
        """``moment`` (database clock) as a ``time.monotonic()`` value of this process."""
        return self.received + (moment - self.db_now).total_seconds()


@attrs.frozen
class ActiveJobCount:
    """What one synchronisation of the active-job counts found (database clock).

    ``room``: how many more places this process could take at once, its fair share
    considered (every free place while no other process waits for one); ``holders``: the
    live processes of the account, this one included.
    """

    granted: bool
    cap: int
    total_active: int
    db_now: dt.datetime
    room: int = 0
    holders: int = 1


class _Waiter:
    __slots__ = ("error", "index", "reservation")

    def __init__(self) -> None:
        self.reservation: Reservation | None = None
        self.index = 0
        self.error: BaseException | None = None


class _GroupReservations:
    """Gives each waiter a start time; waiters queued together share one round trip."""

    def __init__(self, reserve: Callable[[int], Awaitable[Reservation]], max_batch: int) -> None:
        self._reserve = reserve
        self._max_batch = max_batch
        self._queue: list[_Waiter] = []
        self._lock = anyio.Lock()

    async def take(self) -> tuple[Reservation, int]:
        waiter = _Waiter()
        self._queue.append(waiter)
        try:
            async with self._lock:
                if waiter.reservation is None and waiter.error is None:
                    await self._serve()
        finally:
            if waiter in self._queue:
                self._queue.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reservation is not None
        return waiter.reservation, waiter.index

    async def _serve(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: len(batch)]
        try:
            reservation = await self._reserve(len(batch))
        except Exception as exc:
            for member in batch:
                member.error = exc
            raise
        except BaseException:
            # Cancelled: the others go back to the front, to be served by the next holder.
            self._queue[:0] = [member for member in batch if member.reservation is None]
            raise
        for index, member in enumerate(batch):
            member.reservation, member.index = reservation, index


class SharedRequestLimiter:
    """The request side of :class:`SharedAccountLimits`: pacing and 429 pauses for all.

    Same methods as :class:`hailuo_async._limits.RequestLimiter`.
    """

    def __init__(self, owner: SharedAccountLimits, *, max_in_flight: int, max_batch: int) -> None:
        self._owner = owner
        self._max_in_flight = max_in_flight
        # A semaphore, not a capacity limiter: a place taken by take_now is given back by
        # give_back, which need not know which task took it.
        self._in_flight = anyio.Semaphore(max_in_flight)
        self._groups = {
            kind: _GroupReservations(functools.partial(owner._reserve, kind), max_batch)
            for kind in _PACED_KINDS
        }
        self._paused_until: dict[RequestKind, float] = {
            "submit": 0.0,
            "poll": 0.0,
            "download": 0.0,
        }
        self._pause_streak: dict[RequestKind, int] = {"submit": 0, "poll": 0, "download": 0}
        self.rate_limited: dict[RequestKind, int] = {"submit": 0, "poll": 0, "download": 0}

    @property
    def max_in_flight(self) -> int:
        """The cap on this process's requests in flight at once (not shared)."""
        return self._max_in_flight

    async def wait_turn(self, kind: RequestKind) -> dt.datetime | None:
        """Wait until a request of ``kind`` may start; return that moment (database clock).

        Waits out any pause first. Downloads are not paced: ``None`` at once.
        """
        await self._wait_out_pause(kind)
        if kind not in _PACED_KINDS:
            return None
        while True:
            reservation, index = await self._groups[kind].take()
            if reservation.first_start is None:
                self._paused(kind, reservation.local(reservation.paused_until))
                await self._wait_out_pause(kind)
                continue
            start = reservation.start(index)
            delay = reservation.local(start) - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            return start

    @asynccontextmanager
    async def slot(self, kind: RequestKind) -> AsyncIterator[None]:
        """Hold one request's place: wait out pauses and the shared pacing, then take a slot."""
        await self.wait_turn(kind)
        async with self._in_flight:
            yield

    def take_now(self, kind: RequestKind) -> bool:
        """Take a place at once for a download nothing holds back; never for a submit or poll.

        A submit's or a poll's start time spends the account's shared budget, and only a
        reservation (a round trip) hands one out, none kept spare: False, so it waits its
        turn in :meth:`slot`. A download spends none of it: it takes one of this process's
        places in flight at once, unless a pause holds downloads back or none is free.
        """
        if kind in _PACED_KINDS or not self._in_flight.value:
            return False
        if self._paused_until[kind] > time.monotonic():
            return False
        self._in_flight.acquire_nowait()
        return True

    def give_back(self, kind: RequestKind) -> None:
        """Give back a place taken by :meth:`take_now`."""
        self._in_flight.release()

    def on_success(self, kind: RequestKind) -> None:
        """Record an answered request that was not rate limited.

        No round trip: the shared rate grows in the next reservation.
        """
        self._pause_streak[kind] = 0

    def on_rate_limited(
        self, kind: RequestKind, retry_after: float | None, *, rate_exceeded: bool = True
    ) -> float:
        """Pause this kind of call in every process; return the pause in seconds.

        The pause applies here at once; the shared row is written in the background (one
        round trip), and the other processes meet it at their next reservation.
        """
        pause = self._pause_locally(kind, retry_after)
        if kind in _PACED_KINDS:
            self._owner._in_background(self._owner._note_rate_limited, kind, pause, rate_exceeded)
        return pause

    async def report_rate_limited(
        self, kind: RequestKind, retry_after: float | None, *, rate_exceeded: bool = True
    ) -> float:
        """As :meth:`on_rate_limited`, but wait until the shared row is written."""
        pause = self._pause_locally(kind, retry_after)
        if kind in _PACED_KINDS:
            await self._owner._note_rate_limited(kind, pause, rate_exceeded)
        return pause

    def paused_for(self, kind: RequestKind) -> float:
        """Seconds this kind of call stays paused, as this process last learnt."""
        return max(0.0, self._paused_until[kind] - time.monotonic())

    def _pause_locally(self, kind: RequestKind, retry_after: float | None) -> float:
        self.rate_limited[kind] += 1
        if retry_after is None:
            streak = self._pause_streak[kind]
            self._pause_streak[kind] = streak + 1
            pause = min(self._owner.max_pause, self._owner.initial_pause * 2.0**streak)
        else:
            pause = min(self._owner.max_pause, max(0.0, retry_after))
        self._paused(kind, time.monotonic() + pause)
        return pause

    def _paused(self, kind: RequestKind, until: float) -> None:
        self._paused_until[kind] = max(self._paused_until[kind], until)

    async def _wait_out_pause(self, kind: RequestKind) -> None:
        while (wait := self.paused_for(kind)) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)


class SharedActiveJobLimit:
    """The active-job side of :class:`SharedAccountLimits`: one cap for all processes.

    Same methods as :class:`hailuo_async._limits.ActiveJobLimit`. ``acquire`` is one round
    trip when a place is free; ``release``, ``on_submitted``, ``on_completed`` and
    ``on_rate_limited`` are synchronous: they change this process's counts at once and
    the next synchronisation carries them to the database. A release or a 429 starts one
    at once in the background (merged with any others already waiting, and skipped when
    a waiter's ask has carried it); with a known cap, submissions and completions only
    ride along with the next one, since only a cap being discovered learns from them.
    A waiter asks again as soon as this process releases a place, and otherwise every
    ``wait_poll_interval`` (a place freed by another process).

    The places are shared fairly: while this process waits, the database knows it (for
    four poll intervals after each ask), and no process holding more places than this
    one is granted another; see :attr:`room`.
    """

    def __init__(self, owner: SharedAccountLimits, *, adaptive: bool, start: int) -> None:
        self._owner = owner
        self.adaptive = adaptive
        self.value = start
        self._active = 0
        self._on_server = 0
        self._submitted = 0
        self._completed = 0
        self._rate_limited = False
        self._turn = anyio.Lock()  # one waiter of this process asks the database at a time
        self._sync_lock = anyio.Lock()  # counts are sent whole: one synchronisation at a time
        # Set when a place may be free (a release here, or a sync that saw room); a waiter
        # takes it before it asks, so a release during its round trip wakes it at once.
        self._freed = anyio.Event()
        # Urgent changes counted, and how many of them the database has: a background
        # sync that a waiter's ask carried already is skipped. Only that task resets _dirty
        # (a sync replacing it would leave the task waiting on an event nobody sets).
        self._changes = 0
        self._sent = 0
        self._last_sync = 0.0
        self._full = False  # the last sync saw every place of the account taken
        self._dirty = anyio.Event()
        self._waiters = 0  # callers of acquire() still without their place
        self._said_waiting = False  # the last sync told the database this process waits
        self.last_count: ActiveJobCount | None = None
        self.peak_total = 0

    async def try_acquire(self) -> bool:
        """Take a place if one is free now (one round trip); never waits for one."""
        return await self._sync(want=True)

    @property
    def active(self) -> int:
        """Places this process holds (being submitted, or submitted and unfinished)."""
        return self._active

    @property
    def _alone(self) -> bool:
        """True when the last sync saw no other live process on the account."""
        return self.last_count is None or self.last_count.holders <= 1

    @property
    def room(self) -> int:
        """Places this process could take at once, as the last synchronisation found.

        Every free place while no other process waits for one; else no more than this
        process's share (the cap divided among the processes that hold or want places).
        """
        return 0 if self.last_count is None else self.last_count.room

    async def acquire(self) -> None:
        """Wait for a place for one more active job, counted across every process."""
        self._waiters += 1
        granted = False
        try:
            async with self._turn:
                # The cap full at the last sync (and nothing released here since): an ask
                # would be refused, so wait for a reason to ask first; unless other
                # processes share the places and do not know yet that this one waits.
                ask = not (self._full and (self._said_waiting or self._alone))
                while True:
                    freed = self._freed
                    if ask and await self._sync(want=True, asking=True):
                        granted = True
                        return
                    ask = True
                    # Woken by a release of this process (the next ask carries it), by a
                    # sync that saw room (a cap grown, another process's place freed), or
                    # after the interval (another process's release, or its turn).
                    with anyio.move_on_after(self._owner.wait_poll_interval):
                        await freed.wait()
        finally:
            self._waiters -= 1
            if not granted and self._said_waiting and not self._waiters:
                self._changed_here()  # cancelled: tell the others this process waits no more

    def release(self, *, submitted: bool) -> None:
        """Give back a job's place; ``submitted`` says whether the service had accepted it."""
        self._active -= 1
        if submitted:
            self._on_server -= 1
        # The waiter first: its ask carries the release, and the background one is skipped.
        self._full = False
        self._wake_waiter()
        self._changed_here()

    def on_submitted(self) -> None:
        """A submission was accepted."""
        self._on_server += 1
        self._submitted += 1
        # Only a cap being discovered learns from it; a known one waits for the next sync.
        self._changed_here(urgent=self.adaptive)

    def on_completed(self) -> None:
        """A job ended (counted toward probing one place higher)."""
        self._completed += 1
        self._changed_here(urgent=self.adaptive)

    def on_rate_limited(self) -> bool:
        """A submission met a 429: True when the cap is being discovered (then it is cut)."""
        if not self.adaptive:
            return False
        self._rate_limited = True
        self._changed_here()
        return True

    def _wake_waiter(self) -> None:
        self._freed.set()
        self._freed = anyio.Event()

    def _changed_here(self, *, urgent: bool = True) -> None:
        if urgent:
            self._changes += 1
            self._dirty.set()

    async def _sync(self, *, want: bool, unless_sent: bool = False, asking: bool = False) -> bool:
        """Send this process's counts (renewing its lease); with ``want``, ask for a place.

        With ``unless_sent``, nothing is sent when an earlier sync (one this waited for,
        say) carried every urgent change already. ``asking``: the ask is a waiter's (one of
        ``_waiters``), so the others still wait whether it gets its place or not.
        """
        async with self._sync_lock:
            if unless_sent and self._sent >= self._changes:
                return False
            submitted, completed, rate_limited = (
                self._submitted,
                self._completed,
                self._rate_limited,
            )
            self._submitted = self._completed = 0
            self._rate_limited = False
            changes = self._changes
            others_waiting = self._waiters - int(asking) > 0
            try:
                count = await self._owner._sync_active(
                    self._active,
                    self._on_server,
                    want=want,
                    waiting=others_waiting,
                    submitted=submitted,
                    completed=completed,
                    rate_limited=rate_limited,
                )
            except BaseException:
                # Not sent: carried by the next synchronisation.
                self._submitted += submitted
                self._completed += completed
                self._rate_limited = self._rate_limited or rate_limited
                self._dirty.set()
                raise
            self._sent = max(self._sent, changes)
            self._last_sync = time.monotonic()
            self.value = count.cap
            self.last_count = count
            self._said_waiting = others_waiting or (want and not count.granted)
            # A release during the round trip is not in that total: room, maybe.
            self._full = count.total_active >= count.cap and self._changes == changes
            if count.granted:
                self._active += 1
                self.peak_total = max(self.peak_total, count.total_active)
            elif not want and count.total_active < count.cap:
                self._wake_waiter()  # room seen (say a cap grown by this sync): ask now
            return count.granted

    async def _keep_in_sync(self) -> None:
        """Runs for the owner's lifetime: send changes at once, renew the lease regularly."""
        renew_every = self._owner.lease / 3
        while True:
            dirty = self._dirty
            with anyio.move_on_after(renew_every):
                await dirty.wait()
            self._dirty = anyio.Event()
            due = time.monotonic() - self._last_sync >= renew_every
            try:
                # Skipped when a waiter's ask carried the changes (and renewed the lease).
                await self._sync(want=False, unless_sent=not due)
            except CoordinationError as exc:
                logger.warning("shared active-job counts not sent: %s", exc)


class SharedAccountLimits:
    """Account limits shared through PostgreSQL by every process naming the same account.

    ::

        async with SharedAccountLimits(dsn, api_key=key, requests_per_minute=600,
                                       max_active_jobs=10) as limits:
            async with limits.requests.slot("submit"):
                ...
            await limits.active_jobs.acquire()

    ``account`` defaults to a hash of ``api_key`` (see :func:`account_name`); one of the
    two is required. ``requests_per_minute`` and ``max_active_jobs`` given here are
    written to the account's row (the last process to start with explicit limits sets
    them); left ``None``, the process uses the row's (possibly learnt) values, or, for a
    new account, discovers them. ``lease`` is how long a silent process keeps its active
    places; ``give_up_after`` how long a round trip may keep failing before
    :class:`CoordinationError`; ``round_trip_timeout`` how long one may go unanswered
    before its connection is taken for dead and replaced.
    """

    def __init__(
        self,
        dsn: str,
        *,
        account: str | None = None,
        api_key: str | None = None,
        schema: str = "hailuo",
        requests_per_minute: float | None = None,
        rate_window: float = 60.0,
        utilisation: float = 0.95,
        max_active_jobs: int | None = None,
        max_in_flight: int = 64,
        lease: float = 30.0,
        give_up_after: float = 30.0,
        round_trip_timeout: float = DEFAULT_ROUND_TRIP_TIMEOUT,
        initial_pause: float = 1.0,
        max_pause: float = 60.0,
        max_batch: int = 64,
        wait_poll_interval: float = 0.5,
    ) -> None:
        self.account = check_account(account, api_key)
        self.schema = check_schema(schema)
        _check_positive("rate_window", rate_window)
        _check_positive("lease", lease)
        _check_positive("give_up_after", give_up_after)
        _check_positive("wait_poll_interval", wait_poll_interval)
        if requests_per_minute is not None:
            _check_positive("requests_per_minute", requests_per_minute)
        if not 0.0 < utilisation <= 1.0:
            raise InvalidRequestError("utilisation", "must be in (0, 1]")
        if max_active_jobs is not None and (
            isinstance(max_active_jobs, bool) or max_active_jobs < 1
        ):
            raise InvalidRequestError("max_active_jobs", "must be None or 1 or more")
        if max_in_flight < 1 or max_batch < 1:
            raise InvalidRequestError("max_in_flight", "max_in_flight and max_batch must be >= 1")
        self._dsn = dsn
        self._requests_per_minute = requests_per_minute
        self._rate_window = rate_window
        self._utilisation = utilisation
        self._max_active_jobs = max_active_jobs
        self.lease = lease
        self.give_up_after = give_up_after
        self.round_trip_timeout = check_round_trip_timeout(round_trip_timeout)
        self.initial_pause = initial_pause
        self.max_pause = max_pause
        self.wait_poll_interval = wait_poll_interval
        self.holder = f"{uuid.uuid4().hex[:12]}"
        # Names this holder's server processes: leaving waits for those cut off (_LEAVE).
        self._application_name = f"hailuo-limits-{self.holder}"
        self.requests = SharedRequestLimiter(self, max_in_flight=max_in_flight, max_batch=max_batch)
        self.active_jobs = SharedActiveJobLimit(
            self, adaptive=max_active_jobs is None, start=max_active_jobs or 4
        )
        self.round_trips = 0
        """Round trips to the database so far (retries included)."""
        self._session: Session | None = None
        self._background = Background()
        self._sql_reserve = in_schema(self.schema, _RESERVE)
        self._sql_rate_limited = in_schema(self.schema, _RATE_LIMITED)
        self._sql_sync_active = in_schema(self.schema, _SYNC_ACTIVE)
        self._sql_leave = in_schema(self.schema, _LEAVE)
        self._sql_join = in_schema(self.schema, _JOIN)

    @property
    def reconnects(self) -> int:
        """Connections opened again after one was lost or went silent."""
        return 0 if self._session is None else self._session.reconnects

    def __repr__(self) -> str:
        return f"<SharedAccountLimits account={self.account!r} holder={self.holder!r}>"

    async def __aenter__(self) -> SharedAccountLimits:
        session = Session(
            self._dsn,
            application_name=self._application_name,
            give_up_after=self.give_up_after,
            round_trip_timeout=self.round_trip_timeout,
            # Others free this holder's places once its server process is gone for a
            # moment: a new connection re-registers it at once.
            on_discard=self.active_jobs._changed_here,
        )
        self._session = session
        try:
            await session.run("setting up", self._set_up)
            await self.active_jobs._sync(want=False)
            await self._background.open()
            self._background.start_soon(self.active_jobs._keep_in_sync)
        except BaseException:
            self._session = None
            await session.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._session is not None
        await self._background.close()
        session, self._session = self._session, None

        params = {
            "account": self.account,
            "holder": self.holder,
            "application": self._application_name,
        }

        async def leave(connection: Connection) -> int:
            cursor = await connection.execute(self._sql_leave, params)
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        try:
            with anyio.move_on_after(5, shield=True):
                # Leave at once: our places need not wait for the lease to lapse. A round
                # trip cut off by the exit lands first (see _LEAVE), then the row goes.
                while await session.run("leaving the shared limits", leave):  # noqa: ASYNC110
                    await anyio.sleep(0.02)  # another process's state: no event to wait on
        except CoordinationError as error:
            logger.warning("could not leave the shared limits cleanly: %s", error)
        finally:
            await session.close()

    # -- round trips ---------------------------------------------------------------------

    async def _set_up(self, connection: Connection) -> None:
        await create_limits_schema(connection, self.schema)
        rpm = self._requests_per_minute
        rate = None if rpm is None else rpm * self._rate_window / 60.0
        cursor = await connection.execute(
            self._sql_join,
            {
                "account": self.account,
                "window": self._rate_window,
                "utilisation": self._utilisation,
                "rate": rate,
                "cap": self._max_active_jobs,
            },
        )
        row = await cursor.fetchone()
        assert row is not None
        self.active_jobs.value, self.active_jobs.adaptive = row

    async def _reserve(self, kind: RequestKind, count: int) -> Reservation:
        first_start, spacing, paused_until, db_now = await self._round_trip(
            "reserving a request slot", self._sql_reserve, (self.account, kind, count, 0.05)
        )
        return Reservation(
            first_start=first_start,
            spacing=spacing,
            paused_until=paused_until,
            db_now=db_now,
            received=time.monotonic(),
        )

    async def _note_rate_limited(self, kind: RequestKind, pause: float, exceeded: bool) -> None:
        await self._round_trip(
            "sharing a 429 pause",
            self._sql_rate_limited,
            (self.account, kind, pause, exceeded, 0.75, 1.0),
        )

    async def _sync_active(
        self,
        active: int,
        on_server: int,
        *,
        want: bool,
        waiting: bool,
        submitted: int,
        completed: int,
        rate_limited: bool,
    ) -> ActiveJobCount:
        granted, cap, total_active, room, holders, db_now = await self._round_trip(
            "counting active jobs",
            self._sql_sync_active,
            (
                self.account,
                self.holder,
                self.lease,
                active,
                on_server,
                want,
                waiting,
                self.wait_poll_interval,
                _ABSENT_GRACE,
                submitted,
                completed,
                rate_limited,
            ),
            with_pid=True,
        )
        return ActiveJobCount(
            granted=granted,
            cap=cap,
            total_active=total_active,
            db_now=db_now,
            room=room,
            holders=holders,
        )

    async def _round_trip(
        self,
        what: str,
        query: sql.Composed,
        params: tuple[Any, ...],
        *,
        with_pid: bool = False,
    ) -> tuple[Any, ...]:
        """One statement, one round trip: its first row.

        ``with_pid``: the server process id this connection's client knows (libpq's, from
        the server's key data) goes last among the parameters. A pooler answers with its
        own, which the database's ``pg_backend_pid()`` does not match.
        """
        session = self._session
        if session is None:
            raise CoordinationError("the shared limits are used outside their 'async with'")

        async def fetch(connection: Connection) -> tuple[Any, ...]:
            self.round_trips += 1
            sent = (*params, connection.info.backend_pid) if with_pid else params
            cursor = await connection.execute(query, sent)
            row = await cursor.fetchone()
            assert row is not None
            return row

        return await session.run(what, fetch)

    def _in_background(self, job: Callable[..., Awaitable[None]], *args: Any) -> None:
        async def logged() -> None:
            try:
                await job(*args)
            except CoordinationError as exc:
                logger.warning("%s", exc)

        self._background.start_soon(logged)


def _check_positive(field: str, value: float) -> None:
    if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise InvalidRequestError(field, "must be a finite number above 0")
