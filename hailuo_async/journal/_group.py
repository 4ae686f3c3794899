"""Group commit: the writes that queue up while one transaction runs share the next one.

A durable commit costs an fsync (milliseconds); paying one per write would cap a run at a few
hundred transitions a second. Here every caller still waits for its own write to be durable,
but all the writes that arrived during a commit go out together in the following one, so the
cost of an fsync is shared by as many writers as are waiting. No background task is needed:
whichever waiting writer gets the lock first commits the whole open group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import anyio

from ._errors import JournalError

__all__ = ["GroupCommitter"]

C = TypeVar("C")
T = TypeVar("T")


class _Write:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Any], object]) -> None:
        self.fn = fn
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class _Group:
    __slots__ = ("ran", "writes")

    def __init__(self) -> None:
        self.writes: list[_Write] = []
        self.ran = False


class GroupCommitter(Generic[C]):
    """Runs writes in shared transactions on a worker thread.

    ``apply`` runs in a thread: it gets the connection and the group's write functions, runs
    them in one transaction, commits, and returns their results in order (or raises, and then
    every write of the group fails).
    """

    def __init__(
        self,
        connection: C,
        apply: Callable[[C, list[Callable[[C], object]]], list[object]],
        *,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self._connection = connection
        self._apply = apply
        self._limiter = limiter
        self._open = _Group()
        self._lock = anyio.Lock()
        self.commits = 0
        self.writes = 0

    async def write(self, fn: Callable[[C], T]) -> T:
        """Run ``fn`` in the next group's transaction; return its result once committed."""
        write = _Write(fn)
        self._open.writes.append(write)
        # A write not yet done is always in the open group (see _commit_open), so whoever
        # holds the lock next commits it.
        while not write.done:
            async with self._lock:
                if not write.done:
                    await self._commit_open()
        if write.error is not None:
            raise JournalError(f"the journal could not write: {write.error}") from write.error
        return cast(T, write.result)

    async def flush(self) -> None:
        """Commit the writes whose callers stopped waiting (cancelled) but that are still due."""
        async with self._lock:
            while self._open.writes:
                await self._commit_open()

    @property
    def pending(self) -> int:
        """Writes waiting for the next commit."""
        return len(self._open.writes)

    async def _commit_open(self) -> None:
        group, self._open = self._open, _Group()
        try:
            await anyio.to_thread.run_sync(self._run, group, limiter=self._limiter)
        finally:
            if not group.ran:
                # Cancelled before a thread took the group: its writes were not applied, so
                # they go back to the front of the open group, in their order.
                self._open.writes[:0] = group.writes

    def _run(self, group: _Group) -> None:
        group.ran = True
        try:
            results = self._apply(self._connection, [write.fn for write in group.writes])
        except BaseException as exc:
            # Handed to every waiting writer; none may wait for a group that will never come.
            for write in group.writes:
                write.error = exc
                write.done = True
            if not isinstance(exc, Exception):
                raise
        else:
            for write, result in zip(group.writes, results, strict=True):
                write.result = result
                write.done = True
            self.commits += 1
            self.writes += len(group.writes)
