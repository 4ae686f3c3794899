"""Limits shared by every request one client makes: in flight, per minute, and pauses after 429.

Each request names its kind (submit, poll or download). Submits and polls draw on one
requests-per-minute budget: a FIFO lock per kind lets at most one of each kind wait at the
shared pacer, whose own FIFO lock then alternates between them, so neither kind starves the
other. A 429 pauses every request that shares its cause, not only the one that got it: a
429 for the request rate pauses submits and polls alike (they spend the same budget), a 429
for the cap on active jobs pauses submits only, and a storage host's 429 pauses downloads.

When the caller does not know the account's limits, they are discovered: the request rate and
the number of active jobs each follow an AIMD rule (grow slowly while calls succeed, cut on
a 429), so a long run settles just under the real limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import anyio
import attrs

from ._checks import Number

__all__ = [
    "ActiveJobLimit",
    "ActiveJobs",
    "AdaptiveRate",
    "Limits",
    "RequestKind",
    "RequestLimiter",
    "RequestLimits",
]

RequestKind = Literal["submit", "poll", "download"]
_KINDS: tuple[RequestKind, ...] = ("submit", "poll", "download")
# The kinds that spend the API's requests-per-minute budget (downloads go to storage).
_BUDGET_KINDS: tuple[RequestKind, ...] = ("submit", "poll")


@attrs.frozen(kw_only=True)
class Limits:
    """The limits a client keeps: requests in flight, requests per minute, active jobs.

    ``max_in_flight`` caps HTTP requests in flight at once. ``requests_per_minute`` and
    ``max_active_jobs`` are the account's limits when known; left ``None``, they are
    discovered from the 429s met. ``rate_window`` is the length of a rate-limit "minute" in
    seconds: only a time-scaled fake service needs another.
    """

    max_in_flight: int = attrs.field(default=64, validator=Number(above=True, whole=True))
    requests_per_minute: float | None = attrs.field(
        default=None, validator=Number(above=True, optional=True)
    )
    max_active_jobs: int | None = attrs.field(
        default=None, validator=Number(above=True, whole=True, optional=True)
    )
    rate_window: float = attrs.field(default=60.0, validator=Number(above=True))


class RequestLimits(Protocol):
    """What every request of a client passes through: in-flight cap, rate budget, 429 pauses.

    Contract: :meth:`slot` returns only when the request may leave (no pause in force for
    its kind, its turn at the shared rate come, an in-flight place held until the context
    exits). Submits and polls spend one shared budget; downloads do not. A shared
    implementation (several processes on one account) must keep these rules across all of
    them.
    """

    @property
    def max_in_flight(self) -> int:
        """The cap on requests in flight at once."""

    def slot(self, kind: RequestKind) -> AbstractAsyncContextManager[None]:
        """Hold one request's place from when it may leave until its answer is read."""

    def take_now(self, kind: RequestKind) -> bool:
        """Take a place for a request of ``kind`` at once, if nothing would hold it back.

        True only when entering :meth:`slot` would not have waited (no pause, no turn to
        wait for, a place free in flight) and the place is now held as if it had; it is
        given back by :meth:`give_back`. False takes nothing: the caller enters
        :meth:`slot`. An implementation that cannot tell without waiting (a round trip to
        share a budget, say) answers False.
        """

    def give_back(self, kind: RequestKind) -> None:
        """Give back a place :meth:`take_now` took for ``kind``, its answer read."""

    def on_success(self, kind: RequestKind) -> None:
        """An answered request that was not rate limited (an adaptive rate may grow)."""

    def on_rate_limited(
        self, kind: RequestKind, retry_after: float | None, *, rate_exceeded: bool = True
    ) -> float:
        """A 429 met by a request of ``kind``; return the pause it caused, in seconds.

        ``rate_exceeded`` True: the request rate was exceeded, so every kind that spends the
        shared budget (submits and polls) is paused and an adaptive rate is cut. False: the
        429 had another cause (the cap on active jobs), so only ``kind`` is paused.
        """

    def paused_for(self, kind: RequestKind) -> float:
        """Seconds a request of ``kind`` would still wait for a pause to end."""


