"""`hailuo batch` / `hailuo work` processes on one account share its limits through PostgreSQL.

The fake runs in the test's process and enforces the account's limits (requests per minute
and active tasks, time-scaled); every worker is a real `hailuo` process given those same
limits. With a postgresql:// journal they coordinate through its database by default, so
together they keep them: the fake serves no 429. Assertions are on the fake's counters and
the database's rows, never on how long anything took.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from pgutil import (
    DSN,
    add_jobs,
    admin,
    fake_env,
    finish,
    hailuo_work,
    journal_url,
    running,
)

from hailuo_async.journal import JobState, PostgresJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

BATCH = "shared"
SCALE = 0.02
RPM = 60
CAP = 2


def fake() -> FakeHailuoServer:
    """The account: RPM requests per (scaled) minute, CAP active tasks, 40 s jobs."""
    return FakeHailuoServer(
        time_scale=SCALE,
        seed=11,
        job_duration=Fixed(40.0),
        requests_per_minute=RPM,
        max_active_tasks=CAP,
    )


def _worker(
    server: FakeHailuoServer,
    schema: str,
    name: str,
    out: Path,
    extra: Sequence[str] = (),
    *,
    scale: float = SCALE,
    cap: int = CAP,
    rpm: float | None = RPM,
) -> AbstractAsyncContextManager[Process]:
    return hailuo_work(
        server,
        journal_url(DSN, schema),
        BATCH,
        name,
        out,
        lease=5,
        scale=scale,
        max_active=cap,
        rpm=rpm,
        extra=extra,
    )


def _batch(
    server: FakeHailuoServer, file: Path, out: Path, *options: str
) -> AbstractAsyncContextManager[Process]:
    """A `hailuo batch FILE` process with the account's limits, against the fake."""
    command = [sys.executable, "-m", "hailuo_async.cli", "batch", str(file), "--out", str(out)]
    limits = ["--max-active", str(CAP), "--rpm", str(RPM), "--time-scale", str(SCALE)]
    return running([*command, *limits, *options], fake_env(server))


def _rows(schema: str, table: str, columns: str) -> list[tuple[object, ...]]:
    """``columns`` of every row of ``table`` in ``schema`` (none when the table was never made)."""
    with admin() as connection:
        found = connection.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',)).fetchone()
        if found is None or found[0] is None:
            return []
        return connection.execute(f'SELECT {columns} FROM "{schema}".{table}').fetchall()  # noqa: S608


def _account_caps(schema: str) -> list[object]:
    """The active-job cap of each account whose limits are shared in ``schema``."""
    return [cap for (cap,) in _rows(schema, "account_limits", "active_cap")]


async def _recorded(schema: str, n: int) -> None:
    """Wait until the batch holds ``n`` jobs (another process adds them; no event to wait on)."""
    while len(_rows(schema, "hailuo_jobs", "key")) < n:  # noqa: ASYNC110
        await anyio.sleep(0.05)


async def test_batch_and_two_workers_share_the_journal_s_limits(
    pg_schema: str, tmp_path: Path
) -> None:
    """`hailuo batch` plus two `hailuo work`, each given the account limits: no 429, none twice."""
    n = 12
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a heron, take {i}\n" for i in range(n)))
    journal = journal_url(DSN, pg_schema)
    async with fake() as server:
        async with AsyncExitStack() as stack:
            adder = await stack.enter_async_context(
                _batch(server, prompts, tmp_path / "b", "--journal", journal, "--name", BATCH)
            )
            with anyio.fail_after(90):
                await _recorded(pg_schema, n)
                workers = [
                    await stack.enter_async_context(_worker(server, pg_schema, f"w{i}", tmp_path))
                    for i in range(2)
                ]
                finished = [await finish(worker) for worker in workers]
                batch_code, batch_lines = await finish(adder)
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0]
    assert batch_code == 0
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        records = await store.get_many()
    assert len(records) == n
    assert {r.state for r in records.values()} == {JobState.FINISHED}
    assert all(record.attempts == 1 for record in records.values())
    assert {record.task_id for record in records.values()} == set(stats.task_ids)
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    # Each job reported once: by a worker (its key) or by the batch (its line).
    printed = [key for _, keys in finished for key in keys]
    assert len(set(printed)) == len(printed)
    assert len(printed) + batch_lines.count("line") == n
    assert stats.rate_limited == {}, "the coordinated processes overshot the account's limits"
    # They coordinated through the journal's own database and schema, with the limits given.
    assert _account_caps(pg_schema) == [CAP]
    # `hailuo status` shows them: the rate and cap given, no active job left, no 429.
    status = [sys.executable, "-m", "hailuo_async.cli", "status", "--journal", journal]
    async with running([*status, "--name", BATCH]) as process:
        code, out, _ = await _outputs(process)
    assert code == 0
    assert "Shared account limits" in out
    row = next(line for line in out.splitlines() if line.startswith("│ key-"))
    cells = [cell.strip() for cell in row.split("│")[2:7]]
    assert cells == [str(RPM), f"0 of {CAP}", "0", "no", "0"]


