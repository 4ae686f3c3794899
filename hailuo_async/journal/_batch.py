"""What one run of ``generate_many`` writes to its journal, and reads back when it resumes."""

from __future__ import annotations

import os
from pathlib import Path

from .._exceptions import HailuoError, SubmissionUnknownError, TaskFailedError
from .._models import TaskResult, VideoRequest
from .._refusals import created_nothing, refuses_the_job
from .._retry import UnknownSubmissionPolicy
from .._worker import LeaseClock
from ._errors import JobConflictError, JournalProviderError, LeaseLostError
from ._keys import JobKeyer
from ._open import store_for
from ._postgres import PostgresJobStore
from ._resume import ResumeAction, ResumeEntry, ResumePlan
from ._sqlite import SQLiteJobStore
from ._store import JobStore, SharedJobStore

__all__ = ["BatchJournal"]


class BatchJournal:
    """A batch's view of its journal; without a store every job is new and nothing is kept.

    Every job of a journaled batch has a key; the other methods take ``None`` for a job of an
    unjournaled one and do nothing.

    Give it a path or a ``postgresql://`` URL (a journal it opens and closes, see
    :func:`store_for`) or an open :class:`JobStore`. A SQLite journal is held for the run
    (:meth:`SQLiteJobStore.hold`): a second run on the same file is refused before anything
    is read or written, since it would take this run's submissions for interrupted ones.
    """

    def __init__(
        self,
        journal: JobStore | str | os.PathLike[str] | None,
        *,
        batch: str = "default",
        worker_id: str | None = None,
        leases: LeaseClock | None = None,
        retry_failed: bool = False,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
    ) -> None:
        self._store: JobStore | None
        self._owned: SQLiteJobStore | PostgresJobStore | None = None
        if isinstance(journal, (str, os.PathLike)):
            self._store = self._owned = store_for(journal, batch=batch)
        else:
            self._store = journal
        self.batch = batch
        # What a rerun does with the jobs an earlier run failed, or left unknown.
        self._retry_failed = retry_failed
        self._on_unknown_submission: UnknownSubmissionPolicy = on_unknown_submission
        # A worker of a shared batch submits a job only while it holds the job's lease.
        self.worker_id = worker_id
        self._leases = leases
        # A worker reports each job's end through the shared store, under its lease.
        self._shared = (
            self._store
            if worker_id is not None and isinstance(self._store, SharedJobStore)
            else None
        )
        self._keyer = JobKeyer()
        self._plan = ResumePlan({})
        # The SQLite store this run holds, between start and aclose.
        self._running: SQLiteJobStore | None = None
        # An attribute, not a property: a batch without a journal asks it once per job.
        self.enabled = self._store is not None
        """True when the batch is journaled."""

    @property
    def store(self) -> JobStore | None:
        """The journal's store (None without a journal)."""
        return self._store

    async def start(self, *, provider: str = "gateway") -> None:
        """Open the journal if it is ours and read what an earlier run left.

        Raises :class:`JournalProviderError` when the batch was started through another
        provider than ``provider`` (before anything is sent).
        """
        store = self._store
        if store is None:
            return
        if isinstance(store, SQLiteJobStore):
            # Before anything is read: resuming turns `submitting` jobs into unknown ones,
            # and another run's are its submissions on the wire.
            store._begin_run()
            self._running = store
        try:
            if self._owned is not None:
                await self._owned.open()
            await self._bind(store, provider)
            self._plan = await store.resume(
                None,
                retry_failed=self._retry_failed,
                on_unknown_submission=self._on_unknown_submission,
            )
        except BaseException:
            await self.aclose()
            raise

    async def _bind(self, store: JobStore, provider: str) -> None:
        """Refuse a batch started through another provider (its task ids are that one's)."""
        recorded = await store.bind_provider(provider)
        if recorded != provider:
            raise JournalProviderError(self.batch, recorded=recorded, asked=provider)

    @property
    def task_ids(self) -> list[str]:
        """The task ids an earlier run of this batch journaled (empty before :meth:`start`)."""
        return [
            entry.record.task_id
            for entry in self._plan.entries.values()
            if entry.record is not None and entry.record.task_id is not None
        ]

    def planned(self, key: str) -> ResumeEntry:
        """What the journal said of ``key`` when the batch started (SUBMIT if it held none)."""
        return self._plan.entry_for(key)

    async def aclose(self) -> None:
        """Write what is pending, close the journal if it is ours, end the run's hold."""
        try:
            if self._owned is not None:
                await self._owned.aclose()
        finally:
            running, self._running = self._running, None
            if running is not None:
                running._end_run()

    async def entry(
        self, request: VideoRequest, key: str | None, *, record: bool = True
    ) -> ResumeEntry:
        """The job's key and what to do with it; a new job is recorded first (if ``record``)."""
        if self._store is None:
            return ResumeEntry(key=key or "", action=ResumeAction.SUBMIT)
        spec = self._keyer.spec(request, key)
        entry = self._plan.entry_for(spec.key)
        if entry.record is not None and entry.record.fingerprint != spec.fingerprint:
            # The key now names another request: its journal entry is not this job's.
            raise JobConflictError([spec.key])
        if entry.record is None and record:
            await self._store.record([spec])
        return entry

    def recorder(self, key: str | None) -> _JobRecorder | None:
        """What tells the journal of each POST of the job's submission (None: no journal)."""
        if self._store is None or key is None:
            return None
        return _JobRecorder(self._store, key, self.worker_id, self._leases)

    async def submitted(self, key: str | None, task_id: str) -> None:
        """Durably note the job's task id."""
        if self._store is not None and key is not None:
            await self._store.mark_submitted(key, task_id)

    async def submission_failed(self, key: str | None, error: HailuoError) -> None:
        """Note a submission that failed, or whose outcome cannot be known.

        A refusal that proves nothing was created and is not the job's own fault (the
        account refused, a 5xx or 429 past its retries, a connection never opened) writes
        nothing: the API layer already put the job back to ``recorded``, and a rerun
        submits it as if new. A refusal of the job itself (:func:`refuses_the_job`) is a
        failure, with nothing paid.
        """
        if self._store is None or key is None:
            return
        if isinstance(error, SubmissionUnknownError):
            await self._store.mark_unknown(key, error.reason)
        elif refuses_the_job(error) or not created_nothing(error):
            await self._store.mark_failed(key, error)

    async def ended(
        self,
        key: str | None,
        outcome: TaskResult | HailuoError,
        *,
        hold_for: float | None = None,
    ) -> None:
        """Note how the job's task ended.

        A worker of a shared batch whose lease ran out while another worker took the job over
        gets :class:`InvalidTransitionError` (for a success or a failure): the job is that
        worker's to report. ``hold_for``: a worker that downloads keeps a lease of that many
        seconds on a finished job until its video is saved.
        """
        if self._store is None or key is None:
            return
        if not isinstance(outcome, TaskResult):
            # The task could not be watched to its end (an unreadable or unknown id): it may
            # still be running and paid for, so it stays SUBMITTED and a rerun watches it again.
            return
        shared, worker_id = self._shared, self.worker_id
        if shared is not None:
            # InvalidTransitionError if another worker took the job over meanwhile, or
            # reported it first: of two workers watching the task, one reports it.
            if outcome.ok:
                await shared.mark_finished(key, outcome, worker_id=worker_id, hold_for=hold_for)
            else:
                await shared.mark_failed(key, TaskFailedError(outcome), worker_id=worker_id)
        elif outcome.ok:
            await self._store.mark_finished(key, outcome)
        else:
            # A job the service failed is FAILED, so that a rerun with retry_failed tries it.
            await self._store.mark_failed(key, TaskFailedError(outcome))

    async def downloaded(self, key: str | None, path: Path) -> None:
        """Note where the job's video was saved.

        A worker of a shared batch whose hold on the finished job ran out while another
        worker took its video over gets :class:`InvalidTransitionError`: that one reports it.
        """
        if self._store is None or key is None:
            return
        if self._shared is not None:
            await self._shared.mark_downloaded(key, path, worker_id=self.worker_id)
        else:
            await self._store.mark_downloaded(key, path)


