"""A batch's bookkeeping: its jobs, its counters, and whether it has finished (no I/O here)."""

from __future__ import annotations

from pathlib import Path

import attrs

from ._exceptions import HailuoError
from ._models import JobOutcome, TaskResult, VideoRequest

__all__ = ["BatchBook", "BatchCounts", "BatchJob", "LeftRunningJob"]


@attrs.frozen
class BatchCounts:
    """A snapshot of a batch: jobs read, being submitted, running, ended, skipped; polls made.

    ``skipped`` counts jobs another worker holds (a shared journal's lease): this run leaves
    them alone and yields no outcome for them.
    """

    read: int
    submitting: int
    running: int
    succeeded: int
    failed: int
    active_limit: int
    skipped: int = 0
    polls: int = 0

    @property
    def done(self) -> int:
        """Jobs that have ended."""
        return self.succeeded + self.failed


@attrs.frozen
class LeftRunningJob:
    """A job of a batch left before its outcome was yielded: it may still run, and be paid.

    ``index`` is its place in the source, ``key`` its journal key (or the key given with
    it), ``task_id`` the task to watch later (``client.watch([...])``, ``hailuo watch``).
    """

    index: int
    key: str | None
    task_id: str


@attrs.define
class BatchJob:
    """One request of a batch: its place in the source, and its journal key if any."""

    index: int
    request: VideoRequest
    key: str | None

    def outcome(
        self,
        *,
        task_id: str | None = None,
        result: TaskResult | None = None,
        error: HailuoError | None = None,
        path: Path | None = None,
        replayed: bool = False,
    ) -> JobOutcome:
        """The job's JobOutcome."""
        return JobOutcome(
            index=self.index,
            request=self.request,
            task_id=task_id,
            result=result,
            error=error,
            key=self.key,
            path=str(path) if path is not None else None,
            replayed=replayed,
        )


@attrs.define
class BatchBook:
    """Where a batch stands: each job is read, then submitting, running, finishing, ended.

    The batch is finished once the source is read to its end and no job is submitting,
    running or finishing; then the stream of outcomes is closed.
    """

    read: int = 0
    submitting: int = 0
    finishing: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    all_read: bool = False
    running: dict[str, BatchJob] = attrs.field(factory=dict)
    # Every task id submitted or watched whose outcome the reader has not taken yet.
    unyielded: dict[str, BatchJob] = attrs.field(factory=dict)

    @property
    def finished(self) -> bool:
        """True when every job read has ended and nothing more will be read."""
        return self.all_read and not (self.submitting or self.running or self.finishing)

    def started_running(self, task_id: str, job: BatchJob) -> None:
        """The job's task ``task_id`` is being watched."""
        self.running[task_id] = job
        self.unyielded[task_id] = job

    def stopped_running(self, task_id: str) -> BatchJob:
        """The task ended: its job moves on to finishing."""
        self.finishing += 1
        return self.running.pop(task_id)

    def handed_off(self, task_id: str) -> None:
        """The task ended, but its job is another worker's to report: none is yielded here."""
        self.unyielded.pop(task_id, None)
        self.skipped += 1

    def yielded(self, outcome: JobOutcome) -> None:
        """An outcome is handed to the reader."""
        if outcome.ok:
            self.succeeded += 1
        else:
            self.failed += 1

    def handed_over(self, outcome: JobOutcome) -> None:
        """The reader took the outcome."""
        if outcome.task_id is not None:
            self.unyielded.pop(outcome.task_id, None)

    @property
    def left_running(self) -> tuple[LeftRunningJob, ...]:
        """The jobs with a task whose outcome was not taken, in source order."""
        jobs = [LeftRunningJob(job.index, job.key, task) for task, job in self.unyielded.items()]
        return tuple(sorted(jobs, key=lambda job: job.index))

    def counts(self, *, active_limit: int, polls: int) -> BatchCounts:
        """A snapshot of the counters."""
        return BatchCounts(
            read=self.read,
            submitting=self.submitting,
            running=len(self.running),
            succeeded=self.succeeded,
            failed=self.failed,
            active_limit=active_limit,
            skipped=self.skipped,
            polls=polls,
        )
