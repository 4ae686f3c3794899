"""A worker process for the fault tests: claims jobs of a batch, "submits" and finishes them.

Usage: python worker.py DSN SCHEMA WORKER_ID LEASE_SECONDS [--pause]

The "service" is the table SCHEMA.posts: a POST is one row, so the test counts what would
have been paid. With --pause the worker prints ``claimed KEY...`` after its first claim and
waits for a line on stdin before submitting (heartbeats go on meanwhile). It prints
``refused KEY ERROR`` for each submission the journal refused, and exits 0 once no job has
work left.
"""

from __future__ import annotations

import random
import sys

import anyio
import psycopg

from hailuo_async import TaskResult, TaskStatus
from hailuo_async.journal import InvalidTransitionError, JobRecord, JobState, PostgresJobStore

BATCH = "faults"
OPEN = {JobState.RECORDED, JobState.SUBMITTING, JobState.SUBMITTED}


async def main(dsn: str, schema: str, worker: str, lease: float, pause: bool) -> None:
    service = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with PostgresJobStore(dsn, batch=BATCH, schema=schema) as store:

        async def heartbeats() -> None:
            while True:
                await anyio.sleep(lease / 4)
                await store.heartbeat(worker, lease)

        async def work(job: JobRecord) -> None:
            task_id = job.task_id
            if job.state is JobState.RECORDED:
                try:
                    await store.mark_submitting(job.key, worker_id=worker)
                except InvalidTransitionError as exc:
                    print(f"refused {job.key} {type(exc).__name__}", flush=True)
                    print(f"  {exc}", file=sys.stderr, flush=True)
                    return
                task_id = f"task-{job.key}-{worker}"
                await service.execute(
                    f'INSERT INTO "{schema}".posts VALUES (%s, %s, %s)',  # noqa: S608
                    (job.key, worker, task_id),
                )
                await anyio.sleep(random.uniform(0, 0.02))  # the answer on its way back
                await store.mark_submitted(job.key, task_id)
            assert task_id is not None
            await anyio.sleep(random.uniform(0, 0.02))  # watching the task
            result = TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="Success")
            await store.mark_finished(job.key, result)

        async with anyio.create_task_group() as group:
            group.start_soon(heartbeats)
            first = True
            while True:
                jobs = await store.claim(worker, 2, lease)
                if first and pause and jobs:
                    print("claimed", *(job.key for job in jobs), flush=True)
                    await anyio.to_thread.run_sync(sys.stdin.readline)
                first = first and not jobs
                for job in jobs:
                    await work(job)
                if not jobs:
                    if not OPEN & set(await store.counts()):
                        break
                    await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    await service.close()


if __name__ == "__main__":
    dsn, schema, worker, lease = sys.argv[1:5]
    anyio.run(main, dsn, schema, worker, float(lease), "--pause" in sys.argv)
