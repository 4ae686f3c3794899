"""generate_many: submit a stream of requests under the active-job limit, yield each outcome.

Three kinds of task share one task group: a producer reads the requests lazily and submits
each one once a place among the active jobs is free (:mod:`._submitter`); the batch's
watcher polls the submitted ones; a finisher per ended job writes it to the journal,
downloads its video if asked, and hands its JobOutcome to the reader. A job's place is given
back only once its outcome has been taken, so a slow reader slows submissions instead of
piling up results (an outcome waiting for the reader still holds its job's place). The
counters live in :mod:`._bookkeeping`.

With a journal, each job is recorded before its POST and its task id as soon as it is known;
a rerun skips finished jobs, re-watches submitted ones and never resends one whose outcome
is unknown unless the client's ``on_unknown_submission`` says "resubmit".

A refusal of the account (:func:`~._refusals.refuses_the_account`: a refused key, a model
the key may not use, a balance that cannot pay) stops the submissions at the first one:
nothing was created, the job stays unsent, and so does every job not sent yet, each coming
out with that error (no place taken, no request made). Jobs already running are watched to
their end; a rerun once the account is put right submits the unsent ones as if new.

As one worker of a shared batch (a PostgreSQL journal, :mod:`._worker`), the producer first
adds the requests to the journal, then claims jobs under leases as places free up: it
submits the recorded ones (only while its lease holds), watches the submitted ones (taken
over from a worker that died), and ends when no job of the batch has work left. A heartbeat
task keeps the leases alive; leaving releases them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Literal, NoReturn

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from ._bookkeeping import (
    BatchBook,
    BatchCounts,
    BatchJob,
    LeftRunningJob,
    left_running_summary,
)
from ._download import copy_video, sweep_partial_downloads
from ._exceptions import (
    HailuoError,
    InvalidRequestError,
    JobTimeoutError,
    SubmissionUnknownError,
    TaskFailedError,
)
from ._limits import ActiveJobs
from ._models import JobOutcome, TaskResult, VideoRequest
from ._refusals import refuses_the_account
from ._retry import UnknownSubmissionPolicy
from ._submitter import SUBMISSION_GRACE, BatchSubmitter, SubmitOne
from ._sync import resolve
from ._taskgroup import OwnedTaskGroup
from ._watcher import TaskEvent, TaskWatcher
from ._worker import LeaseClock, WorkerSettings
from .journal import (
    InvalidTransitionError,
    JobKeyer,
    JobRecord,
    JobSpec,
    JobState,
    JobStore,
    JournalError,
    PostgresJobStore,
    ResumeAction,
    error_from_record,
)
from .journal._batch import BatchJournal

__all__ = [
    "SUBMISSION_GRACE",
    "BatchCounts",
    "BatchItem",
    "JobStream",
    "RequestSource",
]

BatchItem = VideoRequest | tuple[str, VideoRequest]
"""One item of a batch's source: a request, or a ``(key, request)`` pair for the journal."""
RequestSource = Iterable[BatchItem] | AsyncIterable[BatchItem]
"""What ``generate_many`` reads lazily: an iterable or async iterable of batch items."""
# Requests a worker adds to the shared journal per round trip.
_ADD_CHUNK = 500
# What a batch yields from the journal, without a request, for a job an earlier run ended.
_REPLAYED = frozenset({ResumeAction.FINISHED, ResumeAction.FAILED, ResumeAction.UNKNOWN})
# Ended jobs a run may submit again when asked (retry_failed, on_unknown_submission).
_RETRIED = frozenset({JobState.FAILED, JobState.UNKNOWN})
# Items of a synchronous source read between two turns given to the batch's other tasks.
_YIELD_EVERY = 16
logger = logging.getLogger("hailuo_async.batch")

# What an outcome's job holds until the reader takes the outcome: no place (a replay), the
# place of a job never accepted, or that of a submitted job that ended (or whose watch timed
# out: it may still be running, so it teaches the active-job limit nothing).
_Place = Literal["none", "unsubmitted", "completed", "timed_out"]


