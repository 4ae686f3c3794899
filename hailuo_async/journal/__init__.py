"""The job journal: a durable record of a batch, so a crash loses no task id and pays nothing twice.

Each job of a batch has a stable key (:func:`job_keys`: the caller's key, or the request's
fingerprint and its occurrence number) and moves through these states::

    recorded ──> submitting ──> submitted(task_id) ──> finished(result) [+ downloaded(path)]
       ^             │ │              │
       └─ unsent ────┘ │              └──────────────> failed(error, type, fields)
       (429, 5xx, not  └──> unknown (the POST may have started a paid job; its answer was lost)
        sent at all)

Durability rule
---------------
``submitting`` is durable *before* the POST is sent, and ``submitted(task_id)`` as soon as the
id is known. A process killed between the two leaves ``submitting`` behind, which
:meth:`JobStore.resume` turns into ``unknown``: surfaced per the ``on_unknown_submission``
policy, never silently sent again. Every ``mark_*`` call returns once its change is durable;
writes are group-committed (:mod:`._group`), so durability costs one fsync per group, not
per write.

Resuming
--------
``plan = await store.resume(keys, retry_failed=..., on_unknown_submission=...)`` gives each
key a :class:`ResumeAction`: SUBMIT (recorded or absent), WATCH (a task id is known: re-watch
it), FINISHED (skip, stored result), FAILED (skip, unless ``retry_failed``), UNKNOWN (per the
policy; "resubmit" makes it SUBMIT), LEASED (another worker has it). It costs one scan of the
batch whatever the number of keys. A batch read lazily keys each request with a
:class:`JobKeyer` as it comes, calls ``resume()`` without keys, and asks
``plan.entry_for(key)`` (SUBMIT for a key never recorded).

Several workers
---------------
:class:`JobStore` also has leases (``claim``, ``heartbeat``, ``release``) for several workers
sharing one batch; :class:`SQLiteJobStore` implements them exactly on one machine. The design
of a store shared across machines (PostgreSQL) is in ``docs/concepts/journal.md``.

Replayed failures
-----------------
A failed job keeps its error's class and attributes; :func:`error_from_record` rebuilds the
same error when a rerun replays it.
"""

from ._errors import (
    InvalidTransitionError,
    JobConflictError,
    JournalClosedError,
    JournalConnectionError,
    JournalError,
    JournalInUseError,
    JournalPermissionError,
    JournalProviderError,
    JournalSchemaError,
    LeaseLostError,
    UnknownJobError,
)
from ._failures import error_from_record
from ._keys import job_keys
from ._open import store_for
from ._postgres import BatchProgress, PostgresJobStore
from ._records import JobRecord, JobState
from ._sqlite import SQLiteJobStore, Synchronous

__all__ = [
    "BatchProgress",
    "InvalidTransitionError",
    "JobConflictError",
    "JobRecord",
    "JobState",
    "JournalClosedError",
    "JournalConnectionError",
    "JournalError",
    "JournalInUseError",
    "JournalPermissionError",
    "JournalProviderError",
    "JournalSchemaError",
    "LeaseLostError",
    "PostgresJobStore",
    "SQLiteJobStore",
    "Synchronous",
    "UnknownJobError",
    "error_from_record",
    "job_keys",
    "store_for",
]
