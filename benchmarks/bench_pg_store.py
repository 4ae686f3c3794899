"""PostgresJobStore under concurrent claimers: p95 claim latency and round trips per job.

For each number of claimers (1, 2, 4), a fresh schema gets one batch of ``--jobs`` jobs; each
claimer is a coroutine with a store (so a connection) of its own that claims ``--claim-size``
jobs at a time and takes each through mark_submitting (fenced by its lease), mark_submitted
and mark_finished, as a worker whose POSTs and watches took no time would. Reported per run:
wall time, jobs per second, claim latency p50/p95, the round trips the stores sent per job
(BEGIN and COMMIT included; the one bulk ``record`` and the final empty claims too), and two
checks: jobs not finished (lost) and jobs submitted more than once (duplicates), both 0.

Needs a PostgreSQL server: ``HAILUO_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the schemas it makes are dropped after.

    python -m benchmarks.bench_pg_store [--jobs 2000] [--claimers 1 2 4] [--claim-size 1 10]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time

import anyio
import psycopg

from hailuo_async import TaskResult, TaskStatus
from hailuo_async.extend import JobSpec
from hailuo_async.journal import JobState, PostgresJobStore

DSN = os.environ.get("HAILUO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = "bench"


def _specs(jobs: int) -> list[JobSpec]:
    return [
        JobSpec(
            key=f"{i:064x}#1",
            index=i,
            payload={"prompt": f"a paper boat drifting down a rain gutter, take {i}"},
            fingerprint=f"{i:064x}",
        )
        for i in range(jobs)
    ]


async def _claimer(
    store: PostgresJobStore, worker: str, claim_size: int, latencies: list[float]
) -> None:
    while True:
        started = time.perf_counter()
        jobs = await store.claim(worker, claim_size, lease_seconds=30)
        latencies.append(time.perf_counter() - started)
        if not jobs:
            return
        for job in jobs:
            await store.mark_submitting(job.key, worker_id=worker)
            task_id = f"task-{job.index}"
            await store.mark_submitted(job.key, task_id)
            result = TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="Success")
            await store.mark_finished(job.key, result)


async def _run(jobs: int, claimers: int, claim_size: int) -> dict[str, float]:
    schema = f"hailuo_bench_{secrets.token_hex(4)}"
    stores = [PostgresJobStore(DSN, batch=BATCH, schema=schema) for _ in range(claimers)]
    latencies: list[float] = []
    try:
        for store in stores:
            await store.open()
        round_trips_before = sum(store.round_trips for store in stores)
        await stores[0].record(_specs(jobs))
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for i, store in enumerate(stores):
                group.start_soon(_claimer, store, f"w{i}", claim_size, latencies)
        seconds = time.perf_counter() - started
        round_trips = sum(store.round_trips for store in stores) - round_trips_before
        records = await stores[0].get_many()
    finally:
        for store in stores:
            await store.aclose()
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    latencies.sort()
    return {
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "claim_p50_ms": 1000 * statistics.median(latencies),
        "claim_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "round_trips_per_job": round_trips / jobs,
        "lost": sum(1 for r in records.values() if r.state is not JobState.FINISHED),
        "duplicates": sum(1 for r in records.values() if r.attempts > 1),
    }


async def _main(args: argparse.Namespace) -> None:
    print(f"{args.jobs} jobs, claim -> submitting -> submitted -> finished; {DSN}\n")
    header = (
        "| claimers | claim size | wall s | jobs/s | claim p50 ms | claim p95 ms "
        "| round trips/job | lost | duplicates |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for claim_size in args.claim_size:
        for claimers in args.claimers:
            row = await _run(args.jobs, claimers, claim_size)
            print(
                f"| {claimers} | {claim_size} | {row['seconds']:.1f} | {row['jobs_per_s']:,.0f} "
                f"| {row['claim_p50_ms']:.2f} | {row['claim_p95_ms']:.2f} "
                f"| {row['round_trips_per_job']:.2f} | {row['lost']:.0f} "
                f"| {row['duplicates']:.0f} |",
                flush=True,
            )


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--claim-size", type=int, nargs="+", default=[1, 10])
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
