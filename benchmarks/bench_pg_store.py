"""PostgresJobStore under concurrent claimers: p95 claim latency and round trips per job.

For each number of claimers (1, 2, 4), a fresh schema gets one batch of ``--jobs`` jobs; each
claimer is a coroutine with a store (so a connection) of its own that claims ``--claim-size``
jobs at a time and takes each through mark_submitting (fenced by its lease), mark_submitted
and mark_finished, as a worker whose POSTs and watches took no time would. Reported per run:
wall time, jobs per second, claim latency p50/p95, the round trips the stores sent per job
(BEGIN and COMMIT included; the one bulk ``record`` and the final empty claims too), and two
checks: jobs not finished (lost) and jobs submitted more than once (duplicates), both 0.

``--large N`` measures one batch of N jobs instead: recording it (in chunks of
``--chunk``, as a batch records), the latency of each of the first 10 claims right after
(the planner's statistics then describe a table N jobs smaller), the p95 of the next
``--claims`` claims by ``--concurrency`` claimers, and what ``hailuo status`` costs at that
size: :meth:`PostgresJobStore.progress` timed alone and the whole command. ``--earlier K``
records (and analyses) an earlier batch of K jobs first, as in a schema already in use.
``--open N`` times N opens and closes of a store on a schema that exists (a connection, the
schema check, the close).

Needs a PostgreSQL server: ``HAILUO_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the schemas it makes are dropped after.

    python -m benchmarks.bench_pg_store [--jobs 2000] [--claimers 1 2 4] [--claim-size 1 10]
    python -m benchmarks.bench_pg_store --large 1000000 [--concurrency 4] [--claims 400]
        [--chunk 10000] [--earlier 2000]
    python -m benchmarks.bench_pg_store --open 100
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time

import anyio
import psycopg

from hailuo_async import TaskResult, TaskStatus
from hailuo_async.extend import JobSpec
from hailuo_async.journal import JobState, PostgresJobStore

DSN = os.environ.get("HAILUO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = "bench"


def _specs(jobs: int, *, start: int = 0) -> list[JobSpec]:
    return [
        JobSpec(
            key=f"{i:064x}#1",
            index=i,
            payload={"prompt": f"a paper boat drifting down a rain gutter, take {i}"},
            fingerprint=f"{i:064x}",
        )
        for i in range(start, jobs)
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


async def _large(args: argparse.Namespace) -> None:
    """One batch of ``args.large`` jobs: recording, first claims, later claims, status."""
    jobs, size = args.large, args.claim_size[0]
    schema = f"hailuo_bench_{secrets.token_hex(4)}"
    url = f"{DSN}{'&' if '?' in DSN else '?'}schema={schema}"
    stores = [
        PostgresJobStore(DSN, batch=BATCH, schema=schema, round_trip_timeout=600)
        for _ in range(args.concurrency)
    ]
    try:
        for store in stores:
            await store.open()
        if args.earlier:
            # A schema in use: an earlier batch, and planner statistics from before this one.
            async with PostgresJobStore(DSN, batch="earlier", schema=schema) as earlier:
                await earlier.record(_specs(args.earlier))
            with psycopg.connect(DSN, autocommit=True) as connection:
                connection.execute(f'ANALYZE "{schema}".hailuo_jobs')
            print(f"an earlier batch of {args.earlier:,} jobs, analysed")
        started = time.perf_counter()
        for first in range(0, jobs, args.chunk):
            await stores[0].record(_specs(min(jobs, first + args.chunk), start=first))
        print(f"recorded {jobs:,} jobs in chunks of {args.chunk:,}: {_since(started):.1f} s")
        first_claims = []
        for _ in range(10):
            started = time.perf_counter()
            await stores[0].claim("w0", size, lease_seconds=300)
            first_claims.append(_since(started) * 1000)
        shown = ", ".join(f"{ms:.1f}" for ms in first_claims)
        print(f"first 10 claims of {size} (ms): {shown}")
        latencies: list[float] = []

        async def claimer(store: PostgresJobStore, worker: str, claims: int) -> None:
            for _ in range(claims):
                started = time.perf_counter()
                await store.claim(worker, size, lease_seconds=300)
                latencies.append(_since(started) * 1000)

        async with anyio.create_task_group() as group:
            for i, store in enumerate(stores):
                group.start_soon(claimer, store, f"w{i}", args.claims // args.concurrency)
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"next {len(latencies)} claims by {args.concurrency} claimers:"
            f" p50 {statistics.median(latencies):.2f} ms, p95 {p95:.2f} ms"
        )
        started = time.perf_counter()
        progress = await stores[0].progress()
        print(f"progress(): {_since(started) * 1000:.0f} ms ({sum(progress.counts.values()):,})")
        started = time.perf_counter()
        command = [sys.executable, "-m", "hailuo_async.cli", "status", "--journal", url]
        status = await anyio.run_process([*command, "--name", BATCH], check=False)
        print(f"hailuo status: {_since(started):.2f} s (exit {status.returncode})")
    finally:
        for store in stores:
            await store.aclose()
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _since(started: float) -> float:
    return time.perf_counter() - started


async def _open_close(times: int) -> None:
    """Open and close a store ``times`` times on an existing schema; print mean and p95."""
    schema = f"hailuo_bench_{secrets.token_hex(4)}"
    try:
        async with PostgresJobStore(DSN, schema=schema):
            pass  # the schema is made once, outside the timing
        seconds = []
        for _ in range(times):
            started = time.perf_counter()
            async with PostgresJobStore(DSN, schema=schema):
                pass
            seconds.append(time.perf_counter() - started)
    finally:
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    seconds.sort()
    mean, p95 = statistics.fmean(seconds) * 1000, seconds[int(0.95 * (times - 1))] * 1000
    print(f"open + close of a store, {times} times: mean {mean:.1f} ms, p95 {p95:.1f} ms")


async def _main(args: argparse.Namespace) -> None:
    if args.open:
        await _open_close(args.open)
        return
    if args.large:
        await _large(args)
        return
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
    parser.add_argument("--large", type=int, default=0, metavar="N", help="one batch of N jobs")
    parser.add_argument("--open", type=int, default=0, metavar="N", help="time N open + close")
    parser.add_argument("--chunk", type=int, default=10_000, help="jobs per record (--large)")
    parser.add_argument("--claims", type=int, default=400, help="claims timed after the first")
    parser.add_argument("--concurrency", type=int, default=4, help="claimers (--large)")
    parser.add_argument(
        "--earlier", type=int, default=0, help="jobs of an earlier batch, analysed (--large)"
    )
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
