"""A bound on the journal's round trips: a connection left unanswered too long is cut.

The journal drives a blocking psycopg connection from a worker thread, and a blocking call
cannot be cancelled: a peer that went silent (no reset, no close) would hold it until the
kernel gives up. One watchdog thread per store shuts the connection's socket down when a
round trip outlasts its bound. The blocked call then fails as after a dropped network,
and the store's usual recovery (reconnect, replay) takes over.

``shutdown`` acts on the socket, not on the descriptor: libpq's descriptor stays open (it
is closed, as ever, with its connection), so no other file can take its number meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["RoundTripWatchdog"]


class RoundTripWatchdog:
    """Cuts the socket of a round trip that takes longer than ``seconds``.

    :meth:`watching` arms it for one call; the thread starts on first use and ends with
    :meth:`stop`. ``cuts`` counts the round trips it cut.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cuts = 0
        self._changed = threading.Condition()
        self._fd: int | None = None
        self._deadline = 0.0
        self._stopped = False
        self._idle = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, fd: int) -> Iterator[None]:
        """Cut ``fd``'s socket if the block has not ended ``seconds`` from now."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="hailuo-journal-watchdog", daemon=True
                )
                self._thread.start()
            self._fd, self._deadline = fd, time.monotonic() + self.seconds
            # A thread in a timed wait wakes by an earlier deadline and waits on: only an
            # idle one needs waking (so a busy store wakes it about once per bound, not
            # once per call).
            if self._idle:
                self._changed.notify()
        try:
            yield
        finally:
            # Under the lock: once this returns, the descriptor may be closed and reused.
            with self._changed:
                self._fd = None

    def stop(self) -> None:
        """End the thread (the store is closing)."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._changed:
            self._stopped = False  # a store opened again watches again

    def _watch(self) -> None:
        with self._changed:
            while not self._stopped:
                left = self._deadline - time.monotonic()
                if self._fd is not None and left <= 0:
                    _shut_down(self._fd)
                    self.cuts += 1
                    self._fd = None
                    continue
                self._idle = left <= 0  # nothing due: wait to be woken
                self._changed.wait(None if self._idle else left)
                self._idle = False


def _shut_down(fd: int) -> None:
    # A duplicate of the descriptor, closed here: libpq's own stays open.
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)
