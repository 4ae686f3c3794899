"""One worker of a shared batch (a :class:`~..extend.SharedJobStore`, e.g. PostgreSQL).

The producer first adds the requests to the journal (``client.work`` adds none), then
claims jobs under leases as places free up: it submits the recorded ones (only while its
lease holds), watches the submitted ones (taken over from a worker that died), and ends
when no job of the batch has work left. A heartbeat task keeps the leases alive; leaving
releases them. Everything else (submitting, watching, finishing, replaying what earlier
runs ended) is a journaled batch's (:mod:`._journaled`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from .._bookkeeping import BatchJob
from .._exceptions import HailuoError
from .._models import TaskResult
from .._retry import UnknownSubmissionPolicy
from .._submitter import SUBMISSION_GRACE
from .._worker import LeaseClock, WorkerSettings
from ..journal import InvalidTransitionError, JobRecord, JobState, JournalError
from ..journal._batch import BatchJournal
from ..journal._keys import JobKeyer, JobSpec
from ..journal._resume import ResumeAction
from ..journal._store import SharedJobStore
from ._core import BatchWiring
from ._journaled import JournaledStream
from ._source import RequestSource, as_request, lazily

__all__ = ["WorkerStream"]

logger = logging.getLogger("hailuo_async.batch")

# Requests a worker adds to the shared journal per round trip.
_ADD_CHUNK = 500
# What a batch yields from the journal, without a request, for a job an earlier run ended.
_REPLAYED = frozenset({ResumeAction.FINISHED, ResumeAction.FAILED, ResumeAction.UNKNOWN})
# Ended jobs a run may submit again when asked (retry_failed, on_unknown_submission).
_RETRIED = frozenset({JobState.FAILED, JobState.UNKNOWN})


class WorkerStream(JournaledStream):
    """One worker among any number working a batch in ``store``, under leases."""

    def __init__(
        self,
        requests: RequestSource,
        wiring: BatchWiring,
        *,
        store: SharedJobStore | str,
        batch: str,
        worker: WorkerSettings,
        download_to: Path | None,
        retry_failed: bool,
        on_unknown_submission: UnknownSubmissionPolicy,
    ) -> None:
        self._worker = worker
        self._leases = LeaseClock(worker.lease)
        journal = BatchJournal(
            store,
            batch=batch,
            worker_id=worker.worker_id,
            leases=self._leases,
            retry_failed=retry_failed,
            on_unknown_submission=on_unknown_submission,
        )
        super().__init__(requests, wiring, journal=journal, download_to=download_to)
        # The claimed keys, and those whose submission is under way.
        self._held: set[str] = set()
        self._posting: set[str] = set()
        # Keys whose video this run tried to save and could not (a worker tries each once).
        self._not_downloaded: set[str] = set()

    @property
    def worker_id(self) -> str | None:
        """This worker's name in a shared batch (None for a batch of one process)."""
        return self._worker.worker_id

    @property
    def _store(self) -> SharedJobStore:
        store = self._journal.store
        assert isinstance(store, SharedJobStore)
        return store

    async def __aenter__(self) -> WorkerStream:
        await super().__aenter__()
        self._tasks.task_group.start_soon(self._heartbeats)
        return self

    async def _open_journal(self, stack: AsyncExitStack) -> None:
        await super()._open_journal(stack)
        stack.push_async_callback(self._release_leases)

    async def _produce_jobs(self) -> None:
        await self._add_all()
        await self._work_claims()

    # -- adding the requests ---------------------------------------------------------------

    async def _add_all(self) -> None:
        """Record the requests in the shared journal (those recorded already are left).

        What earlier runs left of them is used as in a batch of one process: ended jobs are
        replayed, and failed (or unknown) ones put back for the workers to submit when
        ``retry_failed`` (or ``on_unknown_submission="resubmit"``) asks for it.
        """
        keyer = JobKeyer()
        chunk: list[tuple[BatchJob, JobSpec]] = []
        index = 0
        async for item in lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = as_request(index, item)
            spec = keyer.spec(request, key)
            chunk.append((BatchJob(index, request, spec.key), spec))
            index += 1
            if len(chunk) >= _ADD_CHUNK:
                await self._add_chunk(chunk)
                chunk = []
        if chunk:
            await self._add_chunk(chunk)

    async def _add_chunk(self, chunk: list[tuple[BatchJob, JobSpec]]) -> None:
        store = self._store
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

    # -- claiming --------------------------------------------------------------------------

    async def _work_claims(self) -> None:
        """Claim jobs as places free up, until no job of the batch has work left."""
        store, worker = self._store, self._worker
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
                    if await self._fetch_undownloaded():
                        continue
                    return
                await anyio.sleep(worker.idle_poll)
                continue
            self._held.update(record.key for record in records)
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

    async def _fetch_undownloaded(self) -> bool:
        """Fetch the videos of the batch's finished jobs nobody saved; False if there are none.

        Asked once the batch has no other work left (it costs a scan of the batch). Each
        is leased like a claimed job, downloaded from a fresh URL and yielded as a replayed
        outcome. One whose download failed in this run (here, or as its job ended) is not
        tried again by this worker: the next worker, or run, tries it.
        """
        if self._download_to is None:
            return False
        worker = self._worker
        started = time.monotonic()
        records = await self._store.claim_undownloaded(
            worker.worker_id, worker.claim, worker.lease, tried=self._not_downloaded
        )
        if not records:
            return False
        self._held.update(record.key for record in records)
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

    # -- leases ----------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        worker = self._worker
        while True:
            await anyio.sleep(worker.heartbeat_every)
            asked_at = time.monotonic()
            try:
                await self._store.heartbeat(worker.worker_id, worker.lease)
                self._leases.renewed(asked_at, time.monotonic())
            except JournalError as exc:  # the next beat tries again; fencing guards the POSTs
                logger.warning("heartbeat of worker %r failed: %s", worker.worker_id, exc)

    async def _release_leases(self) -> None:
        """Give back the leases of jobs left unfinished, so other workers take them at once.

        A job whose submission was cut short keeps its lease: it runs out, and the job
        becomes unknown (the POST may have left), never sent again unasked.
        """
        keys = sorted(self._held - self._posting)
        if not keys:
            return
        with anyio.move_on_after(SUBMISSION_GRACE, shield=True):
            try:
                await self._store.release(self._worker.worker_id, keys)
            except JournalError as exc:  # the leases run out by themselves
                logger.warning("could not release the leases: %s", exc)

    # -- where a worker differs from a batch of one process --------------------------------

    def _start_submitting(self, job: BatchJob, task_group: TaskGroup) -> None:
        if job.key is not None:
            self._posting.add(job.key)
        super()._start_submitting(job, task_group)

    async def _submit(self, job: BatchJob, landed: Callable[[], None]) -> None:
        await super()._submit(job, landed)
        # Not reached when the submission is cut short on exit: that job's lease is left to
        # run out (its POST may have left).
        if job.key is not None:
            self._posting.discard(job.key)

    def _taken_over(self, job: BatchJob, exc: InvalidTransitionError) -> bool:
        # The lease ran out and another worker has the job now: no POST was sent.
        logger.warning("job %r dropped, not submitted: %s", job.key, exc)
        return True

    async def _finish_ended(
        self, job: BatchJob, task_id: str, outcome: TaskResult | HailuoError
    ) -> None:
        try:
            await super()._finish_ended(job, task_id, outcome)
        except InvalidTransitionError as exc:
            # This worker's lease ran out (it was stopped, or cut off from the database) and
            # another took the job over (or its video, while this one downloaded it): that
            # one reports it, once.
            self._left_to_another(job, exc)
            self._book.handed_off(task_id)
            self._active.release(submitted=True)
            self._active.on_completed()

    async def _journal_end(self, job: BatchJob, outcome: TaskResult | HailuoError) -> None:
        # A worker that downloads holds the finished job until its video is saved, so no
        # other worker fetches it meanwhile (see _fetch_undownloaded).
        hold = self._worker.lease if self._download_to is not None else None
        await self._journal.ended(job.key, outcome, hold_for=hold)

    async def _replay(self, job: BatchJob, action: ResumeAction, record: JobRecord) -> None:
        try:
            await super()._replay(job, action, record)
        except InvalidTransitionError as exc:  # its lease on the video ran out meanwhile
            self._left_to_another(job, exc)

    def _left_to_another(self, job: BatchJob, reason: InvalidTransitionError) -> None:
        """A job another worker took over: it reports the job, nothing is yielded here."""
        logger.warning("job %r left to the worker that took it over: %s", job.key, reason)
        self._book.finishing -= 1
        self._close_if_finished()

    async def _download(
        self, job: BatchJob, result: TaskResult
    ) -> tuple[Path | None, HailuoError | None]:
        path, error = await super()._download(job, result)
        if error is not None and job.key is not None:
            self._not_downloaded.add(job.key)
        return path, error

    async def _save_again(
        self, job: BatchJob, result: TaskResult, saved: Path | None
    ) -> tuple[Path | None, TaskResult, HailuoError | None]:
        # The videos other workers saved stay where they are, in their own folders.
        if saved is not None:
            return saved, result, None
        return await super()._save_again(job, result, saved)


def _undownloaded(record: JobRecord) -> bool:
    """A finished job (paid for) whose video was never saved."""
    return record.state is JobState.FINISHED and record.path is None