class ActiveJobs(Protocol):
    """How many submitted-but-unfinished jobs may be held at once: fixed, or learnt.

    Contract: :meth:`acquire` waits until ``active < value`` and then counts one more;
    every acquire is matched by one :meth:`release`. :meth:`on_submitted` and
    :meth:`on_completed` feed the learning; :meth:`on_rate_limited` is told only of 429s
    met by submissions made under this limit (never another batch's).
    """

    @property
    def value(self) -> int:
        """The limit now (the learnt cap when it is discovered)."""

    @property
    def active(self) -> int:
        """Jobs holding a place now (being submitted, or submitted and unfinished)."""

    @property
    def room(self) -> int:
        """Places that could be taken now without waiting (sizes a shared batch's claims).

        A limit shared by several processes counts only this process's fair share of them.
        """

    async def acquire(self) -> None:
        """Wait for a place for one more active job, and take it."""

    def release(self, *, submitted: bool) -> None:
        """Give back a job's place; ``submitted`` says whether the service had accepted it."""

    def on_submitted(self) -> None:
        """A submission made under this limit was accepted."""

    def on_completed(self) -> None:
        """A job held under this limit ended."""

    def on_rate_limited(self) -> bool:
        """A submission made under this limit met a 429.

        Return True when the 429 is put down to the cap on active jobs (the limit is being
        discovered), False when the request rate must be the cause (the limit is known).
        """


