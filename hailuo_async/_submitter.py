"""A batch's submissions: shielded once on the wire, recorded in the journal.

Each is made under the batch's active-job limit, so a 429 gives its place back and waits for
a job to end rather than fail a job that was never sent (:mod:`._retry` decides). A POST on
the wire is shielded from the caller's cancellation, so its task id is learnt and journaled;
leaving the batch waits ``SUBMISSION_GRACE`` for those, then cancels them.

Submissions run on a pool of worker tasks rather than on a task each: a task's start and end
cost more than the submission's own bookkeeping. The pool grows to ``max_workers`` (the
client's cap on requests in flight: more submissions at once could only wait for a place)
and then waits for more; jobs beyond it wait in the queue, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ._api import SubmissionRecorder
from ._bookkeeping import BatchBook, BatchJob
from ._limits import ActiveJobs
from ._models import VideoRequest
from .journal._batch import BatchJournal

__all__ = ["SUBMISSION_GRACE", "BatchSubmitter", "RunOne", "SubmitOne"]

# On leaving a batch, submissions already on the wire get this long to learn their task id:
# cut short, each would be a job that may have been paid for with no id to show for it.
SUBMISSION_GRACE = 10.0


class SubmitOne(Protocol):
    """How a batch submits one request (the API layer's ``submit``)."""

    async def __call__(
        self,
        request: VideoRequest,
        *,
        recorder: SubmissionRecorder | None = None,
        retry_rate_limited: bool = True,
        active_jobs: ActiveJobs | None = None,
    ) -> str: ...


RunOne = Callable[[BatchJob, Callable[[], None]], Awaitable[None]]
"""One job's submission and what follows it, given a ``landed`` function to call once its
answer is known (before anything that may wait long); if it ends without, it is called for it.
"""


class BatchSubmitter:
    """Submits a batch's jobs under its active-job limit; tracks the ones in flight.

    ``run`` is the batch's work for one job, run on a worker: it calls :meth:`submit` and
    acts on the answer. At most ``max_workers`` jobs run at once.
    """

    def __init__(
        self,
        submit: SubmitOne,
        *,
        run: RunOne,
        active_jobs: ActiveJobs,
        journal: BatchJournal,
        book: BatchBook,
        max_workers: int,
    ) -> None:
        self._submit = submit
        self._run = run
        self._active = active_jobs
        self._journal = journal
        self._book = book
        # Made only while wait_and_cancel waits: most landings then have nobody to wake.
        self._changed: asyncio.Event | None = None
        self._scopes: set[anyio.CancelScope] = set()
        # The pool: jobs not yet taken up, and the workers waiting for some (on a bare
        # future: see JobStream.__anext__).
        self._queue: deque[BatchJob] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._workers = 0
        self._max_workers = max_workers

    async def submit(self, job: BatchJob) -> str:
        """Submit the job (its place among the active jobs already taken); return its task id."""
        recorder = self._journal.recorder(job.key) if job.key is not None else None
        return await self._submit(job.request, recorder=recorder, active_jobs=self._active)

    def start(self, task_group: TaskGroup, job: BatchJob) -> None:
        """Run ``job`` on a worker of ``task_group``, shielded from its cancellation until
        :meth:`wait_and_cancel`.
        """
        self._queue.append(job)
        while self._idle:
            woken = self._idle.pop()
            if not woken.done():  # done: cancelled by wait_and_cancel while it waited
                woken.set_result(None)
                return
        if self._workers < self._max_workers:  # else a busy worker takes it up next
            self._workers += 1
            task_group.start_soon(self._work, task_group.cancel_scope)

    async def _work(self, group: anyio.CancelScope) -> None:
        # One landed function per worker, not per job: a worker runs one job at a time.
        done = True

        def landed() -> None:
            nonlocal done
            if not done:
                done = True
                self._book.submitting -= 1
                if self._changed is not None:
                    self._changed.set()
                    self._changed = None

        run = self._run
        # Shielded for its whole life, not once per submission (a cancel scope costs more
        # than a submission's own bookkeeping): wait_and_cancel ends it, busy or idle.
        with anyio.CancelScope(shield=True) as scope:
            self._scopes.add(scope)
            try:
                while True:
                    while self._queue:
                        if group.cancel_called:
                            # Work not yet begun is left to the cancellation, as a task not
                            # yet started would be: nothing was sent for it.
                            return
                        done = False
                        try:
                            await run(self._queue.popleft(), landed)
                        finally:
                            # Cancelled (on exit, after the grace), or ended without landing:
                            # no answer is coming to wait for.
                            if not done:
                                landed()
                    woken = asyncio.get_running_loop().create_future()
                    self._idle.append(woken)  # no await since the queue was found empty
                    await woken
            finally:
                self._workers -= 1
                self._scopes.discard(scope)

    async def wait_and_cancel(self, grace: float = SUBMISSION_GRACE) -> None:
        """Give the submissions on the wire ``grace`` seconds to land, then cancel them."""
        # Shielded: this also runs when the caller is being cancelled (Ctrl-C).
        with anyio.move_on_after(grace, shield=True):
            while self._book.submitting:
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()
        for scope in list(self._scopes):
            scope.cancel()
