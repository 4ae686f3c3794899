"""The PostgreSQL server the tests use, and a fresh schema for each test."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import psycopg
import pytest
from anyio.abc import Process

from hailuo_async import VideoRequest
from hailuo_async.extend import job_specs
from hailuo_async.journal import JobRecord, JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Stats

DSN = os.environ.get("HAILUO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("HAILUO_REQUIRE_POSTGRES") == "1"

_unreachable: list[str] = []


def require_postgres() -> None:
    """Skip (loudly) when no server answers at DSN; fail instead when HAILUO_REQUIRE_POSTGRES=1."""
    if not _unreachable:
        try:
            with psycopg.connect(DSN, connect_timeout=3) as connection:
                connection.execute("SELECT 1")
            _unreachable.append("")
        except psycopg.Error as exc:
            _unreachable.append(f"no PostgreSQL answers at HAILUO_TEST_POSTGRES={DSN}: {exc}")
    reason = _unreachable[0]
    if not reason:
        return
    if REQUIRED:
        pytest.fail(f"HAILUO_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL TESTS: {reason}")


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the test database, for setting up and checking."""
    return psycopg.connect(DSN, autocommit=True)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A schema name no other test uses; the schema (if created) is dropped afterwards."""
    require_postgres()
    schema = f"hailuo_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        with admin() as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def running(
    command: Sequence[str], env: Mapping[str, str] | None = None, *, log: Path | None = None
) -> AsyncIterator[Process]:
    """A child process, killed (if still running) and reaped when the block ends.

    With ``log``, its standard error goes to that file (read by a failed check), not a pipe.
    """
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("wb")) if log is not None else subprocess.PIPE
        async with await anyio.open_process(list(command), env=env, stderr=stderr) as process:
            try:
                yield process
            finally:
                if process.returncode is None:
                    process.kill()
                await process.wait()


def journal_url(dsn: str, schema: str) -> str:
    """A journal URL for ``schema`` in the database of ``dsn``."""
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def hailuo_work(
    server: FakeHailuoServer,
    journal: str,
    batch: str,
    name: str,
    out: Path,
    *,
    lease: float,
    scale: float,
    max_active: int = 4,
    rpm: float | None = None,
    extra: Sequence[str] = (),
    log_stderr: bool = False,
) -> AbstractAsyncContextManager[Process]:
    """A `hailuo work` process named ``name`` working ``batch`` against the fake (+ ``extra``).

    With ``log_stderr``, its standard error goes to ``out/<name>.log`` (for a failed check).
    """
    command = [
        sys.executable,
        "-m",
        "hailuo_async.cli",
        "work",
        "--journal",
        journal,
        "--name",
        batch,
        "--out",
        str(out / name),
        "--worker-id",
        name,
        "--lease",
        str(lease),
        "--max-active",
        str(max_active),
        "--time-scale",
        str(scale),
    ]
    if rpm is not None:
        command += ["--rpm", str(rpm)]
    log = out / f"{name}.log" if log_stderr else None
    return running([*command, *extra], fake_env(server), log=log)


def fake_env(server: FakeHailuoServer) -> dict[str, str]:
    """This process's environment, with the fake's key and URL for a `hailuo` child."""
    return {**os.environ, "HAILUO_API_KEY": server.api_key, "HAILUO_BASE_URL": server.url}


async def finish(process: Process) -> tuple[int, list[str]]:
    """Wait for a `hailuo work` process; its exit status and the keys it printed as finished."""
    assert process.stdout is not None
    output = b""
    async for chunk in process.stdout:
        output += chunk
    code = await process.wait()
    keys = [line.split()[1] for line in output.decode().splitlines() if line.startswith("✓ ")]
    return code, keys


async def add_jobs(dsn: str, schema: str, batch: str, prompts: Sequence[str]) -> None:
    """Record a job per prompt (keys ``job-0``, ``job-1``...) in a shared batch."""
    requests = [VideoRequest(prompt) for prompt in prompts]
    async with PostgresJobStore(dsn, batch=batch, schema=schema) as store:
        await store.record(job_specs(requests, [f"job-{i}" for i in range(len(requests))]))


def _counts(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            f'SELECT state, count(*) FROM "{schema}".hailuo_jobs GROUP BY state'  # noqa: S608
        ).fetchall()
    return {str(state): int(n) for state, n in rows}


async def until_mid_batch(dsn: str, schema: str) -> None:
    """Wait until some jobs finished, some run and some are not sent yet: a fault now hits all.

    Polls the journal: other processes change it, there is no event to wait for.
    """
    while True:
        counts = await anyio.to_thread.run_sync(_counts, dsn, schema)
        if counts.get("finished", 0) >= 3 and counts.get("submitted") and counts.get("recorded"):
            return
        await anyio.sleep(0.02)


def check_each_job_paid_and_finished_once(
    records: Mapping[str, JobRecord],
    stats: Stats,
    printed: Sequence[str],
    *,
    logs: Path | None = None,
) -> None:
    """Every job finished, its body accepted once, its journaled task the fake's; reported once.

    ``logs``: the folder of the workers' standard error (``hailuo_work``), shown on failure.
    """
    assert {key: record.state for key, record in records.items()} == dict.fromkeys(
        records, JobState.FINISHED
    )
    assert stats.submissions_accepted == len(records)
    assert stats.duplicate_submissions == 0
    assert {record.task_id for record in records.values()} == set(stats.task_ids)
    # One POST per job reached the service. A job may be journaled `submitting` twice: a
    # worker whose lease ran out before its POST left takes the first back unsent.
    assert stats.submission_attempts == len(records)
    assert all(record.attempts >= 1 for record in records.values())
    assert sorted(printed) == sorted(records), f"reported: {sorted(printed)}" + "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
        for log in sorted(logs.glob("*.log") if logs is not None else ())
    )
