"""The job journal's cost: durable transitions per second for a 10,000-job batch.

Each job goes recorded -> submitting -> submitted -> finished -> downloaded (four durable
transitions after one bulk ``record``), from ``--concurrency`` tasks at once, as a batch
runner with that many jobs in flight would. Reported per ``synchronous`` setting: wall time,
transitions per second, commits (one fsync each under FULL), the mean group size, the
latency of ``mark_submitting`` (what a submission waits before its POST may leave), and the
time to resume the whole batch. A sequential pass (one task) shows the price of one commit
when nothing can be grouped.

    python -m benchmarks.bench_journal [--jobs 10000] [--concurrency 256] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hailuo_async import TaskResult, TaskStatus, Video
from hailuo_async.extend import JobSpec
from hailuo_async.journal import SQLiteJobStore, Synchronous

TRANSITIONS_PER_JOB = 4


def _specs(jobs: int) -> list[JobSpec]:
    return [
        JobSpec(
            key=f"{i:064x}#1",
            index=i,
            payload={
                "prompt": f"a paper boat drifting down a rain gutter, take {i}",
                "duration": 6,
                "resolution": "768P",
                "enable_prompt_expansion": True,
                "fast_pretreatment": False,
            },
            fingerprint=f"{i:064x}",
        )
        for i in range(jobs)
    ]


def _result(task_id: str) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.SUCCEED,
        raw_status="TASK_STATUS_SUCCEED",
        videos=(
            Video(
                url=f"https://storage.example/videos/{task_id}.mp4?X-Signature={'ab' * 32}",
                ttl=3600,
                video_type="mp4",
                expires_at=datetime.now(timezone.utc) + timedelta(hours=1),
            ),
        ),
        extra={"seed": "123456", "debug_info": {"submit_time_ms": "1700000000000"}},
    )


async def _lifecycle(store: SQLiteJobStore, spec: JobSpec, latencies: list[float]) -> None:
    started = time.perf_counter()
    await store.mark_submitting(spec.key)
    latencies.append(time.perf_counter() - started)
    task_id = f"task-{spec.index}"
    await store.mark_submitted(spec.key, task_id)
    await store.mark_finished(spec.key, _result(task_id))
    await store.mark_downloaded(spec.key, f"/videos/{task_id}.mp4")


async def _run(
    path: Path, jobs: int, concurrency: int, synchronous: Synchronous
) -> dict[str, float]:
    specs = _specs(jobs)
    latencies: list[float] = []
    async with SQLiteJobStore(path, synchronous=synchronous) as store:
        started = time.perf_counter()
        await store.record(specs)
        record_seconds = time.perf_counter() - started

        slots = asyncio.Semaphore(concurrency)

        async def one(spec: JobSpec) -> None:
            async with slots:
                await _lifecycle(store, spec, latencies)

        commits_before, writes_before = store.commits, store.writes_committed
        started = time.perf_counter()
        await asyncio.gather(*(one(spec) for spec in specs))
        lifecycle_seconds = time.perf_counter() - started
        commits = store.commits - commits_before
        writes = store.writes_committed - writes_before

        started = time.perf_counter()
        plan = await store.resume([spec.key for spec in specs])
        resume_seconds = time.perf_counter() - started
        assert len(plan) == jobs
    latencies.sort()
    return {
        "record_s": record_seconds,
        "lifecycle_s": lifecycle_seconds,
        "transitions_per_s": jobs * TRANSITIONS_PER_JOB / lifecycle_seconds,
        "commits": commits,
        "group": writes / commits,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "resume_s": resume_seconds,
    }


async def _main(args: argparse.Namespace) -> None:
    print(
        f"{args.jobs} jobs x {TRANSITIONS_PER_JOB} durable transitions, "
        f"concurrency {args.concurrency}; sequential pass: {args.sequential_jobs} jobs, 1 task\n"
    )
    header = (
        "| synchronous | tasks | lifecycle s | transitions/s | commits | mean group "
        "| submitting p50 ms | p99 ms | record s | resume s |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for synchronous in args.synchronous:
        for jobs, concurrency in ((args.jobs, args.concurrency), (args.sequential_jobs, 1)):
            with tempfile.TemporaryDirectory(dir=args.dir) as directory:
                row = await _run(Path(directory) / "journal.db", jobs, concurrency, synchronous)
            print(
                f"| {synchronous} | {concurrency} | {row['lifecycle_s']:.2f} "
                f"| {row['transitions_per_s']:,.0f} | {row['commits']:,.0f} | {row['group']:.1f} "
                f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['record_s']:.2f} "
                f"| {row['resume_s']:.2f} |"
            )


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--sequential-jobs", type=int, default=1_000)
    parser.add_argument("--dir", default=None, help="where the database goes (default: tmp)")
    parser.add_argument(
        "--synchronous", nargs="+", default=["FULL", "NORMAL"], choices=["FULL", "NORMAL"]
    )
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
