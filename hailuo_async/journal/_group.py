"""Group commit: the writes that queue up while one transaction runs share the next one.

A durable commit costs an fsync (milliseconds); paying one per write would cap a run at a few
hundred transitions a second. Here every caller still waits for its own write to be durable,
but all the writes that arrived during a commit go out together in the following one, so the
cost of an fsync is shared by as many writers as are waiting. No background task is needed:
whichever waiting writer gets the lock first commits the whole open group. The store's
``apply`` runs the group: on its thread (SQLite) or on its connection (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio

from ._errors import JournalError

__all__ = ["GroupCommitter"]

W = TypeVar("W")


class _Write:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[W]):
    """Runs writes (of the store's kind ``W``) in shared transactions.

    ``apply`` gets the group's writes, runs them in one transaction, commits, and returns
    their results in order (or raises, and then every write of the group fails). A group,
    once taken, runs to its end even if the writer that took it is cancelled: its other
    writers wait for it, and what was committed must be known.
    """

    def __init__(self, apply: Callable[[list[W]], Awaitable[list[object]]]) -> None:
        self._apply = apply
        self._open: list[_Write] = []
        self._lock = anyio.Lock()
        self.commits = 0
        self.writes = 0

    async def write(self, fn: W) -> object:
        """Run ``fn`` in the next group's transaction; return its result once committed."""
        write = _Write(fn)
        self._open.append(write)
        # A write not yet done is always in the open group, so whoever holds the lock next
        # commits it; a writer cancelled while waiting leaves it there, for the next commit
        # or the store's flush.
        while not write.done:
            async with self._lock:
                if not write.done:
                    await self._commit_open()
        if write.error is not None:
            raise JournalError(f"the journal could not write: {write.error}") from write.error
        return write.result

    async def flush(self) -> None:
        """Commit the writes whose callers stopped waiting (cancelled) but that are still due."""
        async with self._lock:
            while self._open:
                await self._commit_open()

    @property
    def pending(self) -> int:
        """Writes waiting for the next commit."""
        return len(self._open)

    async def _commit_open(self) -> None:
        group, self._open = self._open, []
        with anyio.CancelScope(shield=True):
            try:
                results = await self._apply([write.fn for write in group])
            except BaseException as exc:
                # Handed to every waiting writer; none may wait for a group that will never come.
                for write in group:
                    write.error = exc
                    write.done = True
                if not isinstance(exc, Exception):
                    raise
                return
        for write, result in zip(group, results, strict=True):
            write.result = result
            write.done = True
        self.commits += 1
        self.writes += len(group)
