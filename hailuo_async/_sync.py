"""Lean synchronisation for the per-request path: a FIFO semaphore and a wake-up signal.

Every request takes an in-flight place and every poll a poll slot; batch workers park and
are woken once per job. anyio's primitives do the same with several calls more each (a
backend lookup per Event, a cancellation check per acquire), which on instant jobs is a
measurable share of the client's own CPU. The client is bound to asyncio by aiohttp
anyway, so these use asyncio directly; both behave under anyio's cancellation, which
reaches a waiting task as a CancelledError.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Places", "Signal", "resolve"]

Signal = asyncio.Event
"""A wake-up for one parked task: set once, then replaced by a new one."""


def resolve(waiter: asyncio.Future[None]) -> None:
    """Wake the task parked on a bare future, unless it was woken or cancelled already.

    Where one wake-up is made per park, a future is cheaper than a :data:`Signal`.
    """
    if not waiter.done():
        waiter.set_result(None)


class Places:
    """A counting semaphore served first come, first served; a free place costs one call.

    Unlike anyio's, taking a free place is not a cancellation point: the request that
    follows is one soon enough.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Places free now."""
        return self._free

    def try_acquire(self) -> bool:
        """Take a free place if one is, without waiting: True when taken."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a place, waiting in line for one if none is free."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # given a place just as the wait was cancelled: pass it on
            elif waiter in self._waiters:  # release() may have dropped it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a place back: to the first waiter still waiting, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
