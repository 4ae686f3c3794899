"""generate_many: submit a stream of requests under the active-job limit, yield each outcome.

Three kinds of task share one task group: a producer reads the requests lazily and submits
each one once a place among the active jobs is free; the batch's watcher polls the submitted
ones; a finisher per ended job writes it to the journal, downloads its video if asked, and
hands its JobOutcome to the reader. A job's place is given back only once its outcome has
been taken, so a slow reader slows submissions instead of piling up results.

With a journal, each job is recorded before its POST and its task id as soon as it is known;
a rerun skips finished jobs, re-watches submitted ones and never resends one whose outcome
is unknown unless the client's ``on_unknown_submission`` says "resubmit".
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._download import sweep_partial_downloads
from ._exceptions import (
    AuthenticationError,
    HailuoError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitError,
    SubmissionUnknownError,
    TaskFailedError,
)
from ._limits import ActiveJobLimit
from ._models import JobOutcome, TaskResult, VideoRequest
from ._watcher import EventCallback, TaskWatcher
from .journal import (
    BatchJournal,
    JobRecord,
    JobStore,
    JournalError,
    ResumeAction,
    error_from_record,
)

if TYPE_CHECKING:
    from ._client import HailuoClient

__all__ = ["BatchCounts", "JobStream", "RequestSource"]

BatchItem = VideoRequest | tuple[str, VideoRequest]
RequestSource = Iterable[BatchItem] | AsyncIterable[BatchItem]
JournalArg = JobStore | str | os.PathLike[str] | None
_FATAL = (AuthenticationError, PermissionDeniedError)
# On leaving a batch, submissions already on the wire get this long to learn their task id:
# cut short, each would be a job that may have been paid for with no id to show for it.
SUBMISSION_GRACE = 10.0
# How many times a batch job refused with 429 waits for a free place before the last try,
# which has the client's own retries.
RATE_LIMITED_ROUNDS = 30


@attrs.frozen
class BatchCounts:
    """A snapshot of a batch: jobs read, being submitted, running, and ended well or badly."""

    read: int
    submitting: int
    running: int
    succeeded: int
    failed: int
    active_limit: int

    @property
    def done(self) -> int:
        """Jobs that have ended."""
        return self.succeeded + self.failed


@attrs.define
class _Job:
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
        return JobOutcome(
            index=self.index,
            request=self.request,
            key=self.key,
            task_id=task_id,
            result=result,
            error=error,
            path=str(path) if path is not None else None,
            replayed=replayed,
        )


class JobStream:
    """The outcomes of a batch, in completion order; see ``HailuoClient.generate_many``.

    Use it as ``async with client.generate_many(requests) as outcomes: async for outcome in
    outcomes: ...``. Leaving the ``async with`` (break, exception, cancellation) stops
    submitting and polling at once.
    """

    def __init__(
        self,
        client: HailuoClient,
        requests: RequestSource,
        *,
        active_jobs: ActiveJobLimit,
        on_event: EventCallback | None,
        journal: JournalArg = None,
        download_to: str | os.PathLike[str] | None = None,
        retry_failed: bool = False,
    ) -> None:
        self._client = client
        self._requests = requests
        self._active = active_jobs
        self._watcher = TaskWatcher(client, keep_open=True, on_event=on_event)
        self._journal = BatchJournal(journal)
        self._download_to = Path(download_to) if download_to is not None else None
        self._retry_failed = retry_failed
        # Made on entry, so a batch that is never entered leaves no stream to close.
        self._outcomes_in: MemoryObjectSendStream[JobOutcome] | None = None
        self._outcomes_out: MemoryObjectReceiveStream[JobOutcome] | None = None
        self._jobs: dict[str, _Job] = {}
        self._stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        self._fatal: Exception | None = None
        self._read = 0
        self._submitting = 0
        self._submissions_changed = anyio.Event()
        self._submission_scopes: set[anyio.CancelScope] = set()
        self._closing = False
        self._finishing = 0
        self._succeeded = 0
        self._failed = 0
        self._all_read = False

    @property
    def watcher(self) -> TaskWatcher:
        """The watcher polling this batch's submitted jobs."""
        return self._watcher

    @property
    def counts(self) -> BatchCounts:
        """Where the batch stands now."""
        return BatchCounts(
            read=self._read,
            submitting=self._submitting,
            running=len(self._jobs),
            succeeded=self._succeeded,
            failed=self._failed,
            active_limit=self._active.value,
        )

    async def __aenter__(self) -> JobStream:
        if self._download_to is not None:
            self._download_to.mkdir(parents=True, exist_ok=True)
        self._outcomes_in, self._outcomes_out = anyio.create_memory_object_stream[JobOutcome]()
        async with AsyncExitStack() as stack:
            stack.enter_context(self._outcomes_in)
            stack.enter_context(self._outcomes_out)
            await self._journal.start(
                retry_failed=self._retry_failed,
                on_unknown_submission=self._client.on_unknown_submission,
            )
            if self._download_to is not None:  # a killed run's half-downloaded videos
                await sweep_partial_downloads(self._download_to, self._journal.task_ids)
            stack.push_async_callback(self._journal.aclose)
            await stack.enter_async_context(self._watcher)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._task_group.cancel_scope.cancel)
            self._task_group.start_soon(self._produce)
            self._task_group.start_soon(self._collect)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The caller's own exception is not handed to the task group: it would come back
        # wrapped in an ExceptionGroup. Cancel, wait for the tasks, let it propagate as is.
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        # Shielded: this also runs when the caller is being cancelled (Ctrl-C).
        with anyio.move_on_after(SUBMISSION_GRACE, shield=True):
            while self._submitting:
                await self._submissions_changed.wait()
        for scope in list(self._submission_scopes):
            scope.cancel()
        await stack.aclose()

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> JobOutcome:
        if self._stack is None or self._outcomes_out is None:
            raise RuntimeError(
                "use the batch inside `async with client.generate_many(...) as outcomes`"
            )
        try:
            return await self._outcomes_out.receive()
        except anyio.EndOfStream:
            if self._fatal is not None:
                raise self._fatal from None
            raise StopAsyncIteration from None

    # -- producing -------------------------------------------------------------------------

    async def _produce(self) -> None:
        # A source that fails (a bad item, or an error raised while making one) stops the
        # reading only: the jobs already submitted run on and are yielded, then the error is
        # raised, so no paid job's outcome is lost to a bad line further down.
        try:
            await self._start_each()
        except Exception as exc:  # the caller's source may raise anything
            self._fatal = self._fatal or exc
        self._all_read = True
        self._close_if_finished()

    async def _start_each(self) -> None:
        assert self._task_group is not None
        index = 0
        async for item in _lazily(self._requests):
            if self._fatal is not None or self._stopping():
                return
            request, key = _as_request(index, item)
            entry = await self._journal.entry(request, key)
            job = _Job(index, request, entry.key or None)
            index += 1
            self._read += 1
            if entry.action is ResumeAction.SUBMIT:
                await self._active.acquire()
                if self._stopping():  # the reader left while we waited for a place
                    self._active.release(submitted=False)
                    return
                self._submitting += 1
                self._task_group.start_soon(self._submit, job)
            elif entry.action is ResumeAction.WATCH:
                assert entry.record is not None
                assert entry.record.task_id is not None
                await self._active.acquire()
                self._active.on_submitted()
                self._watch(job, entry.record.task_id, submitted_at=None)
            else:
                assert entry.record is not None
                self._finishing += 1
                self._task_group.start_soon(self._replay, job, entry.action, entry.record)

    async def _submit(self, job: _Job) -> None:
        if self._stopping():  # started just as the reader left: never sent, nothing to do
            self._submission_ended()
            self._active.release(submitted=False)
            return
        # Shielded from the caller's cancellation, so a POST on the wire lands and its task
        # id is journaled; leaving the batch waits SUBMISSION_GRACE for that, then cancels.
        with anyio.CancelScope(shield=True) as scope:
            self._submission_scopes.add(scope)
            try:
                await self._submit_shielded(job)
            finally:
                self._submission_scopes.discard(scope)

    async def _submit_shielded(self, job: _Job) -> None:
        ended = False
        try:
            try:
                task_id = await self._submit_patiently(job)
            except HailuoError as exc:
                # A journal that cannot write, or a key the account refuses, stops the batch.
                if isinstance(exc, (*_FATAL, JournalError)):
                    self._fatal = exc
                await self._journal.submission_failed(job.key, exc)
                ended = True
                self._submission_ended()
                await self._emit(job.outcome(error=exc))
                self._active.release(submitted=False)
                self._close_if_finished()
                return
            self._active.on_submitted()
            await self._journal.submitted(job.key, task_id)
            self._watch(job, task_id, submitted_at=time.monotonic())
            ended = True
            self._submission_ended()
        finally:
            if not ended:
                # Cancelled (the caller's scope was): no answer is coming to wait for on exit.
                self._submission_ended()

    async def _submit_patiently(self, job: _Job) -> str:
        # A 429 started nothing: the account is at its cap on active jobs (or requests).
        # Retrying at once would only meet more 429s; give the place back and wait for a
        # job to end (the client's 429 pause spaces the tries too), rather than fail a job
        # that was never sent.
        recorder = self._journal.recorder(job.key)
        for _ in range(RATE_LIMITED_ROUNDS - 1):
            try:
                return await self._client.submit(
                    job.request, recorder=recorder, retry_rate_limited=False
                )
            except RateLimitError:  # noqa: PERF203 - a rare path, and a wait follows anyway
                self._active.release(submitted=False)
                await self._active.acquire()
        return await self._client.submit(job.request, recorder=recorder)

    def _stopping(self) -> bool:
        return self._closing

    def _submission_ended(self) -> None:
        self._submitting -= 1
        self._submissions_changed.set()
        self._submissions_changed = anyio.Event()

    def _watch(self, job: _Job, task_id: str, *, submitted_at: float | None) -> None:
        self._jobs[task_id] = job
        # A job with a webhook ends by push (client.handle_webhook); polls are its backstop.
        pushed = job.request.webhook_url is not None
        self._watcher.add(task_id, submitted_at=submitted_at, pushed=pushed)

    async def _replay(self, job: _Job, action: ResumeAction, record: JobRecord) -> None:
        """Yield what an earlier run of the batch already knows about this job."""
        error: HailuoError | None
        if action is ResumeAction.FINISHED and record.result is not None:
            result: TaskResult | None = record.result
            path = Path(record.path) if record.path is not None else None
            error = None
            if path is None and self._download_to is not None:
                path, error = await self._download(job, record.result)
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
        await self._emit(outcome)
        self._finishing -= 1
        self._close_if_finished()

    # -- finishing -------------------------------------------------------------------------

    async def _collect(self) -> None:
        assert self._task_group is not None
        while True:
            task_id, outcome = await self._watcher.next_outcome()
            job = self._jobs.pop(task_id)
            self._finishing += 1
            if self._journal.enabled or self._download_to is not None:
                # Journal writes and downloads take time: finish jobs side by side.
                self._task_group.start_soon(self._finish, job, task_id, outcome)
            else:
                await self._finish(job, task_id, outcome)

    async def _finish(self, job: _Job, task_id: str, outcome: TaskResult | HailuoError) -> None:
        await self._journal.ended(job.key, outcome)
        path: Path | None = None
        if isinstance(outcome, TaskResult):
            result: TaskResult | None = outcome
            error: HailuoError | None = None if outcome.ok else TaskFailedError(outcome)
            if outcome.ok and self._download_to is not None:
                path, error = await self._download(job, outcome)
        else:
            result, error = None, outcome
        if isinstance(error, _FATAL):
            self._fatal = error
        await self._emit(job.outcome(task_id=task_id, result=result, error=error, path=path))
        self._active.release(submitted=True)
        self._active.on_completed()
        self._finishing -= 1
        self._close_if_finished()

    async def _download(
        self, job: _Job, result: TaskResult
    ) -> tuple[Path | None, HailuoError | None]:
        assert self._download_to is not None
        try:
            path = await self._client.download(result, self._download_to)
        except HailuoError as exc:
            return None, exc
        await self._journal.downloaded(job.key, path)
        return path, None

    async def _emit(self, outcome: JobOutcome) -> None:
        if outcome.ok:
            self._succeeded += 1
        else:
            self._failed += 1
        # After a fatal error the stream is closed and later outcomes are no longer read.
        assert self._outcomes_in is not None
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._outcomes_in.send(outcome)

    def _close_if_finished(self) -> None:
        busy = self._submitting or self._jobs or self._finishing
        if self._all_read and not busy and self._outcomes_in is not None:
            self._outcomes_in.close()


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
        for request in requests:
            yield request
            # Let the batch's other tasks run between items of a long synchronous source.
            await anyio.lowlevel.checkpoint()
