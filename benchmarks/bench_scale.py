"""Scenario 4, scale: one TaskWatcher over 1k, 10k and 100k task ids.

The tasks are created directly inside the fake (``_create_task``, as accepted submissions
would be: no HTTP) and have all ended before the watch starts, so each id takes exactly one
poll and the run measures the watcher itself: ``client.watch(ids)`` adds every id, polls them
(64 at a time, the client's default) and yields each result.

In a fresh interpreter per run:

* peak RSS: VmHWM after the run minus VmRSS just before ``client.watch(ids)`` (the id list
  itself already in memory), per 10k ids; the baseline is the same figure for the naive
  design, one sleeping asyncio task per id;
* event-loop lag: a ticker task sleeps 5 ms again and again from before ``watch(ids)`` to
  the last result; its oversleeps' p99 and max (the max includes adding all the ids, which
  ``watch(ids)`` does synchronously);
* results per second: ids / seconds from ``watch(ids)`` to the last result.

100k ids only in the full run.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from benchmarks._common import (
    FakeProcess,
    LoopLag,
    ScenarioResult,
    markdown_table,
    read_proc_status,
    reset_peak_rss,
    run_isolated,
    timed,
)

NAME = "scale"
TITLE = "4. Scale: watching many task ids"
TIME_SCALE = 1e-3


async def _watch(url: str, api_key: str, ids: list[str]) -> dict[str, Any]:
    from hailuo_async import HailuoClient

    async with HailuoClient(api_key=api_key, base_url=url) as client:
        # Warm the connection pool and the code paths on one id.
        async with client.watch(ids[:1]) as warm:
            async for _ in warm:
                pass
        gc.collect()
        before = read_proc_status()["VmRSS"]
        reset_peak_rss()
        cpu0 = time.process_time()
        results = 0
        async with LoopLag(0.005) as lag:
            started = time.perf_counter()
            watcher = client.watch(ids)
            added = time.perf_counter() - started
            async with watcher:
                async for _ in watcher:
                    results += 1
            seconds = time.perf_counter() - started
        peak = read_proc_status()["VmHWM"]
        polls = watcher.polls
        errors = len(watcher.errors)
    return {
        "results": results,
        "errors": errors,
        "polls": polls,
        "seconds": seconds,
        "add_seconds": added,
        "cpu": time.process_time() - cpu0,
        "rss_delta": peak - before,
        "lag": lag.summary(),
    }


def watch_run(url: str, api_key: str, ids: list[str]) -> dict[str, Any]:
    """The watcher's run, in a fresh interpreter."""
    return asyncio.run(_watch(url, api_key, ids))


async def _sleepers(ids: list[str]) -> dict[str, Any]:
    async def watch_one(task_id: str) -> str:
        await asyncio.sleep(3600)
        return task_id

    gc.collect()
    before = read_proc_status()["VmRSS"]
    reset_peak_rss()
    tasks = [asyncio.create_task(watch_one(task_id)) for task_id in ids]
    await asyncio.sleep(0.05)  # every task has started and is sleeping
    peak = read_proc_status()["VmHWM"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"rss_delta": peak - before}


def sleepers_run(ids: list[str]) -> dict[str, Any]:
    """The baseline's run, in a fresh interpreter: one sleeping asyncio task per id."""
    return asyncio.run(_sleepers(ids))


def measure(count: int) -> dict[str, Any]:
    """Seed ``count`` ended tasks in a fresh fake; watch them; then the baseline."""
    from hailuo_async.testing import Fixed

    with FakeProcess(time_scale=TIME_SCALE, seed=3, job_duration=Fixed(1.0)) as fake:
        ids = fake.seed(count)
        while fake.stats()["tasks_terminal"] < count:
            time.sleep(0.05)
        cpu0 = fake.cpu()
        result = run_isolated(watch_run, url=fake.url, api_key=fake.api_key, ids=ids)
        result["server_cpu"] = fake.cpu() - cpu0
    result["baseline_rss_delta"] = run_isolated(sleepers_run, ids=ids)["rss_delta"]
    return result


def run(*, quick: bool = False) -> ScenarioResult:
    """Watch 1k, 10k (and 100k) ended tasks."""
    counts = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    figures: dict[str, Any] = {"time_scale": TIME_SCALE, "max_concurrent_polls": 64}
    rows: list[list[object]] = []
    with timed() as elapsed:
        for count in counts:
            result = measure(count)
            per_10k = 10_000 / count
            mib = 2**20
            watcher_rss = result["rss_delta"] / mib * per_10k
            baseline_rss = result["baseline_rss_delta"] / mib * per_10k
            lag = result["lag"]
            prefix = f"ids_{count}"
            figures[f"{prefix}_results"] = result["results"]
            figures[f"{prefix}_errors"] = result["errors"]
            figures[f"{prefix}_polls_per_id"] = result["polls"] / count
            figures[f"{prefix}_peak_rss_mib_per_10k"] = watcher_rss
            figures[f"{prefix}_baseline_task_per_id_rss_mib_per_10k"] = baseline_rss
            figures[f"{prefix}_watcher_vs_task_per_id_rss_ratio"] = (
                watcher_rss / baseline_rss if baseline_rss > 0 else None
            )
            figures[f"{prefix}_loop_lag_p50_ms"] = lag["p50_ms"]
            figures[f"{prefix}_loop_lag_p99_ms"] = lag["p99_ms"]
            figures[f"{prefix}_loop_lag_max_ms"] = lag["max_ms"]
            figures[f"{prefix}_add_ids_ms"] = result["add_seconds"] * 1000
            figures[f"{prefix}_results_per_s"] = result["results"] / result["seconds"]
            figures[f"{prefix}_client_cpu_util"] = result["cpu"] / result["seconds"]
            figures[f"{prefix}_server_cpu_util"] = result["server_cpu"] / result["seconds"]
            figures[f"{prefix}_client_cpu_us_per_id"] = result["cpu"] / count * 1e6
            rows.append(
                [
                    count,
                    result["results"],
                    watcher_rss,
                    baseline_rss,
                    figures[f"{prefix}_watcher_vs_task_per_id_rss_ratio"],
                    lag["p99_ms"],
                    lag["max_ms"],
                    result["add_seconds"] * 1000,
                    figures[f"{prefix}_results_per_s"],
                    figures[f"{prefix}_client_cpu_util"],
                    figures[f"{prefix}_server_cpu_util"],
                ]
            )
    table = markdown_table(
        [
            "ids",
            "results",
            "peak RSS MiB/10k ids",
            "task-per-id MiB/10k",
            "ratio",
            "loop lag p99 ms",
            "lag max ms",
            "watch(ids) ms",
            "results/s",
            "client CPU util",
            "fake CPU util",
        ],
        rows,
    )
    notes = [
        "Every task has ended before the watch, so each id is one poll (polls/id: "
        + ", ".join(f"{figures[f'ids_{c}_polls_per_id']:.2f}" for c in counts)
        + "). 'ratio' is the watcher's RSS per id over the task-per-id baseline's "
        "(< 1 means the watcher is lighter).",
        "Loop lag: oversleep of a 5 ms ticker over the whole run; 'watch(ids) ms' is the "
        "time client.watch(ids) blocks the loop to add the ids.",
    ]
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_scale"))
