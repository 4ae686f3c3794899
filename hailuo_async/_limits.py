"""Limits shared by every request one client makes: in flight, per minute, and pauses after 429.

Each request names its kind (submit, poll or download). Submits and polls draw on one
requests-per-minute budget: a FIFO lock per kind lets at most one of each kind wait at the
shared pacer, whose own FIFO lock then alternates between them, so neither kind starves the
other. A 429 pauses the whole client for that kind of call, not only the request that got it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio

__all__ = ["AdaptiveRate", "RequestKind", "RequestLimiter"]

RequestKind = Literal["submit", "poll", "download"]
_KINDS: tuple[RequestKind, ...] = ("submit", "poll", "download")


class AdaptiveRate:
    """A requests-per-minute figure that grows while calls succeed and halves on a 429 (AIMD).

    With a ``ceiling`` (the caller's known limit) it never goes above it; without one it starts
    at ``start`` and discovers the account's limit.
    """

    def __init__(
        self,
        *,
        start: float,
        ceiling: float | None,
        floor: float = 6.0,
        increase_per_minute: float | None = None,
    ) -> None:
        self.ceiling = ceiling
        self.floor = floor
        self.value = min(start, ceiling) if ceiling is not None else start
        # Additive increase: by default one "start" worth of rate per minute of success.
        self._increase_per_minute = increase_per_minute or max(start, 1.0)
        self._last_update = time.monotonic()
        self._last_decrease = 0.0

    def on_success(self) -> None:
        """Grow the rate in proportion to the time since the last update."""
        now = time.monotonic()
        grown = self.value + self._increase_per_minute * (now - self._last_update) / 60.0
        self._last_update = now
        self.value = min(grown, self.ceiling) if self.ceiling is not None else grown

    def on_rate_limited(self) -> None:
        """Halve the rate, at most once per interval of the current rate's pacing."""
        now = time.monotonic()
        if now - self._last_decrease < 60.0 / max(self.value, 1e-9):
            return
        self._last_decrease = now
        self._last_update = now
        self.value = max(self.floor, self.value / 2)


class _Pacer:
    """Spaces requests evenly at the current rate (a leaky bucket with a burst of one)."""

    def __init__(self, rate: AdaptiveRate, utilisation: float) -> None:
        self.rate = rate
        self._utilisation = utilisation
        self._next_free = 0.0
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + 60.0 / (self.rate.value * self._utilisation)
            if start > now:
                await anyio.sleep(start - now)


class RequestLimiter:
    """In-flight cap, optional per-minute budget and 429 pauses, shared by a client's requests."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        requests_per_minute: float | None = None,
        adaptive_rate: bool = False,
        initial_adaptive_rate: float = 60.0,
        utilisation: float = 0.95,
        initial_pause: float = 1.0,
        max_pause: float = 60.0,
    ) -> None:
        self._in_flight = anyio.CapacityLimiter(max_in_flight)
        self._pacer: _Pacer | None = None
        # A budget the caller gives is the account's known limit and stays fixed; without one,
        # an adaptive budget discovers the limit from the 429s it meets.
        self._adaptive = adaptive_rate and requests_per_minute is None
        if requests_per_minute is not None:
            self._pacer = _Pacer(
                AdaptiveRate(start=requests_per_minute, ceiling=requests_per_minute), utilisation
            )
        elif self._adaptive:
            self._pacer = _Pacer(
                AdaptiveRate(start=initial_adaptive_rate, ceiling=None), utilisation
            )
        self._turns = {kind: anyio.Lock() for kind in _KINDS}
        self._paused_until = dict.fromkeys(_KINDS, 0.0)
        self._pause_streak = dict.fromkeys(_KINDS, 0)
        self._initial_pause = initial_pause
        self._max_pause = max_pause
        self.rate_limited = dict.fromkeys(_KINDS, 0)

    @property
    def max_in_flight(self) -> int:
        """The cap on requests in flight at once."""
        return int(self._in_flight.total_tokens)

    @property
    def requests_per_minute(self) -> float | None:
        """The budget now in force (it moves when the rate is adaptive), or None for no budget."""
        return self._pacer.rate.value if self._pacer is not None else None

    @property
    def in_flight(self) -> int:
        """Requests in flight now."""
        return int(self._in_flight.borrowed_tokens)

    @asynccontextmanager
    async def slot(self, kind: RequestKind) -> AsyncIterator[None]:
        """Hold one request's place: wait out pauses and pacing, then take an in-flight slot."""
        await self._wait_out_pause(kind)
        if self._pacer is not None and kind != "download":
            async with self._turns[kind]:
                await self._pacer.acquire()
        async with self._in_flight:
            yield

    def on_success(self, kind: RequestKind) -> None:
        """Record an answered request that was not rate limited."""
        self._pause_streak[kind] = 0
        if self._adaptive and self._pacer is not None:
            self._pacer.rate.on_success()

    def on_rate_limited(self, kind: RequestKind, retry_after: float | None) -> float:
        """Pause this kind of call for everyone; return the pause in seconds."""
        self.rate_limited[kind] += 1
        if retry_after is None:
            streak = self._pause_streak[kind]
            self._pause_streak[kind] = streak + 1
            pause = min(self._max_pause, self._initial_pause * 2.0**streak)
        else:
            pause = min(self._max_pause, retry_after)
        self._paused_until[kind] = max(self._paused_until[kind], time.monotonic() + pause)
        if self._adaptive and self._pacer is not None:
            self._pacer.rate.on_rate_limited()
        return pause

    def paused_for(self, kind: RequestKind) -> float:
        """Seconds this kind of call stays paused."""
        return max(0.0, self._paused_until[kind] - time.monotonic())

    async def _wait_out_pause(self, kind: RequestKind) -> None:
        # A pause can be extended while we sleep, so look again after each one.
        while (wait := self.paused_for(kind)) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)
