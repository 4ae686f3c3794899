"""The job journal: a durable record of a batch, so a crash loses no task id and pays nothing twice.

Each job of a batch has a stable key (:func:`job_keys`: the caller's key, or the request's
fingerprint and its occurrence number) and moves through these states::

    recorded ──> submitting ──> submitted(task_id) ──> finished(result) [+ downloaded(path)]
       ^             │ │              │
       └─ unsent ────┘ │              └──────────────> failed(error, type)
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

A PostgreSQL store (design)
---------------------------
For several workers on several machines sharing one batch, a ``PostgresJobStore`` would keep
the same table (``payload``/``result`` as ``jsonb``, times as ``timestamptz``), primary key
``(batch, key)`` and a partial index ``(batch, idx) WHERE state IN ('recorded','submitted')``.
Workers share the batch through leases, with the database's clock as the only clock:

* ``claim(worker_id, n, lease_seconds)`` in one transaction::

      UPDATE hailuo_jobs SET state = 'unknown', ...          -- reap: a worker died mid-POST
       WHERE batch = $1 AND state = 'submitting' AND lease_until < now();
      WITH picked AS (
          SELECT key FROM hailuo_jobs
           WHERE batch = $1 AND state IN ('recorded', 'submitted')
             AND (owner IS NULL OR lease_until < now())
           ORDER BY idx LIMIT $n
             FOR UPDATE SKIP LOCKED)                          -- workers never wait on each other
      UPDATE hailuo_jobs j SET owner = $worker, lease_until = now() + $lease
        FROM picked WHERE j.batch = $1 AND j.key = picked.key RETURNING j.*;

* Fencing: ``mark_submitting(key, worker_id=...)`` is ``UPDATE ... WHERE owner = $worker AND
  lease_until > now() + $margin`` and commits (``synchronous_commit = on``) before the POST;
  zero rows means the lease is lost (:class:`LeaseLostError`) and the POST is not sent.
  ``mark_submitted`` checks no owner: a task id is kept whoever learns it, even after the lease
  ran out (and from ``unknown``, should the reaper have been first).
* Heartbeat every ``lease/3``: ``UPDATE ... SET lease_until = now() + $lease WHERE owner =
  $worker AND lease_until > now() RETURNING key``; keys missing from the answer were lost, and
  the worker stops working on them. A lease must outlast a submit's timeout with retries plus
  two heartbeats, since an expired lease on a ``submitting`` job is read as a dead worker.
* ``finished``/``failed``/``unknown`` clear the lease. Claims also hand out ``submitted`` jobs,
  so a dead worker's tasks are re-watched by another, never resubmitted.
* Each worker group-commits its writes as here (one transaction per group);
  ``SET LOCAL synchronous_commit = off`` is safe only for groups of final states.
* ``record`` is ``INSERT ... ON CONFLICT DO NOTHING`` plus a fingerprint check, so any worker
  may record the whole batch. The account's requests-per-minute budget is shared by all
  workers: split it (``rpm / workers``) or keep a token bucket row updated with
  ``UPDATE ... RETURNING``.

:class:`SQLiteJobStore` implements the same lease methods (SQLite's ``BEGIN IMMEDIATE`` makes
them exact on one machine), so a runner written against :class:`JobStore` needs no change.
"""

from ._batch import BatchJournal
from ._errors import (
    InvalidTransitionError,
    JobConflictError,
    JournalClosedError,
    JournalConnectionError,
    JournalError,
    JournalPermissionError,
    JournalSchemaError,
    LeaseLostError,
    UnknownJobError,
)
from ._keys import MAX_KEY_CHARS, JobKeyer, JobSpec, job_keys, job_specs
from ._open import store_for
from ._postgres import PostgresJobStore
from ._records import JobRecord, JobState, result_from_json, result_to_json
from ._resume import ResumeAction, ResumeEntry, ResumePlan, classify
from ._sql import SCHEMA_VERSION
from ._sqlite import SQLiteJobStore, Synchronous
from ._store import JobStore

__all__ = [
    "MAX_KEY_CHARS",
    "SCHEMA_VERSION",
    "BatchJournal",
    "InvalidTransitionError",
    "JobConflictError",
    "JobKeyer",
    "JobRecord",
    "JobSpec",
    "JobState",
    "JobStore",
    "JournalClosedError",
    "JournalConnectionError",
    "JournalError",
    "JournalPermissionError",
    "JournalSchemaError",
    "LeaseLostError",
    "PostgresJobStore",
    "ResumeAction",
    "ResumeEntry",
    "ResumePlan",
    "SQLiteJobStore",
    "Synchronous",
    "UnknownJobError",
    "classify",
    "job_keys",
    "job_specs",
    "result_from_json",
    "result_to_json",
    "store_for",
]
