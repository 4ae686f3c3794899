"""A batch's bookkeeping, alone: counters and "is the batch finished", with no I/O."""

from __future__ import annotations

from hailuo_async import HailuoError, LeftRunningJob, TaskResult, TaskStatus, VideoRequest
from hailuo_async._bookkeeping import BatchBook, BatchJob, left_running_summary
from hailuo_async._limits import ActiveJobLimit, RequestLimiter
from hailuo_async._push import InMemoryPushRegistry
from hailuo_async.extend import ActiveJobs, PushRegistry, RequestLimits


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
    book.started_running("t0", job(0), submitted_here=True)
    assert not book.finished
    assert book.stopped_running("t0", ended=True) == job(0)
    assert book.finishing == 1
    assert not book.finished
    book.finishing -= 1
    assert book.finished


def test_counts_follow_the_jobs() -> None:
    """A snapshot counts running jobs, successes, failures, skips and polls."""
    book = BatchBook(read=4, skipped=1)
    book.started_running("t1", job(1), submitted_here=True)
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


def test_jobs_left_are_split_into_still_running_and_ended_unread() -> None:
    """left_running holds the tasks that may still run; left_unread those the service ended."""
    book = BatchBook()
    for n in range(4):
        book.started_running(f"t{n}", job(n), submitted_here=n != 1)
    book.stopped_running("t1", ended=True)  # ended at the service, outcome not read
    book.stopped_running("t2", ended=False)  # its watch timed out: it may still run
    taken = book.stopped_running("t3", ended=True)
    book.handed_over(taken.outcome(task_id="t3"))
    assert [left.task_id for left in book.left_running] == ["t0", "t2"]
    assert [left.task_id for left in book.left_unread] == ["t1"]


def test_the_left_running_summary_is_short_whatever_is_left() -> None:
    """250 jobs with long keys: one line under 2,000 characters, a few named, where the rest are."""
    task_ids = [f"{n:06d}{'7' * 30}" for n in range(250)]
    left = [LeftRunningJob(n, "k" * 300 + str(n), task_ids[n]) for n in range(250)]
    line = left_running_summary(left, "<SQLiteJobStore 'runs/x.db' batch='b'>")
    assert len(line) <= 2000
    assert "\n" not in line
    assert "250 job(s) still running" in line
    assert "and 245 more" in line
    assert all(task_id in line for task_id in task_ids[:5])  # named in full, never cut
    assert "left_running" in line
    assert "<SQLiteJobStore 'runs/x.db' batch='b'>" in line
    assert "journal" not in left_running_summary(left[:2], None)


def test_ended_here_counts_only_the_jobs_this_run_submitted() -> None:
    """A task an earlier run submitted, watched to its end here, is not this run's work."""
    book = BatchBook()
    book.started_running("mine", job(0), submitted_here=True)
    book.started_running("earlier", job(1), submitted_here=False)
    book.stopped_running("earlier", ended=True)
    assert book.counts(active_limit=4, polls=0).ended_here == 0
    book.stopped_running("mine", ended=True)
    assert book.counts(active_limit=4, polls=0).ended_here == 1
