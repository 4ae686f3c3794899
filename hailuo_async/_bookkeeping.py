"""A batch's bookkeeping: its jobs, its counters, and whether it has finished (no I/O here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from ._decoding import slot_setters
from ._exceptions import HailuoError
from ._models import JobOutcome, TaskResult, VideoRequest

__all__ = ["BatchBook", "BatchCounts", "BatchJob", "LeftRunningJob", "left_running_summary"]

# The left_running WARNING: a few jobs named, the whole line kept readable.
_SAMPLE = 5
_MAX_SUMMARY = 2000
_MAX_KEY_SHOWN = 40


@attrs.frozen
class BatchCounts:
    """A snapshot of a batch: jobs read, being submitted, running, ended, skipped; polls made.

    ``skipped`` counts jobs another worker holds (a shared journal's lease): this run leaves
    them alone and yields no outcome for them. ``ended_here`` counts the jobs this run
    submitted whose task has ended: the run's own throughput (jobs an earlier run submitted,
    watched again or replayed from a journal, are not in it).
    """

    read: int
    submitting: int
    running: int
    succeeded: int
    failed: int
    active_limit: int
    skipped: int = 0
    polls: int = 0
    ended_here: int = 0

    @property
    def done(self) -> int:
        """Jobs that have ended."""
        return self.succeeded + self.failed


@attrs.frozen
class LeftRunningJob:
    """A job of a batch left before its outcome was yielded.

    In ``JobStream.left_running`` its task may still run, and be paid for; in
    ``JobStream.left_unread`` the service had ended it (its outcome was not read).
    ``index`` is its place in the source, ``key`` its journal key (or the key given with
    it), ``task_id`` the task to watch later (``client.watch([...])``, ``hailuo watch``).
    """

    index: int
    key: str | None
    task_id: str


_new = object.__new__
(
    _set_index,
    _set_request,
    _set_task_id,
    _set_result,
    _set_error,
    _set_key,
    _set_path,
    _set_replayed,
) = slot_setters(
    JobOutcome, ("index", "request", "task_id", "result", "error", "key", "path", "replayed")
)


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
        # Made as its __init__ would, without the keywords' dict and a bound __setattr__
        # per field (see slot_setters): one is made per job.
        outcome = _new(JobOutcome)
        _set_index(outcome, self.index)
        _set_request(outcome, self.request)
        _set_task_id(outcome, task_id)
        _set_result(outcome, result)
        _set_error(outcome, error)
        _set_key(outcome, self.key)
        _set_path(outcome, str(path) if path is not None else None)
        _set_replayed(outcome, replayed)
        return outcome


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
    # Those of them the service said had ended (the others may still run).
    ended: set[str] = attrs.field(factory=set)
    # Tasks this run submitted, until they end; then counted in ended_here.
    submitted_here: set[str] = attrs.field(factory=set)
    ended_here: int = 0

    @property
    def finished(self) -> bool:
        """True when every job read has ended and nothing more will be read."""
        return self.all_read and not (self.submitting or self.running or self.finishing)

    def started_running(self, task_id: str, job: BatchJob, *, submitted_here: bool) -> None:
        """The job's task ``task_id`` is being watched (``submitted_here``: this run made it)."""
        self.running[task_id] = job
        self.unyielded[task_id] = job
        if submitted_here:
            self.submitted_here.add(task_id)

    def stopped_running(self, task_id: str, *, ended: bool) -> BatchJob:
        """Its watch ended (``ended``: the service said the task ended): on to finishing."""
        self.finishing += 1
        if ended:
            self.ended.add(task_id)
            if task_id in self.submitted_here:
                self.submitted_here.discard(task_id)
                self.ended_here += 1
        return self.running.pop(task_id)

    def handed_off(self, task_id: str) -> None:
        """The task ended, but its job is another worker's to report: none is yielded here."""
        self.unyielded.pop(task_id, None)
        self.ended.discard(task_id)
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
            self.ended.discard(outcome.task_id)

    @property
    def left_running(self) -> tuple[LeftRunningJob, ...]:
        """The jobs whose task may still run and whose outcome was not taken, in source order."""
        return self._left(ended=False)

    @property
    def left_unread(self) -> tuple[LeftRunningJob, ...]:
        """The jobs whose task ended and whose outcome was not taken, in source order."""
        return self._left(ended=True)

    def _left(self, *, ended: bool) -> tuple[LeftRunningJob, ...]:
        jobs = [
            LeftRunningJob(job.index, job.key, task)
            for task, job in self.unyielded.items()
            if (task in self.ended) == ended
        ]
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
            ended_here=self.ended_here,
        )


def left_running_summary(left: Sequence[LeftRunningJob], journal: object | None) -> str:
    """One log line on jobs left running: how many, a few of them, where the whole list is.

    ``journal`` is the batch's store, if any (its repr names it, without secrets). At most
    2,000 characters however many jobs were left, and however long their keys.
    """
    where = (
        "every one is in the stream's left_running (watch them with client.watch(ids) or"
        " `hailuo watch`)"
    )
    if journal is not None:
        where += f", and in the journal {journal!r} (a rerun watches them)"
    shown = min(_SAMPLE, len(left))
    while True:
        sample = ", ".join(_named(job) for job in left[:shown])
        more = f" and {len(left) - shown} more" if len(left) > shown else ""
        line = (
            f"left the batch with {len(left)} job(s) still running at the service, which may"
            f" still be paid for: {sample}{more}; {where}"
        )
        if len(line) <= _MAX_SUMMARY or shown == 0:
            return line[:_MAX_SUMMARY]
        shown -= 1


def _named(job: LeftRunningJob) -> str:
    key = job.key or "-"
    if len(key) > _MAX_KEY_SHOWN:
        key = key[: _MAX_KEY_SHOWN - 1] + "…"
    return f"#{job.index} {key} {job.task_id}"