class JobStream:
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
        *,
        provider: str = "gateway",
        submit: SubmitOne,
        watcher: TaskWatcher,
        active_jobs: ActiveJobs,
        download: Callable[[TaskResult, Path], Awaitable[Path]],
        fetch_result: Callable[[str], Awaitable[TaskResult]] | None = None,
        journal: JobStore | str | os.PathLike[str] | None = None,
        download_to: str | os.PathLike[str] | None = None,
        retry_failed: bool = False,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
        batch: str = "default",
        worker: WorkerSettings | None = None,
        max_submitting: int,
    ) -> None:
        self._requests = requests
        self._provider = provider
        self._active = active_jobs
        self._watcher = watcher
        self._download_one = download
        self._fetch_result = fetch_result
        self._worker = worker
        self._leases = LeaseClock(worker.lease) if worker is not None else None
        self._journal = BatchJournal(
            journal,
            batch=batch,
            worker_id=worker.worker_id if worker is not None else None,
            leases=self._leases,
        )
        self._download_to = Path(download_to) if download_to is not None else None
        self._retry_failed = retry_failed
        self._on_unknown_submission: UnknownSubmissionPolicy = on_unknown_submission
        self._book = BatchBook()
        self._submitter = BatchSubmitter(
            submit,
            run=self._submit,
            active_jobs=active_jobs,
            journal=self._journal,
            book=self._book,
            max_workers=max_submitting,
        )
        # Outcomes wait here for the reader, each with the place it gives back once taken: so
        # while the reader lags, no more jobs start (a replayed outcome holds no place).
        self._outcomes: deque[tuple[JobOutcome, _Place]] = deque()
        self._reader_waiting: asyncio.Future[None] | None = None
        self._ended = False  # every outcome was taken and no more will come
        self._tasks = OwnedTaskGroup()
        self._fatal: Exception | None = None
        # The account's refusal that stopped the submissions (see the module's docstring).
        self._refused: HailuoError | None = None
        self._closing = False
        # A worker's claimed keys, and those whose submission is under way.
        self._held: set[str] = set()
        self._posting: set[str] = set()
        # Tasks whose end is being written and downloaded (no longer watched, not yet out).
        self._ending: set[str] = set()
        # Keys whose video this run tried to save and could not (a worker tries each once).
        self._not_downloaded: set[str] = set()
        self.claim_latencies: list[float] = []
        """Seconds each claim of a worker took (empty outside worker mode)."""

    @property
    def worker_id(self) -> str | None:
        """This worker's name in a shared batch (None for a batch of one process)."""
        return self._worker.worker_id if self._worker is not None else None

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

        async def setup(stack: AsyncExitStack) -> None:
            await self._journal.start(
                retry_failed=self._retry_failed,
                on_unknown_submission=self._on_unknown_submission,
                provider=self._provider,
            )
            if self._download_to is not None:  # a killed run's half-downloaded videos
                await sweep_partial_downloads(self._download_to, self._journal.task_ids)
            stack.push_async_callback(self._journal.aclose)
            if self._worker is not None:
                stack.push_async_callback(self._release_leases)
            await stack.enter_async_context(self._watcher)

        task_group = await self._tasks.open(setup)
        task_group.start_soon(self._produce)
        if self._journal.enabled or self._download_to is not None:
            task_group.start_soon(self._collect)
        else:  # nothing to write or fetch per ended job: its outcome is handed over at once
            self._watcher.hand_ended_to(self._task_ended)
        if self._worker is not None:
            task_group.start_soon(self._heartbeats, self._worker)
        return self

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
            # A bare future, not a Signal: the reader parks once per outcome or so.
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
            if self._worker is None:
                await self._start_each()
            else:
                await self._add_all()
                await self._work_claims(self._worker)
        except Exception as exc:  # the caller's source may raise anything
            self._fatal = self._fatal or exc
        self._book.all_read = True
        self._close_if_finished()

    async def _start_each(self) -> None:
        # Without a journal every job is new: nothing to look up or record per job.
        journal = self._journal if self._journal.enabled else None
        task_group = self._tasks.task_group
        index = 0
        async for item in _lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = _as_request(index, item)
            if journal is None:
                action, record = ResumeAction.SUBMIT, None
            else:
                # Once the account is refused, a new job is not even recorded: nothing of it
                # is sent, and a rerun records it as any new job.
                entry = await journal.entry(request, key, record=self._refused is None)
                action, record, key = entry.action, entry.record, entry.key
            job = BatchJob(index, request, key or None)
            index += 1
            self._book.read += 1
            match action:
                case ResumeAction.SUBMIT if self._refused is not None:
                    self._leave_unsent(job, self._refused, "none")
                case ResumeAction.SUBMIT:
                    await self._active.acquire()
                    # The reader left, or a fatal error came, while we waited for a place.
                    if self._stopping() or self._fatal is not None:
                        self._active.release(submitted=False)
                        return
                    self._start_submitting(job, task_group)
                case ResumeAction.WATCH:
                    assert record is not None
                    assert record.task_id is not None
                    await self._active.acquire()
                    self._active.on_submitted()
                    self._watch(job, record.task_id, submitted_at=None)
                case ResumeAction.LEASED:
                    # Another worker holds it and will report it: no outcome from this run.
                    self._book.skipped += 1
                case ResumeAction.FINISHED | ResumeAction.FAILED | ResumeAction.UNKNOWN:
                    assert record is not None
                    self._start_replay(job, action, record)
                case _:
                    _unhandled(action)

    def _start_submitting(self, job: BatchJob, task_group: TaskGroup) -> None:
        self._book.submitting += 1
        if job.key is not None:
            self._posting.add(job.key)
        self._submitter.start(task_group, job)

    async def _submit(self, job: BatchJob, landed: Callable[[], None]) -> None:
        """Submit the job and act on the answer (run on a submission worker, shielded)."""
        if self._stopping():  # started just as the reader left: never sent, nothing to do
            landed()
            self._active.release(submitted=False)
            self._close_if_finished()
            self._done_posting(job)
            return
        if self._refused is not None:  # the account was refused while this job waited
            landed()
            self._leave_unsent(job, self._refused, "unsubmitted")
            self._done_posting(job)
            return
        try:
            task_id = await self._submitter.submit(job)
        except InvalidTransitionError as exc:
            if self._worker is None:
                raise
            # The lease ran out and another worker has the job now: no POST was sent.
            logger.warning("job %r dropped, not submitted: %s", job.key, exc)
            self._book.skipped += 1
            landed()
            self._active.release(submitted=False)
            self._close_if_finished()
            self._done_posting(job)
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
            self._done_posting(job)
            return
        self._active.on_submitted()
        if self._journal.enabled:
            await self._journal.submitted(job.key, task_id)
        self._watch(job, task_id, submitted_at=time.monotonic())
        landed()
        self._done_posting(job)

    def _leave_unsent(self, job: BatchJob, refusal: HailuoError, place: _Place) -> None:
        """Yield a job not sent because the account was refused (see the module's docstring).

        Its journal entry, if any, is left as it is: recorded (or failed, or unknown, for a
        retry that was not made), for a rerun to act on as before.
        """
        self._book.finishing += 1
        self._hand_over(job.outcome(error=refusal), place)

    def _done_posting(self, job: BatchJob) -> None:
        # Called on every way out of _submit but being cut short on exit: that job's lease
        # is left to run out (its POST may have left).
        if job.key is not None:
            self._posting.discard(job.key)

    # -- working a shared batch ------------------------------------------------------------

    def _shared_store(self) -> PostgresJobStore:
        store = self._journal.store
        assert isinstance(store, PostgresJobStore)
        return store

    async def _add_all(self) -> None:
        """Record the requests in the shared journal (those recorded already are left).

        What earlier runs left of them is used as in a batch of one process: ended jobs are
        replayed, and failed (or unknown) ones put back for the workers to submit when
        ``retry_failed`` (or ``on_unknown_submission="resubmit"``) asks for it.
        """
        store = self._shared_store()
        keyer = JobKeyer()
        chunk: list[tuple[BatchJob, JobSpec]] = []
        index = 0
        async for item in _lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = _as_request(index, item)
            spec = keyer.spec(request, key)
            chunk.append((BatchJob(index, request, spec.key), spec))
            index += 1
            if len(chunk) >= _ADD_CHUNK:
                await self._add_chunk(store, chunk)
                chunk = []
        if chunk:
            await self._add_chunk(store, chunk)

    async def _add_chunk(
        self, store: PostgresJobStore, chunk: list[tuple[BatchJob, JobSpec]]
    ) -> None:
        await store.record([spec for _, spec in chunk])
        retry: dict[str, int] = {}
        for job, spec in chunk:
            entry = self._journal.planned(spec.key)
            if entry.record is None:
                continue
            if self._download_to is not None and _undownloaded(entry.record):
                # Fetched under a lease once the batch has no other work (_fetch_undownloaded):
                # a worker that has the same folder may be fetching it now.
                continue
            if entry.action in _REPLAYED:
                self._book.read += 1
                self._start_replay(job, entry.action, entry.record)
            elif entry.action is ResumeAction.SUBMIT and entry.record.state in _RETRIED:
                retry[spec.key] = entry.record.attempts
        await store.requeue(retry)

    async def _work_claims(self, worker: WorkerSettings) -> None:
        """Claim jobs as places free up, until no job of the batch has work left."""
        store = self._shared_store()
        while self._fatal is None and self._refused is None:
            await self._active.acquire()
            if self._stopping() or self._fatal is not None:
                self._active.release(submitted=False)
                return
            # The job for this place, and one for each further place this worker may take
            # now (its fair share, with others sharing the account): a job claimed beyond
            # them would wait here, leased, while another worker could run it.
            want = min(worker.claim, 1 + self._active.room)
            started = time.monotonic()
            records = await store.claim(worker.worker_id, want, worker.lease)
            self.claim_latencies.append(time.monotonic() - started)
            if not records:
                self._active.release(submitted=False)
                idle = not (self._book.submitting or self._book.running or self._book.finishing)
                if idle and not await store.work_left(worker.worker_id):
                    if await self._fetch_undownloaded(store, worker):
                        continue
                    return
                await anyio.sleep(worker.idle_poll)
                continue
            self._held.update(record.key for record in records)
            assert self._leases is not None
            self._leases.claimed((record.key for record in records), started)
            # Each job starts as soon as it has its place, never holding a place idle while
            # waiting for the next: places held idle across processes sharing one cap could
            # wait for each other for ever.
            for number, record in enumerate(records):
                if number:
                    await self._active.acquire()
                if self._stopping():
                    self._active.release(submitted=False)
                    return
                self._start_claimed(record)

    async def _fetch_undownloaded(self, store: PostgresJobStore, worker: WorkerSettings) -> bool:
        """Fetch the videos of the batch's finished jobs nobody saved; False if there are none.

        Asked once the batch has no other work left (it costs a scan of the batch). Each
        is leased like a claimed job, downloaded from a fresh URL and yielded as a replayed
        outcome. One whose download failed in this run (here, or as its job ended) is not
        tried again by this worker: the next worker, or run, tries it.
        """
        if self._download_to is None:
            return False
        started = time.monotonic()
        records = await store.claim_undownloaded(
            worker.worker_id, worker.claim, worker.lease, tried=self._not_downloaded
        )
        if not records:
            return False
        self._held.update(record.key for record in records)
        assert self._leases is not None
        self._leases.claimed((record.key for record in records), started)
        for record in records:
            job = BatchJob(record.index, record.to_request(), record.key)
            self._book.read += 1
            self._start_replay(job, ResumeAction.FINISHED, record)
        return True

    def _start_claimed(self, record: JobRecord) -> None:
        task_id = record.task_id
        if record.key in self._posting or (
            task_id is not None and (task_id in self._book.running or task_id in self._ending)
        ):
            # This worker's own lease ran out (a database restart, a long stall) and it has
            # claimed the job back: it is still on it, so working it again would report it
            # twice and hold a second place for it.
            self._active.release(submitted=False)
            return
        job = BatchJob(record.index, record.to_request(), record.key)
        self._book.read += 1
        if record.state is JobState.SUBMITTED and record.task_id is not None:
            # Its worker died while watching it: the task runs on, watch it here.
            self._active.on_submitted()
            self._watch(job, record.task_id, submitted_at=None)
        else:
            self._start_submitting(job, self._tasks.task_group)

    async def _heartbeats(self, worker: WorkerSettings) -> None:
        store = self._shared_store()
        while True:
            await anyio.sleep(worker.heartbeat_every)
            asked_at = time.monotonic()
            try:
                await store.heartbeat(worker.worker_id, worker.lease)
                assert self._leases is not None
                self._leases.renewed(asked_at, time.monotonic())
            except JournalError as exc:  # the next beat tries again; fencing guards the POSTs
                logger.warning("heartbeat of worker %r failed: %s", worker.worker_id, exc)

    async def _release_leases(self) -> None:
        """Give back the leases of jobs left unfinished, so other workers take them at once.

        A job whose submission was cut short keeps its lease: it runs out, and the job
        becomes unknown (the POST may have left), never sent again unasked.
        """
        assert self._worker is not None
        keys = sorted(self._held - self._posting)
        if not keys:
            return
        with anyio.move_on_after(SUBMISSION_GRACE, shield=True):
            try:
                await self._shared_store().release(self._worker.worker_id, keys)
            except JournalError as exc:  # the leases run out by themselves
                logger.warning("could not release the leases: %s", exc)

    def _stopping(self) -> bool:
        # A method, not the attribute: it changes while this task awaits.
        return self._closing

    def _watch(self, job: BatchJob, task_id: str, *, submitted_at: float | None) -> None:
        # submitted_at is None for a task an earlier run (or another worker) submitted.
        self._book.started_running(task_id, job, submitted_here=submitted_at is not None)
        # A job with a webhook ends by push (client.handle_webhook); polls are its backstop.
        pushed = job.request.webhook_url is not None
        self._watcher.add(task_id, submitted_at=submitted_at, pushed=pushed)

    def _start_replay(self, job: BatchJob, action: ResumeAction, record: JobRecord) -> None:
        self._book.finishing += 1
        self._tasks.task_group.start_soon(self._replay, job, action, record)

    async def _replay(self, job: BatchJob, action: ResumeAction, record: JobRecord) -> None:
        """Yield what an earlier run of the batch already knows about this job."""
        error: HailuoError | None = None
        if action is ResumeAction.FINISHED and record.result is not None:
            result = record.result
            path = Path(record.path) if record.path is not None else None
            if self._download_to is not None and not _saved_in(path, self._download_to):
                try:
                    path, result, error = await self._save_again(job, result, path)
                except InvalidTransitionError as exc:
                    if self._worker is None:
                        raise
                    self._left_to_another(job, exc)  # its lease on the video ran out meanwhile
                    return
            outcome = job.outcome(
                task_id=record.task_id, result=result, error=error, path=path, replayed=True
            )
        elif action is ResumeAction.UNKNOWN:
            error = SubmissionUnknownError(
                job.request, reason=record.error or "an earlier run stopped while submitting"
            )
            outcome = job.outcome(error=error, replayed=True)
        else:
            error = error_from_record(record)
            outcome = job.outcome(task_id=record.task_id, error=error, replayed=True)
        self._hand_over(outcome, "none")

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
        # A worker that downloads holds the finished job until its video is saved, so no
        # other worker fetches it meanwhile (see _fetch_undownloaded).
        hold = self._worker.lease if self._worker and self._download_to is not None else None
        path: Path | None = None
        download_error: HailuoError | None = None
        try:
            await self._journal.ended(job.key, outcome, hold_for=hold)
            if isinstance(outcome, TaskResult) and outcome.ok and self._download_to is not None:
                path, download_error = await self._download(job, outcome)
        except InvalidTransitionError as exc:
            if self._worker is None:
                raise
            # This worker's lease ran out (it was stopped, or cut off from the database) and
            # another took the job over (or its video, while this one downloaded it): that
            # one reports it, once.
            self._left_to_another(job, exc)
            self._book.handed_off(task_id)
            self._active.release(submitted=True)
            self._active.on_completed()
            return
        self._hand_over_ended(job, task_id, outcome, path, download_error)

    def _left_to_another(self, job: BatchJob, reason: InvalidTransitionError) -> None:
        """A job another worker took over: it reports the job, nothing is yielded here."""
        logger.warning("job %r left to the worker that took it over: %s", job.key, reason)
        self._book.finishing -= 1
        self._close_if_finished()

    def _hand_over_ended(
        self,
        job: BatchJob,
        task_id: str,
        outcome: TaskResult | HailuoError,
        path: Path | None = None,
        download_error: HailuoError | None = None,
    ) -> None:
        place: _Place = "completed"
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

    async def _save_again(
        self, job: BatchJob, result: TaskResult, saved: Path | None
    ) -> tuple[Path | None, TaskResult, HailuoError | None]:
        """A replayed job's video, into ``download_to``, and the result it came with:
        copied from where an earlier run saved it (another folder), else downloaded from a
        fresh URL (the one journaled may have expired, or be what failed). A shared batch's
        worker leaves the videos other workers saved where they are, in their own folders."""
        assert self._download_to is not None
        if saved is not None and self._worker is not None:
            return saved, result, None
        if saved is None or not await anyio.Path(saved).is_file():
            # Finished and paid, its video not on disk: fetched now.
            result = await self._fresh(result)
            path, error = await self._download(job, result)
            return path, result, error
        try:
            path = await copy_video(saved, self._download_to)
        except HailuoError as exc:
            return None, result, exc
        await self._journal.downloaded(job.key, path)
        return path, result, None

    async def _download(
        self, job: BatchJob, result: TaskResult
    ) -> tuple[Path | None, HailuoError | None]:
        assert self._download_to is not None
        try:
            path = await self._download_one(result, self._download_to)
        except HailuoError as exc:
            if job.key is not None:
                self._not_downloaded.add(job.key)
            return None, exc
        await self._journal.downloaded(job.key, path)
        return path, None

    async def _fresh(self, result: TaskResult) -> TaskResult:
        """The task's result asked for again (one GET); the one given if that fails or the
        task does not answer a finished result with a video (the download then says why)."""
        if self._fetch_result is None:
            return result
        try:
            fresh = await self._fetch_result(result.task_id)
        except HailuoError as exc:
            logger.warning("could not refresh the result of task %s: %s", result.task_id, exc)
            return result
        return fresh if fresh.ok and fresh.video is not None else result

    def _hand_over(self, outcome: JobOutcome, place: _Place) -> None:
        """Queue a job's outcome for the reader (its job counted as finishing until taken)."""
        self._book.yielded(outcome)
        self._outcomes.append((outcome, place))
        self._wake_reader()

    def _taken(self, outcome: JobOutcome, place: _Place) -> None:
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
            resolve(self._reader_waiting)  # unless a reader cancelled while it waited
            self._reader_waiting = None

    def _close_if_finished(self) -> None:
        if self._book.finished and not self._ended:
            self._ended = True
            self._wake_reader()


