"""Three processes, each with its own client, on one account: shared limits meet no 429.

The fake enforces the account's limits (requests per minute and active jobs). Three
uncoordinated workers, each given the full limits, together overshoot them and meet 429s;
the same three coordinated through PostgreSQL meet none. Only the fake's own 429 counter
is asserted on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from pgutil import DSN

from hailuo_async.testing import FakeHailuoServer, Uniform

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("client_child.py")
SCALE = 0.02
RPM = 120
CAP = 3
WORKERS = 3
JOBS_EACH = 5


async def _line(process: Process) -> dict[str, Any]:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        chunk = await process.stdout.receive(1)
        data += chunk
    parsed: dict[str, Any] = json.loads(data)
    return parsed


async def run_workers(
    server: FakeHailuoServer, dsn: str | None, schema: str
) -> list[dict[str, Any]]:
    """Start the workers, let them go together, return their reports (jobs done, round trips)."""
    processes: list[Process] = []
    try:
        for index in range(WORKERS):
            settings = {
                "name": f"w{index}",
                "url": server.url,
                "api_key": server.api_key,
                "scale": SCALE,
                "rpm": RPM,
                "cap": CAP,
                "jobs": JOBS_EACH,
                "dsn": dsn,
                "schema": schema,
            }
            processes.append(
                await anyio.open_process([sys.executable, str(CHILD), json.dumps(settings)])
            )
        with anyio.fail_after(120):
            for process in processes:
                assert (await _line(process)) == {"ready": True}
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            reports = [await _line(process) for process in processes]
            for process in processes:
                assert await process.wait() == 0
        return reports
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.aclose()


def fake() -> FakeHailuoServer:
    """The account: its limits enforced, jobs of 60 to 120 service seconds."""
    return FakeHailuoServer(
        time_scale=SCALE,
        seed=7,
        job_duration=Uniform(60, 120),
        requests_per_minute=RPM,
        max_active_tasks=CAP,
    )


async def test_shared_limits_meet_no_429_where_independent_clients_do(pg_schema: str) -> None:
    """Three coordinated workers finish every job with 0 429s; three independent ones meet some."""
    async with fake() as independent:
        reports = await run_workers(independent, None, pg_schema)
        independent_429s = dict(independent.stats.rate_limited)
    # Not asserted: an uncoordinated worker may give a job up after its retries met 429s.
    independent_done = sum(report["done"] for report in reports)
    async with fake() as shared:
        reports = await run_workers(shared, DSN, pg_schema)
        shared_429s = dict(shared.stats.rate_limited)
        accepted = shared.stats.submissions_accepted
        requests = shared.stats.submission_attempts + shared.stats.polls_total
    round_trips = sum(report["round_trips"] for report in reports)
    print(
        f"429s by cause: independent {independent_429s} ({independent_done} jobs done),"
        f" shared {shared_429s};"
        f" shared: {requests} API requests, {round_trips} limit round trips"
    )
    assert [report["done"] for report in reports] == [JOBS_EACH] * WORKERS
    assert accepted == WORKERS * JOBS_EACH
    assert sum(independent_429s.values()) > 0
    assert shared_429s == {}
