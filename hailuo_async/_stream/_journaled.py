"""A batch with a journal of its own (SQLite, or any :class:`~..extend.JobStore`).

Each job is recorded before its POST and its task id as soon as it is known (the submitter
writes through :class:`~..journal._batch.BatchJournal`). A rerun skips finished jobs
(yielding them again, ``replayed``), re-watches submitted ones and never resends one whose
outcome is unknown unless the client's ``on_unknown_submission`` says "resubmit".
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import NoReturn

import anyio

from .._bookkeeping import BatchJob
from .._download import copy_video, sweep_partial_downloads
from .._exceptions import HailuoError, SubmissionUnknownError
from .._models import TaskResult
from ..journal import JobRecord, error_from_record
from ..journal._resume import ResumeAction
from ._core import JobStream
from ._source import as_request, lazily

__all__ = ["JournaledStream"]

logger = logging.getLogger("hailuo_async.batch")


class JournaledStream(JobStream):
    """A batch of one process whose jobs are recorded in ``journal`` as they go."""

    async def _setup(self, stack: AsyncExitStack) -> None:
        await self._open_journal(stack)
        await super()._setup(stack)

    async def _open_journal(self, stack: AsyncExitStack) -> None:
        """Read what an earlier run left; the journal is closed when the batch is left."""
        await self._journal.start(provider=self._provider)
        if self._download_to is not None:  # a killed run's half-downloaded videos
            await sweep_partial_downloads(self._download_to, self._journal.task_ids)
        stack.push_async_callback(self._journal.aclose)

    async def _produce_jobs(self) -> None:
        journal = self._journal
        task_group = self._tasks.task_group
        index = 0
        async for item in lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = as_request(index, item)
            # Once the account is refused, a new job is not even recorded: nothing of it
            # is sent, and a rerun records it as any new job.
            entry = await journal.entry(request, key, record=self._refused is None)
            action, record = entry.action, entry.record
            job = BatchJob(index, request, entry.key or None)
            index += 1
            self._book.read += 1
            match action:
                case ResumeAction.SUBMIT:
                    if not await self._start_new(job, task_group):
                        return
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

    # -- replaying what an earlier run ended -----------------------------------------------

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
                path, result, error = await self._save_again(job, result, path)
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

    async def _save_again(
        self, job: BatchJob, result: TaskResult, saved: Path | None
    ) -> tuple[Path | None, TaskResult, HailuoError | None]:
        """A replayed job's video, into ``download_to``, and the result it came with:
        copied from where an earlier run saved it (another folder), else downloaded from a
        fresh URL (the one journaled may have expired, or be what failed)."""
        assert self._download_to is not None
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


def _saved_in(path: Path | None, folder: Path) -> bool:
    """True when the video ``path`` is a file in ``folder``."""
    return path is not None and path.parent.resolve() == folder.resolve() and path.is_file()


def _unhandled(action: NoReturn) -> NoReturn:
    # mypy proves every ResumeAction is handled; a new one fails type-checking, not silently.
    raise AssertionError(f"unhandled resume action: {action!r}")
