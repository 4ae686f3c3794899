"""A batch's submission workers, alone: jobs queued to a pool, landed once, cancelled on exit."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from anyio.abc import TaskGroup

from hailuo_async import VideoRequest
from hailuo_async._bookkeeping import BatchBook, BatchJob
from hailuo_async._limits import ActiveJobLimit
from hailuo_async._submitter import BatchSubmitter
from hailuo_async.extend import ActiveJobs, SubmissionRecorder
from hailuo_async.journal._batch import BatchJournal

pytestmark = pytest.mark.anyio


class Runs:
    """The batch's side: submits each job it is given, and notes which jobs it ran."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.submitter: BatchSubmitter | None = None

    async def submit(
        self,
        request: VideoRequest,
        *,
        recorder: SubmissionRecorder | None = None,
        retry_rate_limited: bool = True,
        active_jobs: ActiveJobs | None = None,
    ) -> str:
        """A submission answered at once (after one turn of the loop, as on the wire)."""
        await anyio.lowlevel.checkpoint()
        return f"task-{request.prompt}"

    async def run(self, job: BatchJob, landed: Callable[[], None]) -> None:
        """Submit the job, then say it landed (twice: only the first may count)."""
        assert self.submitter is not None
        await self.submitter.submit(job)
        self.ran.append(job.index)
        landed()
        landed()


def submitter_for(runs: Runs, book: BatchBook) -> BatchSubmitter:
    """A submitter without a journal, its jobs run by ``runs``."""
    runs.submitter = BatchSubmitter(
        runs.submit,
        run=runs.run,
        active_jobs=ActiveJobLimit(known=8),
        journal=BatchJournal(None),
        book=book,
        max_workers=4,
    )
    return runs.submitter


def start_job(
    submitter: BatchSubmitter, book: BatchBook, task_group: TaskGroup, index: int
) -> None:
    """Start the batch's job number ``index``, counted as submitting as the batch does."""
    book.submitting += 1
    submitter.start(task_group, BatchJob(index, VideoRequest(prompt=str(index)), None))


async def test_jobs_run_once_each_and_land_once() -> None:
    """Every queued job runs once; each lands once, however often it says so."""
    runs, book = Runs(), BatchBook()
    submitter = submitter_for(runs, book)
    async with anyio.create_task_group() as task_group:
        for index in range(20):
            start_job(submitter, book, task_group, index)
            if index % 3 == 0:  # let some workers go idle before the next jobs come
                await anyio.wait_all_tasks_blocked()
        await anyio.wait_all_tasks_blocked()
        assert sorted(runs.ran) == list(range(20))
        assert book.submitting == 0
        await submitter.wait_and_cancel(grace=0)


async def test_a_job_after_idle_workers_were_cancelled_runs_on_a_new_one() -> None:
    """Workers cancelled while idle are passed over: a later job still gets a worker."""
    runs, book = Runs(), BatchBook()
    submitter = submitter_for(runs, book)
    async with anyio.create_task_group() as first:
        for index in range(3):
            start_job(submitter, book, first, index)
        await anyio.wait_all_tasks_blocked()
        await submitter.wait_and_cancel(grace=0)
    async with anyio.create_task_group() as second:
        start_job(submitter, book, second, 3)
        await anyio.wait_all_tasks_blocked()
        assert sorted(runs.ran) == [0, 1, 2, 3]
        assert book.submitting == 0
        await submitter.wait_and_cancel(grace=0)


class GatedRuns(Runs):
    """Runs whose jobs wait at a gate: how many run at once, and in which order they start."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.started: list[int] = []
        self.running = 0
        self.peak = 0

    async def run(self, job: BatchJob, landed: Callable[[], None]) -> None:
        """Wait at the gate, then submit as Runs does."""
        self.started.append(job.index)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
            await super().run(job, landed)
        finally:
            self.running -= 1


async def test_jobs_past_max_workers_wait_in_the_queue_and_start_in_order() -> None:
    """With 4 workers, 12 jobs run at most 4 at once, start in order, and all run."""
    runs, book = GatedRuns(), BatchBook()
    submitter = submitter_for(runs, book)
    async with anyio.create_task_group() as task_group:
        for index in range(12):
            start_job(submitter, book, task_group, index)
        await anyio.wait_all_tasks_blocked()
        assert runs.started == [0, 1, 2, 3]
        runs.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert runs.peak == 4
        assert runs.started == list(range(12))
        assert sorted(runs.ran) == list(range(12))
        assert book.submitting == 0
        await submitter.wait_and_cancel(grace=0)
