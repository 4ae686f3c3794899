"""A batch without a journal: read each request, submit it, yield its outcome.

Every job is new: nothing is looked up or recorded, and nothing is left for a rerun to find
(an early exit lists the jobs left running in ``left_running``).
"""

from __future__ import annotations

from .._bookkeeping import BatchJob
from ._core import JobStream
from ._source import as_request, lazily

__all__ = ["PlainStream"]


class PlainStream(JobStream):
    """A batch of one process, without a journal."""

    async def _produce_jobs(self) -> None:
        task_group = self._tasks.task_group
        index = 0
        async for item in lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = as_request(index, item)
            job = BatchJob(index, request, key or None)
            index += 1
            self._book.read += 1
            if not await self._start_new(job, task_group):
                return
