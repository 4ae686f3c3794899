"""What the SQLite and PostgreSQL stores share: group-committed writes and the checks of input."""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import anyio
import attrs

from .._exceptions import InvalidRequestError, SubmissionUnknownError
from .._models import TaskResult
from .._retry import UnknownSubmissionPolicy
from ._errors import InvalidTransitionError, JournalClosedError, LeaseLostError, UnknownJobError
from ._failures import encode_error
from ._group import GroupCommitter
from ._records import JobRecord, dump_result
from ._resume import ResumePlan, classify

__all__ = [
    "GroupCommittedStore",
    "Rejected",
    "TransitionStatements",
    "raise_rejected",
    "submitting_attempts",
]

W = TypeVar("W")
T = TypeVar("T")
S = TypeVar("S", bound="GroupCommittedStore[Any]")


class TransitionStatements(Protocol):
    """The statement of each transition, in a store's SQL dialect."""

    SUBMITTED: str
    UNSENT: str
    UNKNOWN: str
    FINISHED: str
    FAILED: str
    DOWNLOADED: str
    RESULT_LOST: str


@attrs.frozen
class Rejected:
    """Why a transition did not apply: the job's state (None: never recorded)."""

    state: str | None
    detail: str = ""
    lease_lost: bool = False

    @classmethod
    def submitting(cls, state: str, owner: str | None, live: bool) -> Rejected:
        """Why mark_submitting did not apply to a job in ``state`` (with its lease, if any)."""
        if state in ("recorded", "failed", "unknown"):
            holder = f"held by {owner!r}" if live else "not held by this worker"
            return cls(state, f"lease {holder}", lease_lost=True)
        return cls(state)


def raise_rejected(key: str, target: str, rejected: Rejected) -> NoReturn:
    """The error that says why the job could not become ``target``."""
    if rejected.state is None:
        raise UnknownJobError(key)
    error = LeaseLostError if rejected.lease_lost else InvalidTransitionError
    raise error(key, rejected.state, target, detail=rejected.detail)


def submitting_attempts(key: str, outcome: int | Rejected) -> int:
    """The attempt number a ``mark_submitting`` write returned, or the error of its refusal."""
    if isinstance(outcome, Rejected):
        raise_rejected(key, "submitting", outcome)
    return outcome