class AdaptiveRate:
    """Requests allowed per ``window`` seconds: fixed when known, discovered (AIMD) when not.

    Unknown, it starts unpaced; the first 429 sets it from the requests the service admitted
    in the last window (before a full window has passed, all of them; fewer than
    ``min_sample`` say too little, and are left to the pause), after which it grows by
    ``increase`` of itself per window of success and is cut by ``decrease`` on a 429 (a
    burst of 429s from one moment counts once). Counting admitted requests, not sent ones,
    keeps the refused ones from inflating the estimate; setting it at once keeps the requests
    held back by the pause from all leaving together when it ends, only to meet more 429s.
    """

    def __init__(
        self,
        *,
        window: float,
        known: float | None,
        increase: float = 0.05,
        decrease: float = 0.75,
        floor: float = 1.0,
        min_sample: int = 10,
    ) -> None:
        self.window = window
        self.adaptive = known is None
        self.value: float | None = known
        self._increase = increase
        self._decrease = decrease
        self._floor = floor
        self._min_sample = min_sample
        self._admitted: deque[float] = deque()
        # When the first request was sent (the first window's start), once one was.
        self.first_sent: float | None = None
        self._last_change = time.monotonic()

    def record_sent(self, now: float) -> None:
        """Note a request sent at ``now`` (the first one starts the first window)."""
        if self.adaptive and self.first_sent is None:
            self.first_sent = now

    def _forget_before(self, horizon: float) -> None:
        while self._admitted and self._admitted[0] < horizon:
            self._admitted.popleft()

    def on_success(self, now: float) -> None:
        """Note an admitted request; grow an adaptive rate with the time since it changed."""
        if not self.adaptive:
            return
        if self.value is None:
            self._admitted.append(now)  # to size the first cut
            self._forget_before(now - self.window)
            return
        elapsed = now - self._last_change
        self.value *= 1 + self._increase * min(elapsed, self.window) / self.window
        self._last_change = now

    def on_rate_limited(self, now: float) -> None:
        """Cut an adaptive rate; ignore the echoes of a cut already made."""
        if not self.adaptive:
            return
        if self.value is None:
            self._forget_before(now - self.window)
            full_window = self.first_sent is not None and now - self.first_sent >= self.window
            if not full_window and len(self._admitted) < self._min_sample:
                return
            self.value = max(self._floor, len(self._admitted) * self._decrease)
            self._admitted.clear()
        elif now - self._last_change >= self.window / max(self.value, 1.0) * 4:
            self.value = max(self._floor, self.value * self._decrease)
        self._last_change = now

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current rate (0 when unpaced)."""
        return 0.0 if self.value is None else self.window / self.value


# Spacing nobody used is kept for up to this share of the window (10 s of a minute: the
# first_poll_delay during which a run's first jobs hold their places before any is polled).
_CARRY_OVER = 1.0 / 6.0


class _Pacer:
    """Spaces requests evenly at the current rate (GCRA, a leaky bucket), and with a known
    rate keeps the service's window itself from ever counting more than the limit.

    With the rate given, spacing that went unused (nothing asked to leave: at the start of
    a run, say, every place held by a job not yet due for its first poll) is not lost but
    kept, for up to a sixth of the window, and spent later: a request may leave that far
    ahead of the even schedule. The window then keeps the count, exactly and with no
    margin: a request leaves only while fewer than the account's limit are in flight or
    were answered within the last window. The service counts a request when it arrives,
    which is after it left here and before its answer came back. Of the requests any
    window of the service's counts, the last to leave saw every other one either in flight
    or answered after that window began, so within one window of its leaving: no window,
    sliding or fixed, counts more than the limit, whatever the latency, and on a quick
    network the whole budget is spent. (A request abandoned unanswered is taken to have
    arrived by then.) A discovered rate is spaced alone, at ``utilisation`` of its value
    (or two requests a window less, if that is less): the value is the guess.
    """

    def __init__(self, rate: AdaptiveRate, utilisation: float) -> None:
        self.rate = rate
        self._utilisation = utilisation
        self._next_free: float | None = None  # the even schedule's next departure
        self._lock = anyio.Lock()
        self.counting = not rate.adaptive
        """Whether requests are counted in the window (and spacing carried over)."""
        self._in_flight = 0
        self._answered: deque[float] = deque()  # when each request of the window was answered

    def paced_interval(self) -> float:
        """Seconds between two requests leaving on the even schedule (0 when unpaced)."""
        rate = self.rate.value
        if rate is None:
            return 0.0
        if self.counting:
            return self.rate.window / rate  # the window's count keeps it within the limit
        return self.rate.window / max(rate * self._utilisation, rate - 2.0)

    async def acquire(self) -> None:
        """Wait for this request's turn; with ``counting``, it is in flight from here."""
        async with self._lock:
            while (wait := self.wait(time.monotonic())) > 0:  # noqa: ASYNC110
                await anyio.sleep(wait)
            self.depart(time.monotonic())

    def depart(self, now: float) -> None:
        """A request leaves at ``now`` (its turn come: :meth:`wait` said 0 or less)."""
        assert self._next_free is not None
        self._next_free = max(self._next_free, now) + self.paced_interval()
        if self.counting:
            self._in_flight += 1
        self.rate.record_sent(now)

    def withdraw(self) -> None:
        """A request that had its turn did not leave after all (a pause, a cancellation)."""
        if self.counting:
            self._in_flight -= 1

    def answered(self, now: float) -> None:
        """A request counted in the window was answered (or abandoned) at ``now``."""
        self._in_flight -= 1
        self._answered.append(now)

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the next request may leave (0 or less: at once)."""
        carry = self.rate.window * _CARRY_OVER if self.counting else 0.0
        if self._next_free is None:
            self._next_free = now + carry  # credit is earned, not granted at the start
        wait = self._next_free - carry - now
        if self.counting:
            wait = max(wait, self._window_wait(now))
        return wait

    def _window_wait(self, now: float) -> float:
        """Seconds until one more request fits in the window (0 or less: it does now)."""
        window = self.rate.window
        answered = self._answered
        # One expression for "out of the window", here and in the wait below.
        while answered and answered[0] + window <= now:
            answered.popleft()
        assert self.rate.value is not None
        limit = max(1, math.floor(self.rate.value))
        excess = self._in_flight + len(answered) + 1 - limit
        if excess <= 0:
            return 0.0
        if excess <= len(answered):
            return answered[excess - 1] + window - now
        # The requests in flight fill the window by themselves: look again a little later.
        return self.paced_interval()


class _Slot:
    """A request's place in a :class:`RequestLimiter`: a class, no generator per request, and
    one per kind, reused: it keeps nothing of the request it serves."""

    __slots__ = ("_kind", "_limiter")

    def __init__(self, limiter: RequestLimiter, kind: RequestKind) -> None:
        self._limiter = limiter
        self._kind = kind

    async def __aenter__(self) -> None:
        if not self._limiter.take_now(self._kind):
            await self._limiter._enter(self._kind)

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.leave(self._kind)


class RequestLimiter:
    """In-flight cap, per-window request budget and 429 pauses, shared by a client's requests."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        requests_per_minute: float | None = None,
        rate_window: float = 60.0,
        utilisation: float = 0.95,
        initial_pause: float = 1.0,
        max_pause: float = 60.0,
    ) -> None:
        self._max_in_flight = max_in_flight
        # fast_acquire: a free place costs no turn of the loop (the request yields soon enough).
        self._in_flight = anyio.Semaphore(max_in_flight, fast_acquire=True)
        self._slots = {kind: _Slot(self, kind) for kind in _KINDS}
        self.rate = AdaptiveRate(window=rate_window, known=requests_per_minute)
        self._pacer = _Pacer(self.rate, utilisation)
        self._turns = {kind: anyio.Lock() for kind in _KINDS}
        # Pauses by cause: "rate" holds submits and polls, the others their own kind only.
        self._paused_until: dict[str, float] = {}
        self._last_pause_end = 0.0  # the latest end of any pause: past it, none is in force
        self._pause_streak: dict[str, int] = {}
        self._initial_pause = initial_pause
        self._max_pause = max_pause
        self.rate_limited = dict.fromkeys(_KINDS, 0)

    @property
    def max_in_flight(self) -> int:
        """The cap on requests in flight at once."""
        return self._max_in_flight

    def slot(self, kind: RequestKind) -> AbstractAsyncContextManager[None]:
        """Hold one request's place: wait out pauses and pacing, then take an in-flight slot."""
        return self._slots[kind]

    def take_now(self, kind: RequestKind) -> bool:
        """Take a place at once if no pacing, no pause and no queue holds ``kind`` back.

        True when taken: it is given back by :meth:`give_back`. The same as entering
        :meth:`slot` where nothing waits (most requests, on most runs).
        """
        paced = kind != "download"
        if paced and self.rate.value is not None:
            return False
        now = time.monotonic()
        if self._last_pause_end > now or not self._in_flight.value:
            return False
        self._in_flight.acquire_nowait()
        if paced and self.rate.first_sent is None:  # the first request: it dates the window
            self.rate.record_sent(now)
        return True

    async def _enter(self, kind: RequestKind) -> None:
        # The common case, no pacing and no pause in force: nothing to wait for but a place.
        if kind == "download" or self.rate.value is None:
            now = time.monotonic()
            if self._last_pause_end <= now:
                if kind != "download":
                    self.rate.record_sent(now)
                await self._in_flight.acquire()
                if self._last_pause_end <= now:
                    return
                self._in_flight.release()  # a 429 came while we waited: take the long way
        await self._enter_paced(kind)

    def give_back(self, kind: RequestKind) -> None:
        """Give back a place taken by :meth:`take_now`.

        Only the in-flight place comes back: a place is taken at once only for a request
        the window does not count (a download, or any request while the rate is unknown).
        """
        self._in_flight.release()

    def leave(self, kind: RequestKind) -> None:
        """Give back a place taken through :meth:`slot`, its answer read."""
        self._in_flight.release()
        if kind != "download" and self._pacer.counting:
            self._pacer.answered(time.monotonic())

    async def _enter_paced(self, kind: RequestKind) -> None:
        while True:
            await self._wait_out_pause(kind)
            # Downloads go to the storage host, which the API's request budget does not cover.
            paced = kind != "download" and self.rate.value is not None
            if kind != "download":
                if self.rate.value is None:
                    self.rate.record_sent(time.monotonic())  # unpaced: no queue to wait in
                else:
                    async with self._turns[kind]:
                        await self._pacer.acquire()
            try:
                await self._in_flight.acquire()
            except BaseException:
                if paced:
                    self._pacer.withdraw()
                raise
            if self.paused_for(kind) <= 0:
                break
            # A 429 paused this kind while we waited our turn: leaving now would meet another.
            self._in_flight.release()
            if paced:
                self._pacer.withdraw()

    def on_success(self, kind: RequestKind) -> None:
        """Record an answered request that was not rate limited."""
        if self._pause_streak:  # empty but after 429s: no lookups per request else
            self._pause_streak.pop(kind, None)
            if kind in _BUDGET_KINDS:
                self._pause_streak.pop("rate", None)
        if self.rate.adaptive:
            self.rate.on_success(time.monotonic())

    def on_rate_limited(
        self, kind: RequestKind, retry_after: float | None, *, rate_exceeded: bool = True
    ) -> float:
        """Pause every request sharing the 429's cause; return the pause in seconds.

        A rate 429 on a submit or a poll pauses both (they spend one budget) and cuts an
        adaptive rate; ``rate_exceeded`` False (the cap on active jobs) pauses ``kind`` only.
        """
        now = time.monotonic()
        self.rate_limited[kind] += 1
        cause = "rate" if rate_exceeded and kind in _BUDGET_KINDS else kind
        if retry_after is None:
            streak = self._pause_streak.get(cause, 0)
            self._pause_streak[cause] = streak + 1
            pause = min(self._max_pause, self._initial_pause * 2.0**streak)
        else:
            pause = min(self._max_pause, retry_after)
        self._paused_until[cause] = max(self._paused_until.get(cause, 0.0), now + pause)
        self._last_pause_end = max(self._last_pause_end, now + pause)
        if cause == "rate":
            self.rate.on_rate_limited(now)
        return pause

    def paused_for(self, kind: RequestKind) -> float:
        """Seconds this kind of call stays paused."""
        until = self._paused_until.get(kind, 0.0)
        if kind in _BUDGET_KINDS:
            until = max(until, self._paused_until.get("rate", 0.0))
        return max(0.0, until - time.monotonic())

    async def _wait_out_pause(self, kind: RequestKind) -> None:
        # A pause can be extended while we sleep, so look again after each one.
        while (wait := self.paused_for(kind)) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)