def _saved_in(path: Path | None, folder: Path) -> bool:
    """True when the video ``path`` is a file in ``folder``."""
    return path is not None and path.parent.resolve() == folder.resolve() and path.is_file()


def _undownloaded(record: JobRecord) -> bool:
    """A finished job (paid for) whose video was never saved."""
    return record.state is JobState.FINISHED and record.path is None


def _unhandled(action: NoReturn) -> NoReturn:
    # mypy proves every ResumeAction is handled; a new one fails type-checking, not silently.
    raise AssertionError(f"unhandled resume action: {action!r}")


def _as_request(index: int, item: object) -> tuple[VideoRequest, str | None]:
    if isinstance(item, VideoRequest):
        return item, None
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], VideoRequest)
    ):
        return item[1], item[0]
    raise InvalidRequestError(
        "requests",
        f"item {index} is a {type(item).__name__}, not a VideoRequest or a (key, VideoRequest)",
    )


async def _lazily(requests: RequestSource) -> AsyncIterator[object]:
    # Typed as object: callers' iterables are checked item by item, not trusted.
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for number, request in enumerate(requests, 1):
            yield request
            # Let the batch's other tasks run during a long synchronous source. Not after
            # every item: the producer mostly waits for a place anyway, and a turn of the
            # loop per job is a cost every job pays.
            if number % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