class _JobRecorder:
    """Writes ``submitting`` just before each POST, and takes it back when one was refused.

    So a job still waiting for its turn (or in a backoff after a 503) when the process stops
    is found unsent on resume, not unknown.
    """

    def __init__(
        self, store: JobStore, key: str, worker_id: str | None, leases: LeaseClock | None
    ) -> None:
        self._store = store
        self._key = key
        self._worker_id = worker_id
        self._leases = leases

    async def before_send(self) -> None:
        # With a worker id, LeaseLostError if the lease ran out: the POST is not sent.
        await self._store.mark_submitting(self._key, worker_id=self._worker_id)
        if self._leases is None or self._worker_id is None or self._leases.holds(self._key):
            return
        # The lease was live when `submitting` was written, but this process was stopped
        # (or stalled) since, past what it surely knows of the lease: another worker may
        # hold the job, and its place among the active jobs, by now. Checked here, on the
        # local clock, as the POST would leave: it is not sent, and the job goes back for
        # a clean claim (by any worker) instead of becoming unknown.
        await self._store.mark_unsent(self._key)
        await self._store.release(self._worker_id, [self._key])
        raise LeaseLostError(
            self._key, "submitting", "submitted", detail="the lease may have run out meanwhile"
        )

    async def not_sent(self) -> None:
        await self._store.mark_unsent(self._key)