class ActiveJobLimit:
    """How many submitted-but-unfinished jobs a batch may hold: fixed, or discovered.

    Discovered, it grows by one per accepted submission until the first 429 on a submit,
    then sits at the number of jobs the service held at that 429 and probes one higher after
    100 clean completions, waiting four times as long after each failed probe, so a settled
    run meets almost no 429s.
    """

    def __init__(self, *, known: int | None, start: int = 4, ceiling: int = 10_000) -> None:
        self.adaptive = known is None
        self._value = known if known is not None else start
        self._ceiling = ceiling
        self._slow_start = self.adaptive
        self._probe_after = 100
        self._clean_completions = 0
        self._active = 0
        self._on_server = 0
        # Made only while a task waits for a place: most releases then have nobody to wake.
        self._changed: asyncio.Event | None = None

    @property
    def value(self) -> int:
        """The limit now (the learnt cap when it is discovered)."""
        return self._value

    @property
    def active(self) -> int:
        """Jobs holding a place now (being submitted, or submitted and unfinished)."""
        return self._active

    @property
    def room(self) -> int:
        """Places free now."""
        return max(0, self._value - self._active)

    async def acquire(self) -> None:
        """Wait for a place for one more active job."""
        while self._active >= self._value:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        self._active += 1

    def release(self, *, submitted: bool) -> None:
        """Give back a job's place; ``submitted`` says whether the service had accepted it."""
        self._active -= 1
        if submitted:
            self._on_server -= 1
        self._notify()

    def on_submitted(self) -> None:
        """A submission was accepted."""
        self._on_server += 1
        if self._slow_start and self._value < self._ceiling:
            self._value += 1
            self._notify()

    def on_completed(self) -> None:
        """A job ended; after enough of them without a 429, probe one place higher."""
        if not self.adaptive or self._slow_start:
            return
        self._clean_completions += 1
        if self._clean_completions >= self._probe_after and self._value < self._ceiling:
            self._clean_completions = 0
            self._value += 1
            self._notify()

    def on_rate_limited(self) -> bool:
        """A submission met a 429: take it as a sign of the cap on active jobs.

        Returns True when the limit is being discovered, so the 429 is put down to it (the
        many polls show a request-rate limit soon enough); False when the limit was given,
        so the request rate must be the cause.
        """
        if not self.adaptive:
            return False
        self._clean_completions = 0
        learned = max(1, self._on_server)
        if learned >= self._value:
            return True  # an echo of a cap already learned
        if self._slow_start:
            self._slow_start = False
        else:
            self._probe_after = min(self._probe_after * 4, 1 << 20)
        self._value = learned
        return True

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
