"""What every batch shares, whatever its mode: places, submissions, watching, the reader.

Three kinds of task share one task group: a producer (the mode's: :mod:`._plain`,
:mod:`._journaled`, :mod:`._worker`) reads or claims the jobs and submits each one once a
place among the active jobs is free (:mod:`.._submitter`); the batch's watcher polls the
submitted ones; a finisher per ended job writes it to the journal, downloads its video if
asked, and hands its JobOutcome to the reader. A job's place is given back only once its
outcome has been taken, so a slow reader slows submissions instead of piling up results (an
outcome waiting for the reader still holds its job's place). The counters live in
:mod:`.._bookkeeping`.

A refusal of the account (:func:`~.._refusals.refuses_the_account`: a refused key, a model
the key may not use, a balance that cannot pay) stops the submissions at the first one:
nothing was created, the job stays unsent, and so does every job not sent yet, each coming
out with that error (no place taken, no request made). Jobs already running are watched to
their end; a rerun once the account is put right submits the unsent ones as if new.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Literal

import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .._bookkeeping import BatchBook, BatchCounts, BatchJob, LeftRunningJob, left_running_summary
from .._exceptions import HailuoError, JobTimeoutError, TaskFailedError
from .._limits import ActiveJobs
from .._models import JobOutcome, TaskResult
from .._refusals import refuses_the_account
from .._submitter import BatchSubmitter, SubmitOne
from .._taskgroup import OwnedTaskGroup
from .._watcher import TaskEvent, TaskWatcher
from ..journal import InvalidTransitionError, JournalError
from ..journal._batch import BatchJournal
from ._source import RequestSource

__all__ = ["BatchWiring", "JobStream", "Place"]

logger = logging.getLogger("hailuo_async.batch")

# What an outcome's job holds until the reader takes the outcome: no place (a replay), the
# place of a job never accepted, or that of a submitted job that ended (or whose watch timed
# out: it may still be running, so it teaches the active-job limit nothing).
Place = Literal["none", "unsubmitted", "completed", "timed_out"]


@attrs.frozen(kw_only=True)
class BatchWiring:
    """What a batch borrows from its client: how it submits, watches and downloads jobs."""

    provider: str
    submit: SubmitOne
    watcher: TaskWatcher
    active_jobs: ActiveJobs
    download: Callable[[TaskResult, Path], Awaitable[Path]]
    fetch_result: Callable[[str], Awaitable[TaskResult]] | None
    max_submitting: int


class JobStream(abc.ABC):
    """The outcomes of a batch, in completion order; see ``HailuoClient.generate_many``.

    Use it as ``async with client.generate_many(requests) as outcomes: async for outcome in
    outcomes: ...``. Leaving the ``async with`` (break, exception, cancellation) stops
    submitting and polling at once (submissions already on the wire get a short grace to
    bring their task id back). :attr:`counts` and :meth:`events` tell where it stands;
    :attr:`left_running` which jobs were left before their outcome was yielded.
    """

    def __init__(
        self,
        requests: RequestSource,
        wiring: BatchWiring,
        *,
        journal: BatchJournal,
        download_to: Path | None,
    ) -> None:
        self._requests = requests
        self._provider = wiring.provider
        self._active = wiring.active_jobs
        self._watcher = wiring.watcher
        self._download_one = wiring.download
        self._fetch_result = wiring.fetch_result
        self._journal = journal
        self._download_to = download_to
        self._book = BatchBook()
        self._submitter = BatchSubmitter(
            wiring.submit,
            run=self._submit,
            active_jobs=wiring.active_jobs,
            journal=journal,
            book=self._book,
            max_workers=wiring.max_submitting,
        )
        # Outcomes wait here for the reader, each with the place it gives back once taken: so
        # while the reader lags, no more jobs start (a replayed outcome holds no place).
        self._outcomes: deque[tuple[JobOutcome, Place]] = deque()
        self._reader_waiting: asyncio.Future[None] | None = None
        self._ended = False  # every outcome was taken and no more will come
        self._tasks = OwnedTaskGroup()
        self._fatal: Exception | None = None
        # The account's refusal that stopped the submissions (see the module's docstring).
        self._refused: HailuoError | None = None
        self._closing = False
        # Tasks whose end is being written and downloaded (no longer watched, not yet out).
        self._ending: set[str] = set()
        self.claim_latencies: list[float] = []
        """Seconds each claim of a worker took (empty outside worker mode)."""

    @property
    def worker_id(self) -> str | None:
        """This worker's name in a shared batch (None for a batch of one process)."""
        return None

    @property
    def counts(self) -> BatchCounts:
        """Where the batch stands now."""
        return self._book.counts(active_limit=self._active.value, polls=self._watcher.polls)

    @property
    def left_running(self) -> tuple[LeftRunningJob, ...]:
        """Jobs submitted whose outcome was not yielded: after an early exit, still running.

        Each may be running (and paid for) at the service; watch them later with
        ``client.watch([job.task_id for job in outcomes.left_running])``. Empty once every
        outcome was yielded. A journaled batch also finds them again when rerun. Jobs the
        service had ended are in :attr:`left_unread` instead.
        """
        return self._book.left_running

    @property
    def left_unread(self) -> tuple[LeftRunningJob, ...]:
        """Jobs whose task the service had ended when the batch was left, outcome unread.

        Nothing more is paid for them; ``client.watch`` on their ids gives their results
        (a journaled batch replays them when rerun).
        """
        return self._book.left_unread

    def events(self, *, max_buffer: int = 1024) -> MemoryObjectReceiveStream[TaskEvent]:
        """A stream of the batch's task events from now on (see :meth:`TaskWatcher.events`).

        Use it as ``with outcomes.events() as events:``; a lagging reader loses events, never
        outcomes.
        """
        return self._watcher.events(max_buffer=max_buffer)

    async def __aenter__(self) -> JobStream:
        if self._download_to is not None:
            self._download_to.mkdir(parents=True, exist_ok=True)
        task_group = await self._tasks.open(self._setup)
        task_group.start_soon(self._produce)
        if self._journal.enabled or self._download_to is not None:
            task_group.start_soon(self._collect)
        else:  # nothing to write or fetch per ended job: its outcome is handed over at once
            self._watcher.hand_ended_to(self._task_ended)
        return self

    async def _setup(self, stack: AsyncExitStack) -> None:
        """Open what the batch runs on, each closed by ``stack`` when the batch is left."""
        await stack.enter_async_context(self._watcher)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._tasks.is_open:
            return
        self._closing = True
        await self._submitter.wait_and_cancel()
        await self._tasks.close()
        left = self.left_running
        if left:
            logger.warning("%s", left_running_summary(left, self._journal.store))

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> JobOutcome:
        if not self._tasks.is_open:
            raise RuntimeError(
                "use the batch inside `async with client.generate_many(...) as outcomes`"
            )
        while not self._outcomes:
            if self._ended:
                if self._fatal is not None:
                    raise self._fatal
                raise StopAsyncIteration
            # A bare future, not an Event, here and for the submitter's idle workers: Events
            # cost 8,400 more instructions per job (0.7 %, benchmarks.profile --instructions).
            self._reader_waiting = waiting = asyncio.get_running_loop().create_future()
            await waiting
        # No await from here on: a cancelled reader never loses an outcome it was given.
        outcome, place = self._outcomes.popleft()
        self._taken(outcome, place)
        return outcome

    # -- producing -------------------------------------------------------------------------

    async def _produce(self) -> None:
        # A source that fails (a bad item, or an error raised while making one) stops the
        # reading only: the jobs already submitted run on and are yielded, then the error is
        # raised, so no paid job's outcome is lost to a bad line further down.
        try:
            await self._produce_jobs()
        except Exception as exc:  # the caller's source may raise anything
            self._fatal = self._fatal or exc
        self._book.all_read = True
        self._close_if_finished()

    @abc.abstractmethod
    async def _produce_jobs(self) -> None:
        """Start every job of the batch (each mode says where its jobs come from)."""

    async def _start_new(self, job: BatchJob, task_group: TaskGroup) -> bool:
        """Submit a job never sent once it has a place; False when the batch stops meanwhile.

        Once the account is refused, the job is left unsent instead.
        """
        if self._refused is not None:
            self._leave_unsent(job, self._refused, "none")
            return True
        await self._active.acquire()
        # The reader left, or a fatal error came, while we waited for a place.
        if self._stopping() or self._fatal is not None:
            self._active.release(submitted=False)
            return False
        self._start_submitting(job, task_group)
        return True

    def _start_submitting(self, job: BatchJob, task_group: TaskGroup) -> None:
        self._book.submitting += 1
        self._submitter.start(task_group, job)

    async def _submit(self, job: BatchJob, landed: Callable[[], None]) -> None:
        """Submit the job and act on the answer (run on a submission worker, shielded)."""
        if self._stopping():  # started just as the reader left: never sent, nothing to do
            landed()
            self._active.release(submitted=False)
            self._close_if_finished()
            return
        if self._refused is not None:  # the account was refused while this job waited
            landed()
            self._leave_unsent(job, self._refused, "unsubmitted")
            return
        try:
            task_id = await self._submitter.submit(job)
        except InvalidTransitionError as exc:
            if not self._taken_over(job, exc):
                raise
            self._book.skipped += 1
            landed()
            self._active.release(submitted=False)
            self._close_if_finished()
            return
        except HailuoError as exc:
            # A journal that cannot write stops the batch; a refused account, its submissions.
            if isinstance(exc, JournalError):
                self._fatal = exc
            if refuses_the_account(exc):
                self._refused = self._refused or exc
            await self._journal.submission_failed(job.key, exc)
            # Counted as finishing until the reader takes its outcome: the batch must not end
            # while this outcome waits for the reader (a lost outcome, found by the soak).
            self._book.finishing += 1
            landed()
            self._hand_over(job.outcome(error=exc), "unsubmitted")
            return
        self._active.on_submitted()
        if self._journal.enabled:
            await self._journal.submitted(job.key, task_id)
        self._watch(job, task_id, submitted_at=time.monotonic())
        landed()

    def _taken_over(self, job: BatchJob, exc: InvalidTransitionError) -> bool:
        """True when the journal refused the submission because another worker has the job.

        Never in a batch of one process: there, a refused change is a bug, raised.
        """
        return False

    def _leave_unsent(self, job: BatchJob, refusal: HailuoError, place: Place) -> None:
        """Yield a job not sent because the account was refused (see the module's docstring).

        Its journal entry, if any, is left as it is: recorded (or failed, or unknown, for a
        retry that was not made), for a rerun to act on as before.
        """
        self._book.finishing += 1
        self._hand_over(job.outcome(error=refusal), place)

    def _stopping(self) -> bool:
        # A method, not the attribute: it changes while this task awaits.
        return self._closing

    def _watch(self, job: BatchJob, task_id: str, *, submitted_at: float | None) -> None:
        # submitted_at is None for a task an earlier run (or another worker) submitted.
        self._book.started_running(task_id, job, submitted_here=submitted_at is not None)
        # A job with a webhook ends by push (client.handle_webhook); polls are its backstop.
        pushed = job.request.webhook_url is not None
        self._watcher.add(task_id, submitted_at=submitted_at, pushed=pushed)

    # -- finishing -------------------------------------------------------------------------

    async def _collect(self) -> None:
        # Journal writes and downloads take time: finish jobs side by side.
        task_group = self._tasks.task_group
        while True:
            task_id, outcome = await self._watcher.next_outcome()
            job = self._book.stopped_running(task_id, ended=isinstance(outcome, TaskResult))
            self._ending.add(task_id)
            task_group.start_soon(self._finish, job, task_id, outcome)

    def _task_ended(self, task_id: str, outcome: TaskResult | HailuoError) -> None:
        """A watched task ended, in a batch with nothing to write or fetch for it."""
        job = self._book.stopped_running(task_id, ended=isinstance(outcome, TaskResult))
        self._hand_over_ended(job, task_id, outcome)

    async def _finish(self, job: BatchJob, task_id: str, outcome: TaskResult | HailuoError) -> None:
        try:
            await self._finish_ended(job, task_id, outcome)
        finally:
            self._ending.discard(task_id)

    async def _finish_ended(
        self, job: BatchJob, task_id: str, outcome: TaskResult | HailuoError
    ) -> None:
        """Journal how the job's task ended, save its video, hand its outcome over."""
        await self._journal_end(job, outcome)
        path: Path | None = None
        download_error: HailuoError | None = None
        if isinstance(outcome, TaskResult) and outcome.ok and self._download_to is not None:
            path, download_error = await self._download(job, outcome)
        self._hand_over_ended(job, task_id, outcome, path, download_error)

    async def _journal_end(self, job: BatchJob, outcome: TaskResult | HailuoError) -> None:
        await self._journal.ended(job.key, outcome)

    def _hand_over_ended(
        self,
        job: BatchJob,
        task_id: str,
        outcome: TaskResult | HailuoError,
        path: Path | None = None,
        download_error: HailuoError | None = None,
    ) -> None:
        place: Place = "completed"
        if isinstance(outcome, TaskResult):
            result: TaskResult | None = outcome
            error: HailuoError | None = download_error
            if error is None and not outcome.ok:
                error = TaskFailedError(outcome)
        else:
            result, error = None, outcome
            if isinstance(outcome, JobTimeoutError):
                # It may still hold its place at the service: it teaches the limit nothing.
                place = "timed_out"
        if error is not None and refuses_the_account(error):
            # A refused poll refuses the key: submitting more would be refused too.
            self._refused = self._refused or error
        self._hand_over(job.outcome(task_id=task_id, result=result, error=error, path=path), place)

    async def _download(
        self, job: BatchJob, result: TaskResult
    ) -> tuple[Path | None, HailuoError | None]:
        assert self._download_to is not None
        try:
            path = await self._download_one(result, self._download_to)
        except HailuoError as exc:
            return None, exc
        await self._journal.downloaded(job.key, path)
        return path, None

    # -- handing over ----------------------------------------------------------------------

    def _hand_over(self, outcome: JobOutcome, place: Place) -> None:
        """Queue a job's outcome for the reader (its job counted as finishing until taken)."""
        self._book.yielded(outcome)
        self._outcomes.append((outcome, place))
        self._wake_reader()

    def _taken(self, outcome: JobOutcome, place: Place) -> None:
        """The reader took the outcome: its job's place is given back, the job is done."""
        self._book.handed_over(outcome)
        if place != "none":
            self._active.release(submitted=place != "unsubmitted")
            if place == "completed":
                self._active.on_completed()
        self._book.finishing -= 1
        self._close_if_finished()

    def _wake_reader(self) -> None:
        if self._reader_waiting is not None:
            if not self._reader_waiting.done():  # a reader may have cancelled while it waited
                self._reader_waiting.set_result(None)
            self._reader_waiting = None

    def _close_if_finished(self) -> None:
        if self._book.finished and not self._ended:
            self._ended = True
            self._wake_reader()