async def test_workers_joining_a_running_batch_get_their_share(
    pg_schema: str, tmp_path: Path
) -> None:
    """Two `hailuo work` join a `hailuo batch` that holds every place: each finishes jobs.

    The batch's jobs last three rounds of places; a free place goes to the waiting process
    that holds fewest, so the workers get places as the batch's first jobs end.
    """
    n, cap, scale = 9, 3, 0.05
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a crane, take {i}\n" for i in range(n)))
    journal = journal_url(DSN, pg_schema)
    server = FakeHailuoServer(
        time_scale=scale, seed=25, job_duration=Fixed(60.0), max_active_tasks=cap
    )
    limits = ["--max-active", str(cap), "--time-scale", str(scale)]
    command = [sys.executable, "-m", "hailuo_async.cli", "batch", str(prompts)]
    command += ["--out", str(tmp_path / "batch"), "--journal", journal, "--name", BATCH]
    async with server, AsyncExitStack() as stack:
        adder = await stack.enter_async_context(running([*command, *limits], fake_env(server)))
        with anyio.fail_after(120):
            while not server.task_ids:  # noqa: ASYNC110 - the batch is running: no event
                await anyio.sleep(0.05)
            workers = [
                await stack.enter_async_context(
                    _worker(server, pg_schema, f"w{i}", tmp_path, scale=scale, cap=cap, rpm=None)
                )
                for i in range(2)
            ]
            finished = [await finish(worker) for worker in workers]
            batch_code, _ = await finish(adder)
        stats = server.stats
    assert [code for code, _ in finished] == [0, 0]
    assert batch_code == 0
    assert stats.submissions_accepted == n
    assert stats.duplicate_submissions == 0
    assert stats.rate_limited == {}
    # Each process finished jobs, and the journal saved each video in its folder.
    with admin() as connection:
        paths = connection.execute(
            f'SELECT path FROM "{pg_schema}".hailuo_jobs WHERE state = %s',  # noqa: S608
            ("finished",),
        ).fetchall()
    done = {Path(str(path)).parent.name for (path,) in paths}
    assert len(paths) == n
    assert done == {"batch", "w0", "w1"}, "a worker that joined got no job"
    assert all(keys for _, keys in finished)


async def test_independent_sqlite_batches_share_one_account(pg_schema: str, tmp_path: Path) -> None:
    """Two `hailuo batch` runs with journals of their own and --coordination URL: no 429."""
    n = 5
    coordination = journal_url(DSN, pg_schema)
    async with fake() as server:
        async with AsyncExitStack() as stack:
            runs = []
            for name in ("a", "b"):
                prompts = tmp_path / f"{name}.txt"
                prompts.write_text("".join(f"{name}: a kite, take {i}\n" for i in range(n)))
                runs.append(
                    await stack.enter_async_context(
                        _batch(server, prompts, tmp_path / name, "--coordination", coordination)
                    )
                )
            with anyio.fail_after(90):
                finished = [await finish(run) for run in runs]
        stats = server.stats
    assert [(code, len(lines)) for code, lines in finished] == [(0, n), (0, n)]
    assert stats.submissions_accepted == 2 * n
    assert stats.submission_attempts == 2 * n
    assert stats.rate_limited == {}
    assert _account_caps(pg_schema) == [CAP]


async def _outputs(process: Process) -> tuple[int, str, str]:
    """A finished process's exit status, stdout and stderr."""
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = b"", b""
    async for chunk in process.stdout:
        out += chunk
    async for chunk in process.stderr:
        err += chunk
    return await process.wait(), out.decode(), err.decode()


@pytest.mark.parametrize(
    ("nowhere", "shown"),
    [
        (
            "postgresql://postgres:secret@127.0.0.1:1/test",
            "postgresql://postgres:***@127.0.0.1:1/test",
        ),
        (
            "postgresql://postgres@127.0.0.1:1/test?password=secret",
            "postgresql://postgres@127.0.0.1:1/test?password=***",
        ),
    ],
)
async def test_a_wrong_coordination_url_is_one_line_and_exit_2(
    pg_schema: str, tmp_path: Path, nowhere: str, shown: str
) -> None:
    """A database that cannot be reached: one line, exit 2, no request sent, no job claimed."""
    await add_jobs(DSN, pg_schema, BATCH, ["an owl"])
    async with fake() as server:
        async with _worker(
            server, pg_schema, "w", tmp_path, extra=["--coordination", nowhere]
        ) as worker:
            with anyio.fail_after(60):
                code, _, err = await _outputs(worker)
        stats = server.stats
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot coordinate limits through {shown}")
    assert "secret" not in err
    assert stats.submission_attempts == 0
    assert stats.polls_total == 0
    async with PostgresJobStore(DSN, batch=BATCH, schema=pg_schema) as store:
        assert await store.counts() == {JobState.RECORDED: 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--coordination", "mysql://db/x"], "error: --coordination must be a postgresql:// URL"),
        (["--coordination", f"{DSN}?schema=Bad-Name"], "error: the URL's ?schema=: must be"),
        (["--coordination", DSN, "--no-coordination"], "error: give --coordination URL or"),
        (["--coordination", DSN, "--simulate"], "error: --coordination cannot be used with"),
    ],
)
async def test_coordination_settings_that_cannot_work_are_refused(
    pg_schema: str, tmp_path: Path, options: list[str], message: str
) -> None:
    """A setting that cannot work: one line, exit 2, before any request."""
    async with fake() as server:
        async with _worker(server, pg_schema, "w", tmp_path, extra=options) as worker:
            with anyio.fail_after(60):
                code, _, err = await _outputs(worker)
        stats = server.stats
    assert (code, len(err.strip().splitlines())) == (2, 1), err
    assert err.startswith(message)
    assert stats.submission_attempts == stats.polls_total == 0


async def test_no_coordination_keeps_the_limits_to_the_process(
    pg_schema: str, tmp_path: Path
) -> None:
    """--no-coordination: the worker finishes the batch and writes no shared limits."""
    await add_jobs(DSN, pg_schema, BATCH, ["a wren", "a finch"])
    async with fake() as server:
        async with _worker(server, pg_schema, "w", tmp_path, extra=["--no-coordination"]) as worker:
            with anyio.fail_after(60):
                code, keys = await finish(worker)
    assert (code, sorted(keys)) == (0, ["job-0", "job-1"])
    assert _account_caps(pg_schema) == []
