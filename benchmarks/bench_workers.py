"""Scenario 9, workers: 1, 2, 4 and 8 worker processes share one batch in PostgreSQL.

The fake (in its own process) enforces the account's limits: ``max_active_tasks=ACTIVE_CAP``
and ``requests_per_minute=RPM`` (time-scaled). One batch of JOBS jobs is added to a
PostgreSQL journal, then N processes each run ``client.work(store)`` on it. Jobs take
DURATION service seconds, so the physical ceiling is ``min(ACTIVE_CAP * 60 / DURATION,
RPM / 2)`` jobs per service minute (each job needs at least one POST and one GET).

Limits, in two modes: *per_process* (``--per-process``), each process has its own client
limits, the account's divided by N (``requests_per_minute = RPM / N``, ``max_active_jobs =
max(1, ACTIVE_CAP // N)``): the baseline that needs no coordination; *shared*
(``--shared``), every process's client takes the account's full limits and
``coordination=Coordination(dsn)``: the limits are shared through PostgreSQL.

Reported per N: jobs per service minute (first submission to last end, from the journal's
own timestamps, so process start-up is not counted) over the ceiling; 429s per 1,000 jobs;
duplicate submissions (accepted POSTs repeating a body) and jobs lost (not finished at the
end); journal round trips per job (``PostgresJobStore.round_trips`` summed over workers),
in shared mode the shared limits' round trips per API request (submits and polls the
fake answered), and the p95 of a claim's latency.

Parameters, and why:

- ``TIME_SCALE = 0.25`` (a job of 1 service second lasts 0.25 s): at 0.1, every job's fixed
  costs (about four journal round trips, an HTTP request each way, the scheduling of nine
  processes: the fake, PostgreSQL and the workers, on a 2-core machine) weigh 2.5 times more
  against a job's length, and the figure measured the machine, not the client: at 8 workers
  shared and per-process limits alike fell to about 0.80 of the ceiling, CPU-bound. At 0.25
  the shared limits reach 0.95 at every N (the share of the budget they spend by design),
  and independent clients up to 4 workers (at 8, their caps of ``10 // 8`` leave 2 of the
  account's 10 places unused).
- The poll policy's ``first_poll_delay`` is the job's length (1 service second) instead of
  the default 10 s: a real job lasts minutes, so the default comes before its end, but here
  it would hold the first ten places idle for ten job lengths before any duration is learnt
  (in the quick run, a tenth of the whole span).
- The example limits (10 active jobs, 600 requests per minute), the ceiling and the 2,000
  jobs of the full run are the issue's; ``--quick`` works 400.

    python -m benchmarks.bench_workers [--quick] [--shared | --per-process]

Without either flag (and in ``python -m benchmarks.run``) both modes run, one after the
other, so the 429s with shared limits stand beside those of the same processes with
independent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import secrets
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks._common import (
    _SPAWN,
    FakeProcess,
    ScenarioResult,
    markdown_table,
    percentile,
    timed,
)

NAME = "workers"
TITLE = "9. Workers: N processes on one batch in PostgreSQL"
ACTIVE_CAP = 10
RPM = 600
DURATION = 1.0  # service seconds per job
TIME_SCALE = 0.25
WORKERS = (1, 2, 4, 8)
DSN = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = "bench"


def _work(
    *, url: str, api_key: str, dsn: str, schema: str, workers: int, shared: bool
) -> dict[str, Any]:
    return asyncio.run(
        _work_async(
            url=url, api_key=api_key, dsn=dsn, schema=schema, workers=workers, shared=shared
        )
    )


async def _work_async(
    *, url: str, api_key: str, dsn: str, schema: str, workers: int, shared: bool
) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    from hailuo_async import Coordination, HailuoClient, Limits, PollPolicy
    from hailuo_async.journal import PostgresJobStore

    window = 60.0 * TIME_SCALE
    # The first poll comes after a job's length (the policy's default, 10 s, is shorter than
    # a real job but ten of these 1 s jobs): until durations are learnt, it sets the start.
    policy = PollPolicy(first_poll_delay=DURATION).scaled(TIME_SCALE)
    options: dict[str, Any] = {"poll_policy": policy}
    async with AsyncExitStack() as stack:
        if shared:
            # The client opens the coordination: limits shared through PostgreSQL, per the
            # fake's scaled rate window (Limits.rate_window), the account's full limits.
            options["limits"] = Limits(
                requests_per_minute=RPM, max_active_jobs=ACTIVE_CAP, rate_window=window
            )
            options["coordination"] = Coordination(dsn, schema=schema)
        else:
            options["limits"] = Limits(
                requests_per_minute=RPM / workers,
                max_active_jobs=max(1, ACTIVE_CAP // workers),
                rate_window=window,
            )
        client = await stack.enter_async_context(
            HailuoClient(api_key=api_key, base_url=url, **options)
        )
        store = await stack.enter_async_context(PostgresJobStore(dsn, batch=BATCH, schema=schema))
        stream = client.work(store, lease=10.0, idle_poll=0.2)
        done = 0
        async with stream as outcomes:
            async for outcome in outcomes:
                done += outcome.ok
        # The shared limits the client opened (None with per-process limits): their counter.
        coordinator = client._coordinator
        return {
            "done": done,
            "round_trips": store.round_trips,
            "limits_round_trips": 0 if coordinator is None else coordinator.limits.round_trips,
            "claims": stream.claim_latencies,
        }


def measure(workers: int, jobs: int, *, shared: bool) -> dict[str, Any]:
    """One batch worked by ``workers`` processes against a fresh fake and schema."""
    import psycopg

    from hailuo_async import VideoRequest
    from hailuo_async._decoding import request_to_json
    from hailuo_async.journal import JobSpec, PostgresJobStore
    from hailuo_async.testing import Fixed

    schema = f"bench_workers_{secrets.token_hex(4)}"

    async def add() -> None:
        async with PostgresJobStore(DSN, batch=BATCH, schema=schema) as store:
            requests = [VideoRequest(f"benchmark job {i}") for i in range(jobs)]
            await store.record(
                [
                    JobSpec(
                        key=f"j{i}", index=i, payload=request_to_json(r), fingerprint=r.fingerprint
                    )
                    for i, r in enumerate(requests)
                ]
            )

    try:
        asyncio.run(add())
        with FakeProcess(
            time_scale=TIME_SCALE,
            seed=9,
            job_duration=Fixed(DURATION),
            max_active_tasks=ACTIVE_CAP,
            requests_per_minute=RPM,
        ) as fake:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
                futures = [
                    pool.submit(
                        _work,
                        url=fake.url,
                        api_key=fake.api_key,
                        dsn=DSN,
                        schema=schema,
                        workers=workers,
                        shared=shared,
                    )
                    for _ in range(workers)
                ]
                results = [future.result() for future in futures]
            stats = fake.stats()
        with psycopg.connect(DSN, autocommit=True) as connection:
            row = connection.execute(
                f"SELECT count(*) FILTER (WHERE state = %s),"  # noqa: S608
                " extract(epoch FROM max(finished_at) - min(submitted_at))"
                f' FROM "{schema}".hailuo_jobs WHERE batch = %s',
                ("finished", BATCH),
            ).fetchone()
    finally:
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert row is not None
    finished, span = int(row[0]), float(row[1] or 0.0)
    service_minutes = span / TIME_SCALE / 60.0
    claims = [latency for result in results for latency in result["claims"]]
    return {
        "workers": workers,
        "finished": finished,
        "lost": jobs - finished,
        "jobs_per_min": finished / service_minutes if service_minutes else float("nan"),
        "rate_limited": stats["rate_limited_total"],
        "duplicates": stats["duplicate_submissions"],
        "accepted": stats["submissions_accepted"],
        "round_trips_per_job": sum(r["round_trips"] for r in results) / jobs,
        "limits_round_trips_per_request": sum(r["limits_round_trips"] for r in results)
        / max(1, stats["submission_attempts"] + stats["polls_total"]),
        "claim_p95_ms": (percentile(claims, 0.95) or 0.0) * 1000,
        "claims": len(claims),
    }


def run(*, quick: bool = False, shared: bool | None = None) -> ScenarioResult:
    """The same batch worked by 1, 2, 4 and 8 processes; with ``shared`` None, in both modes."""
    jobs = 400 if quick else 2_000
    ceiling = min(ACTIVE_CAP * 60.0 / DURATION, RPM / 2.0)
    modes = (True, False) if shared is None else (shared,)
    figures: dict[str, Any] = {
        "jobs": jobs,
        "limits": "both" if shared is None else _mode(shared),
        "fake_max_active_tasks": ACTIVE_CAP,
        "fake_requests_per_minute": RPM,
        "job_duration_s": DURATION,
        "time_scale": TIME_SCALE,
        "ceiling_jobs_per_min": ceiling,
    }
    rows: list[list[object]] = []
    with timed() as elapsed:
        for mode_shared, workers in itertools.product(modes, WORKERS):
            mode = _mode(mode_shared)
            result = measure(workers, jobs, shared=mode_shared)
            ratio = result["jobs_per_min"] / ceiling
            prefix = f"{mode}_{workers}w"
            figures[f"{prefix}_jobs_per_min"] = result["jobs_per_min"]
            figures[f"{prefix}_jobs_per_min_vs_ceiling_ratio"] = ratio
            figures[f"{prefix}_429_per_1000_jobs"] = result["rate_limited"] * 1000 / jobs
            figures[f"{prefix}_duplicate_submissions"] = result["duplicates"]
            figures[f"{prefix}_jobs_lost"] = result["lost"]
            figures[f"{prefix}_db_round_trips_per_job"] = result["round_trips_per_job"]
            if mode_shared:
                figures[f"{prefix}_limits_round_trips_per_request"] = result[
                    "limits_round_trips_per_request"
                ]
            figures[f"{prefix}_claim_p95_ms"] = result["claim_p95_ms"]
            rows.append(
                [
                    mode,
                    workers,
                    f"{result['finished']} / {jobs}",
                    result["jobs_per_min"],
                    ratio,
                    result["rate_limited"] * 1000 / jobs,
                    result["duplicates"],
                    result["lost"],
                    result["round_trips_per_job"],
                    result["limits_round_trips_per_request"],
                    result["claim_p95_ms"],
                ]
            )
    table = markdown_table(
        [
            "limits",
            "workers",
            "finished",
            "jobs/min",
            "÷ ceiling",
            "429s / 1,000 jobs",
            "duplicate POSTs",
            "jobs lost",
            "journal round trips / job",
            "limits round trips / API request",
            "claim p95 (ms)",
        ],
        rows,
    )
    limits = "; ".join(
        "shared: the account's, through PostgreSQL (HailuoClient(coordination=...))"
        if mode_shared
        else "per_process: each process its own client limits, the account's / N"
        for mode_shared in modes
    )
    notes = [
        f"{jobs} jobs of {DURATION:g} service s; fake max_active_tasks={ACTIVE_CAP},"
        f" requests_per_minute={RPM}; time_scale {TIME_SCALE:g}; ceiling min(cap*60/duration,"
        f" RPM/2) = {ceiling:g} jobs/min. Limits: {limits}. Rate from the journal's first"
        " submission to its last end (process start-up not counted).",
    ]
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


def _mode(shared: bool) -> str:
    return "shared" if shared else "per_process"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_workers [--quick] [--shared | --per-process] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_workers")
    parser.add_argument("--quick", action="store_true", help="400 jobs instead of 2,000")
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--shared",
        dest="shared",
        action="store_const",
        const=True,
        help="only the account's limits shared through PostgreSQL (coordination=)",
    )
    only.add_argument(
        "--per-process",
        dest="shared",
        action="store_const",
        const=False,
        help="only independent clients, each with the account's limits / N",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    # Imported by the package name, so the workers sent to child processes pickle.
    module = importlib.import_module("benchmarks.bench_workers")
    result: ScenarioResult = module.run(quick=args.quick, shared=args.shared)
    print(result.render())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
