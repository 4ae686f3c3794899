"""The interfaces of job stores: :class:`JobStore` every store offers, and
:class:`SharedJobStore` a store several workers share (the batch's worker mode needs it)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .._models import TaskResult
from .._retry import UnknownSubmissionPolicy
from ._keys import JobSpec
from ._records import JobRecord, JobState
from ._resume import ResumePlan

__all__ = ["JobStore", "SharedJobStore"]


@runtime_checkable
class JobStore(Protocol):
    """A durable record of a batch's jobs.

    Every ``mark_*`` returns only once the change is durable, and raises
    :class:`InvalidTransitionError` when the job's state does not allow it (see
    :class:`JobState`). ``worker_id`` and the lease methods serve stores shared by several
    workers; a single process may ignore them.
    """

    async def bind_provider(self, provider: str) -> str:
        """Record that the batch is sent through ``provider`` unless one is recorded; return
        the one recorded (``"gateway"`` for a batch recorded before providers were).

        A batch is resumed through the provider it was started with: its task ids are that
        service's.
        """
        ...

    async def record(self, jobs: Sequence[JobSpec]) -> int:
        """Record jobs not recorded yet (others are left as they are); return how many were new.

        Raises :class:`JobConflictError` if a key was recorded for a different request.
        """
        ...

    async def mark_submitting(self, key: str, *, worker_id: str | None = None) -> int:
        """Durably note that the POST is about to be sent; return the attempt number.

        Allowed from RECORDED, FAILED (a retry) and UNKNOWN (a resubmission the caller chose).
        """
        ...

    async def mark_submitted(self, key: str, task_id: str) -> None:
        """Durably note the task id (from SUBMITTING, or UNKNOWN when it turns up later)."""
        ...

    async def mark_unsent(self, key: str) -> None:
        """Note that the POST certainly started nothing (from SUBMITTING back to RECORDED)."""
        ...

    async def mark_unknown(self, key: str, reason: str) -> None:
        """Note that the submission's outcome cannot be known (from SUBMITTING)."""
        ...

    async def mark_finished(self, key: str, result: TaskResult) -> None:
        """Note the task's final result (from SUBMITTED; again from FINISHED to refresh it)."""
        ...

    async def mark_failed(
        self, key: str, error: BaseException | str, *, error_type: str | None = None
    ) -> None:
        """Note that the job failed, with the error's text and type (from any but FINISHED)."""
        ...

    async def mark_downloaded(self, key: str, path: str | os.PathLike[str]) -> None:
        """Note where the finished job's video was saved."""
        ...

    async def get(self, key: str) -> JobRecord | None:
        """The job's record, or None if it was never recorded."""
        ...

    async def get_many(self, keys: Iterable[str] | None = None) -> dict[str, JobRecord]:
        """Records by key (all of the batch when ``keys`` is None), in the batch's order."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (zero counts left out)."""
        ...

    async def resume(
        self,
        keys: Sequence[str] | None = None,
        *,
        retry_failed: bool = False,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
    ) -> ResumePlan:
        """Turn interrupted submissions into UNKNOWN, then say what to do with each key.

        With ``keys`` None (a batch read lazily) the plan covers every recorded job; use
        :meth:`ResumePlan.entry_for`, which answers SUBMIT for keys never recorded.
        """
        ...

    async def claim(self, worker_id: str, n: int, lease_seconds: float) -> list[JobRecord]:
        """Lease up to ``n`` jobs with work left (RECORDED or SUBMITTED) and no live lease."""
        ...

    async def heartbeat(self, worker_id: str, lease_seconds: float) -> int:
        """Extend the worker's live leases; return how many it still holds."""
        ...

    async def release(self, worker_id: str, keys: Iterable[str] | None = None) -> int:
        """Give up the worker's leases (all, or on ``keys``); return how many were released."""
        ...

    async def aclose(self) -> None:
        """Write what is pending and close."""
        ...


@runtime_checkable
class SharedJobStore(JobStore, Protocol):
    """A job store several workers share (PostgreSQL): what a batch's worker mode calls.

    A worker reports a job's end with its ``worker_id``: only while no other worker holds a
    live lease on the job, and only once (else :class:`InvalidTransitionError`).
    """

    async def mark_finished(
        self,
        key: str,
        result: TaskResult,
        *,
        worker_id: str | None = None,
        hold_for: float | None = None,
    ) -> None:
        """Note the task's final result; ``hold_for``: seconds the worker keeps a lease on
        the finished job while it saves the video."""
        ...

    async def mark_failed(
        self,
        key: str,
        error: BaseException | str,
        *,
        error_type: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Note that the job failed (with ``worker_id``: its watched task failed)."""
        ...

    async def mark_downloaded(
        self, key: str, path: str | os.PathLike[str], *, worker_id: str | None = None
    ) -> None:
        """Note where the finished job's video was saved (with ``worker_id``: only while the
        job is still that worker's)."""
        ...

    async def claim_undownloaded(
        self, worker_id: str, n: int, lease_seconds: float, *, tried: Iterable[str] = ()
    ) -> list[JobRecord]:
        """Lease up to ``n`` finished jobs whose video nobody saved (``tried``: skip these)."""
        ...

    async def requeue(self, attempts: Mapping[str, int]) -> int:
        """Put failed or unknown jobs back to RECORDED if their attempt count is still the
        one given; return how many were put back."""
        ...

    async def work_left(self, worker_id: str) -> int:
        """Jobs with work left that are not under this worker's lease."""
        ...
