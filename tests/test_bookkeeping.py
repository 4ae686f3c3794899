"""A batch's bookkeeping, alone: counters and "is the batch finished", with no I/O."""

from __future__ import annotations

from hailuo_async import (
    ActiveJobs,
    HailuoError,
    PushRegistry,
    RequestLimits,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from hailuo_async._bookkeeping import BatchBook, BatchJob
from hailuo_async._limits import ActiveJobLimit, RequestLimiter
from hailuo_async._push import InMemoryPushRegistry


def job(index: int) -> BatchJob:
    """The batch's job number ``index``."""
    return BatchJob(index, VideoRequest(prompt=f"book {index}"), None)


def test_a_batch_is_finished_only_when_read_and_idle() -> None:
    """Finished needs the source read to its end and nothing submitting, running or finishing."""
    book = BatchBook()
    assert not book.finished  # the source is still being read
    book.read, book.submitting = 2, 1
    book.all_read = True
    assert not book.finished
    book.submitting -= 1
    book.started_running("t0", job(0))
    assert not book.finished
    assert book.stopped_running("t0") == job(0)
    assert book.finishing == 1
    assert not book.finished
    book.finishing -= 1
    assert book.finished


def test_counts_follow_the_jobs() -> None:
    """A snapshot counts running jobs, successes, failures, skips and polls."""
    book = BatchBook(read=4, skipped=1)
    book.started_running("t1", job(1))
    book.yielded(
        job(2).outcome(task_id="t2", result=TaskResult(task_id="t2", status=TaskStatus.SUCCEED))
    )
    book.yielded(job(3).outcome(error=HailuoError("failed")))
    counts = book.counts(active_limit=7, polls=12)
    assert (counts.read, counts.running, counts.skipped, counts.polls) == (4, 1, 1, 12)
    assert (counts.succeeded, counts.failed, counts.done, counts.active_limit) == (1, 1, 2, 7)


def test_the_in_memory_parts_keep_the_protocols() -> None:
    """The in-memory limiter, active-job limit and push registry are the shared protocols."""
    limiter: RequestLimits = RequestLimiter(max_in_flight=2)
    active: ActiveJobs = ActiveJobLimit(known=3)
    push: PushRegistry = InMemoryPushRegistry()
    assert limiter.max_in_flight == 2
    assert active.value == 3
    assert not push.is_wanted("t")
