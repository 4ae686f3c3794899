"""Worker processes sharing one batch: kill -9 and SIGSTOP lose no job and pay for none twice.

Each test asserts on the final rows (the journal and the fake service's ``posts``), never on
how long anything took.
"""

from __future__ import annotations

import random
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from pgutil import DSN, admin, running

from hailuo_async.extend import JobSpec
from hailuo_async.journal import JobRecord, JobState, PostgresJobStore

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("worker.py")
BATCH = "faults"


async def _prepare(schema: str, n: int) -> None:
    async with PostgresJobStore(DSN, batch=BATCH, schema=schema) as store:
        await store.record(
            [JobSpec(key=f"job-{i}", index=i, payload={}, fingerprint=str(i)) for i in range(n)]
        )
    with admin() as connection:
        connection.execute(f'CREATE TABLE "{schema}".posts (key text, worker text, task_id text)')


def _posts(schema: str) -> dict[str, list[tuple[str, str]]]:
    """What each job's POSTs were: (worker, task id) per POST."""
    posts: dict[str, list[tuple[str, str]]] = {}
    with admin() as connection:
        rows = connection.execute(
            f'SELECT key, worker, task_id FROM "{schema}".posts'  # noqa: S608
        ).fetchall()
    for key, worker, task_id in rows:
        posts.setdefault(str(key), []).append((str(worker), str(task_id)))
    return posts


def _worker(
    schema: str, name: str, lease: float, *flags: str
) -> AbstractAsyncContextManager[Process]:
    return running([sys.executable, str(WORKER), DSN, schema, name, str(lease), *flags])


async def _until(done: Callable[[], bool]) -> None:
    """Polls the database (another process changes it: there is no event to wait for)."""
    while True:
        if done():
            return
        await anyio.sleep(0.02)


async def _records(schema: str) -> dict[str, JobRecord]:
    async with PostgresJobStore(DSN, batch=BATCH, schema=schema) as store:
        return dict(await store.get_many())


async def test_a_killed_worker_loses_no_job_and_none_is_paid_twice(pg_schema: str) -> None:
    """kill -9 one of three workers mid-batch: its jobs are taken over, none POSTed twice."""
    n = 60
    await _prepare(pg_schema, n)
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(_worker(pg_schema, f"w{i}", 1.0)) for i in range(3)
        ]
        with anyio.fail_after(60):
            await _until(lambda: sum(map(len, _posts(pg_schema).values())) >= 10)
            await anyio.sleep(random.uniform(0, 0.2))
            workers[0].send_signal(signal.SIGKILL)
            for survivor in workers[1:]:
                assert await survivor.wait() == 0
    records = await _records(pg_schema)
    posts = _posts(pg_schema)
    assert len(records) == n
    for key, record in records.items():
        assert record.state in (JobState.FINISHED, JobState.UNKNOWN), key
        assert len(posts.get(key, [])) <= 1, f"{key} was POSTed twice: {posts[key]}"
        if record.state is JobState.FINISHED:
            assert [task for _, task in posts[key]] == [record.task_id]
        else:
            # Only a job the killed worker had begun to submit may be unknown.
            assert record.error_type == "SubmissionUnknownError"
            assert all(worker == "w0" for worker, _ in posts.get(key, []))
    unknown = [k for k, r in records.items() if r.state is JobState.UNKNOWN]
    assert len(unknown) <= 1


async def test_a_stopped_worker_cannot_submit_a_job_another_worker_took(pg_schema: str) -> None:
    """SIGSTOP past the lease, SIGCONT: the stopped worker's submissions are refused by fencing."""
    n = 6
    await _prepare(pg_schema, n)
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as thief:
        async with _worker(pg_schema, "sleeper", 1.0, "--pause") as sleeper:
            assert sleeper.stdout is not None
            assert sleeper.stdin is not None
            lines = BufferedByteReceiveStream(sleeper.stdout)
            with anyio.fail_after(60):
                claimed = (await lines.receive_until(b"\n", 200)).decode().split()
                assert claimed == ["claimed", "job-0", "job-1"]
                sleeper.send_signal(signal.SIGSTOP)
                # Once the sleeper's lease ran out, another worker holds job-0...
                while [r.key for r in await thief.claim("thief", 1, 600)] != ["job-0"]:
                    await thief.release("thief")
                    await anyio.sleep(0.1)
                # ...and a third finishes every other job, job-1 included.
                async with _worker(pg_schema, "busy", 1.0):
                    while True:
                        if (await thief.counts()).get(JobState.FINISHED, 0) == n - 1:
                            break
                        await anyio.sleep(0.05)
                sleeper.send_signal(signal.SIGCONT)
                await sleeper.stdin.send(b"go\n")
                refusals = {(await lines.receive_until(b"\n", 200)).decode() for _ in range(2)}
                assert refusals == {
                    "refused job-0 LeaseLostError",
                    "refused job-1 InvalidTransitionError",
                }
                assert await thief.release("thief") == 1
                assert await sleeper.wait() == 0
    records = await _records(pg_schema)
    posts = _posts(pg_schema)
    assert all(r.state is JobState.FINISHED for r in records.values())
    assert {key: len(p) for key, p in posts.items()} == {f"job-{i}": 1 for i in range(n)}
    # job-1 was POSTed by the worker that took it over, never by the one that had slept.
    assert posts["job-1"][0][0] == "busy"