class GroupCommittedStore(abc.ABC, Generic[W]):
    """A store whose writes (functions of its kind ``W``) go through a :class:`GroupCommitter`.

    Each transition is one statement of ``_sql``; the store runs it in ``_transition``.
    """

    _batch: str
    _writer: GroupCommitter[W] | None
    _sql: TransitionStatements

    @property
    def batch(self) -> str:
        """The batch this store reads and writes."""
        return self._batch

    @property
    def commits(self) -> int:
        """Write transactions committed since opening (each is one durable flush)."""
        return self._writer.commits if self._writer is not None else 0

    @property
    def writes_committed(self) -> int:
        """Writes committed since opening; divided by ``commits``, the mean group size."""
        return self._writer.writes if self._writer is not None else 0

    @property
    def pending_writes(self) -> int:
        """Writes waiting for a commit whose callers stopped waiting; aclose commits them."""
        return self._writer.pending if self._writer is not None else 0

    @abc.abstractmethod
    async def open(self: S) -> S:
        """Open the store and return it."""

    @abc.abstractmethod
    async def _close_connection(self) -> None:
        """Close the connection (the writer is gone: nothing else uses it)."""

    async def aclose(self) -> None:
        """Commit writes still due, then close the connection; safe to call twice."""
        writer = self._writer
        if writer is None:
            return
        # Shielded: closing is what a cancelled batch does on its way out, and the writes still
        # due (of callers that were cancelled) cost one commit.
        with anyio.CancelScope(shield=True):
            try:
                await writer.flush()
            finally:
                self._writer = None
                await self._close_connection()

    async def __aenter__(self: S) -> S:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _commit(self, fn: W) -> object:
        """Run a write (of the store's own kind) in the next group commit; its result."""
        if self._writer is None:
            raise JournalClosedError("the journal is not open")
        return await self._writer.write(fn)

    @abc.abstractmethod
    async def _transition(
        self, key: str, target: str, statement: str, params: dict[str, Any]
    ) -> None: ...

    async def mark_submitted(self, key: str, task_id: str) -> None:
        """Durably note the task id (from SUBMITTING, or UNKNOWN when it turns up later)."""
        if not isinstance(task_id, str) or not task_id:
            raise InvalidRequestError("task_id", "must be a non-empty string")
        await self._transition(key, "submitted", self._sql.SUBMITTED, {"task_id": task_id})

    async def mark_unsent(self, key: str) -> None:
        """Note that the POST certainly started nothing (from SUBMITTING back to RECORDED)."""
        await self._transition(key, "recorded", self._sql.UNSENT, {})

    async def mark_unknown(self, key: str, reason: str) -> None:
        """Note that the submission's outcome cannot be known (from SUBMITTING)."""
        params = {"reason": reason, "error_type": SubmissionUnknownError.__name__}
        await self._transition(key, "unknown", self._sql.UNKNOWN, params)

    async def mark_finished(self, key: str, result: TaskResult) -> None:
        """Note the task's final result (from SUBMITTED; again from FINISHED to refresh it)."""
        params = {"result": dump_result(result), "task_id": result.task_id}
        await self._transition(key, "finished", self._sql.FINISHED, params)

    async def mark_downloaded(self, key: str, path: str | os.PathLike[str]) -> None:
        """Note where the finished job's video was saved."""
        params = {"path": os.fspath(path)}
        await self._transition(key, "downloaded", self._sql.DOWNLOADED, params)

    async def mark_failed(
        self, key: str, error: BaseException | str, *, error_type: str | None = None
    ) -> None:
        """Note that the job failed (from any state but FINISHED).

        A :class:`SubmissionUnknownError` is recorded as UNKNOWN instead: a failed job may be
        retried, and retrying one that might have started would risk paying twice.
        """
        if isinstance(error, SubmissionUnknownError):
            await self.mark_unknown(key, error.reason)
            return
        message, error_type, error_fields = encode_error(error, error_type)
        params = {"error": message, "error_type": error_type, "error_fields": error_fields}
        await self._transition(key, "failed", self._sql.FAILED, params)

    async def mark_result_lost(self, key: str, reason: str) -> None:
        """Note that a finished job's video was never saved and can no longer be fetched.

        From FINISHED without a saved path to FAILED with ``reason``, so that a run with
        ``retry_failed`` submits it again (a new job, paid for again on a real service). For
        results that are gone for good: a URL that has only expired is renewed by a download.
        """
        await self._transition(key, "failed", self._sql.RESULT_LOST, {"error": reason})

    @abc.abstractmethod
    async def _interrupt_and_read(self) -> Mapping[str, JobRecord]: ...

    async def resume(
        self,
        keys: Sequence[str] | None = None,
        *,
        retry_failed: bool = False,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
    ) -> ResumePlan:
        """Turn interrupted submissions into UNKNOWN, then say what to do with each key.

        Call it before the run starts work: every SUBMITTING job not under a live lease is
        taken to be interrupted. One scan of the batch, whatever the number of keys. With
        ``keys`` None the plan covers every recorded job (see :meth:`ResumePlan.entry_for`).
        """
        if on_unknown_submission not in ("raise", "resubmit"):
            raise InvalidRequestError("on_unknown_submission", "must be 'raise' or 'resubmit'")
        records = await self._interrupt_and_read()
        return classify(
            keys,
            records,
            retry_failed=retry_failed,
            on_unknown_submission=on_unknown_submission,
            now=datetime.now(timezone.utc),
        )

    @abc.abstractmethod
    async def _claim(self, worker_id: str, n: int, lease_seconds: float) -> list[JobRecord]: ...

    async def claim(self, worker_id: str, n: int, lease_seconds: float) -> list[JobRecord]:
        """Lease up to ``n`` jobs with work left (RECORDED or SUBMITTED), in batch order.

        First turns SUBMITTING jobs whose lease ran out into UNKNOWN: their worker died
        between journaling the POST and learning its answer.
        """
        if not worker_id:
            raise InvalidRequestError("worker_id", "must be a non-empty string")
        if n < 1 or lease_seconds <= 0:
            raise InvalidRequestError("claim", "n must be 1 or more and lease_seconds positive")
        return await self._claim(worker_id, n, lease_seconds)
