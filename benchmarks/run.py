"""Run every benchmark, print its table, and write the results (JSON) and the polling plot.

    python -m benchmarks.run            # full suite (~10-15 min on 2 cores)
    python -m benchmarks.run --quick    # short suite (< 3 min on 2 cores)
    python -m benchmarks.run --only polling --only limits

The full run writes ``benchmarks/results/latest.json`` and
``benchmarks/results/polls_vs_delay.png``; ``--quick`` writes ``latest-quick.json`` and
``polls_vs_delay-quick.png`` beside them, so a smoke run never overwrites the committed
figures. With ``--only``, the named scenarios replace theirs in the existing file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks._common import ScenarioResult, fmt, machine_info, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"

SCENARIOS: dict[str, str] = {
    "throughput": "benchmarks.bench_throughput",
    "polling": "benchmarks.bench_polling",
    "novita": "benchmarks.bench_novita",
    "scale": "benchmarks.bench_scale",
    "limits": "benchmarks.bench_limits",
    "decoding": "benchmarks.bench_decoding",
    "webhooks": "benchmarks.bench_webhooks",
    "rpm_shared": "benchmarks.bench_rpm_shared",
    "workers": "benchmarks.bench_workers",
    "short_budget": "benchmarks.bench_short_budget",
    "minimax": "benchmarks.bench_minimax",
}

# (scenario, figure, what it is, target) for the headline table.
HEADLINE: list[tuple[str, str, str, str]] = [
    (
        "minimax",
        "rpm120_jobs_per_min_vs_ceiling_ratio",
        "MiniMax, budget-bound @120 RPM: jobs/min / (RPM / 3)",
        ">= 0.95",
    ),
    ("minimax", "rpm120_rate_limit_answers", "MiniMax @120 RPM: rate-limit answers", "0"),
    ("minimax", "rpm120_requests_per_job", "MiniMax @120 RPM: requests per job", "<= 3.1"),
    (
        "minimax",
        "rpm20_jobs_per_min_vs_ceiling_ratio",
        "MiniMax, budget-bound @20 RPM: jobs/min / (RPM / 3)",
        ">= 0.95",
    ),
    ("minimax", "rpm20_rate_limit_answers", "MiniMax @20 RPM: rate-limit answers", "0"),
    ("minimax", "rpm20_requests_per_job", "MiniMax @20 RPM: requests per job", "<= 3.1"),
    (
        "polling",
        "jobs_per_s_hailuo_vs_bare_aiohttp_fixed_1s_ratio",
        "jobs/s, generate_many / bare aiohttp loop, 30-180 s jobs, same limits",
        ">= 0.9",
    ),
    (
        "throughput",
        "generate_many_vs_bare_aiohttp_ratio",
        "jobs/s, generate_many / bare aiohttp, instant jobs (pure client overhead)",
        ">= 0.9",
    ),
    (
        "throughput",
        "generate_many_vs_bare_aiohttp_64_ratio",
        "jobs/s, generate_many / bare aiohttp @64",
        ">= 0.8",
    ),
    (
        "throughput",
        "generate_many_vs_bare_aiohttp_1024_ratio",
        "jobs/s, generate_many / bare aiohttp @1,024",
        ">= 0.9",
    ),
    (
        "throughput",
        "generate_many_vs_bare_httpx_ratio",
        "jobs/s, generate_many / bare httpx (worse of 64, 1,024)",
        "",
    ),
    (
        "throughput",
        "cpu_per_job_generate_many_vs_bare_aiohttp_64_ratio",
        "client CPU/job, generate_many / bare aiohttp @64",
        "<= 1.35",
    ),
    (
        "throughput",
        "cpu_per_job_generate_many_vs_bare_aiohttp_1024_ratio",
        "client CPU/job, generate_many / bare aiohttp @1,024",
        "<= 1.35",
    ),
    ("throughput", "hailuo_async_64_jobs_per_s", "generate_many jobs/s @64", ""),
    ("throughput", "bare_aiohttp_64_jobs_per_s", "bare aiohttp jobs/s @64", ""),
    ("throughput", "bare_httpx_64_jobs_per_s", "bare httpx jobs/s @64", ""),
    ("throughput", "hailuo_async_1024_jobs_per_s", "generate_many jobs/s @1,024", ""),
    ("throughput", "bare_aiohttp_1024_jobs_per_s", "bare aiohttp jobs/s @1,024", ""),
    ("throughput", "bare_httpx_1024_jobs_per_s", "bare httpx jobs/s @1,024", ""),
    ("throughput", "hailuo_async_64_cpu_ms_per_job", "generate_many client CPU ms/job @64", ""),
    ("throughput", "bare_aiohttp_64_cpu_ms_per_job", "bare aiohttp client CPU ms/job @64", ""),
    ("polling", "hailuo_async_polls_per_job", "hailuo_async polls/job", ""),
    ("polling", "fixed_0_5s_polls_per_job", "fixed 0.5 s polls/job", ""),
    ("polling", "fixed_1s_polls_per_job", "fixed 1 s polls/job", ""),
    ("polling", "hailuo_async_delay_p50", "hailuo_async detection delay p50 (service s)", ""),
    ("polling", "hailuo_async_delay_p95", "hailuo_async detection delay p95 (service s)", ""),
    ("polling", "fixed_1s_delay_p50", "fixed 1 s detection delay p50 (service s)", ""),
    ("polling", "fixed_1s_delay_p95", "fixed 1 s detection delay p95 (service s)", ""),
    (
        "polling",
        "polls_per_job_hailuo_vs_fixed_1s_ratio",
        "polls/job, hailuo_async / fixed 1 s",
        "",
    ),
    ("polling", "delay_p95_hailuo_vs_fixed_1s_ratio", "p95 delay, hailuo_async / fixed 1 s", ""),
    ("polling", "polls_per_job_vs_target_3_ratio", "hailuo_async polls/job / 3", "<= 1"),
    (
        "polling",
        "delay_p95_hailuo_vs_eta_fraction_ratio",
        "p95 delay, hailuo_async / 0.7 x eta (the schedule before learning)",
        "<= 1",
    ),
    (
        "polling",
        "noeta_hailuo_async_polls_per_job_after_warmup",
        "hailuo_async polls/job, no eta, after the warm-up",
        "",
    ),
    (
        "polling",
        "noeta_polls_per_job_after_warmup_vs_target_4_ratio",
        "hailuo_async polls/job / 4, no eta, after the warm-up",
        "<= 1",
    ),
    (
        "polling",
        "noeta_delay_p95_after_warmup_hailuo_vs_backoff_ratio",
        "p95 delay, hailuo_async / backoff, no eta, after the warm-up",
        "<= 1",
    ),
    ("webhooks", "webhooks_polls_per_job", "polls/job with webhooks", ""),
    ("webhooks", "polling_polls_per_job", "polls/job without webhooks", ""),
    ("novita", "wall_hailuo_vs_novita_ratio", "wall time, hailuo_async / novita-client", ""),
    ("novita", "polls_hailuo_vs_novita_ratio", "polls, hailuo_async / novita-client", ""),
    ("novita", "cpu_hailuo_vs_novita_ratio", "client CPU, hailuo_async / novita-client", ""),
    ("novita", "novita_peak_threads", "novita-client peak threads", ""),
    ("novita", "hailuo_async_peak_threads", "hailuo_async peak threads", ""),
    ("scale", "ids_10000_peak_rss_mib_per_10k", "watcher peak RSS MiB per 10k ids (10k)", ""),
    (
        "scale",
        "ids_10000_baseline_task_per_id_rss_mib_per_10k",
        "task-per-id RSS MiB per 10k ids (10k)",
        "",
    ),
    (
        "scale",
        "ids_10000_watcher_vs_task_per_id_rss_ratio",
        "RSS, watcher / task per id (10k)",
        "< 1",
    ),
    (
        "scale",
        "ids_100000_watcher_vs_task_per_id_rss_ratio",
        "RSS, watcher / task per id (100k)",
        "< 1",
    ),
    ("scale", "ids_10000_loop_lag_p99_ms", "loop lag p99 ms (10k)", ""),
    ("scale", "ids_100000_loop_lag_p99_ms", "loop lag p99 ms (100k)", ""),
    ("scale", "ids_100000_loop_lag_max_ms", "loop lag max ms (100k)", ""),
    ("scale", "ids_100000_results_per_s", "results/s (100k)", ""),
    ("limits", "given_jobs_per_min_vs_ceiling_ratio", "jobs/min / ceiling, limits given", ""),
    ("limits", "given_429_per_1000_jobs", "429s per 1,000 jobs, limits given", "0"),
    (
        "limits",
        "discovered_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, limits discovered",
        "",
    ),
    (
        "limits",
        "discovered_429_per_1000_first_half",
        "429s per 1,000 jobs, discovered, 1st half",
        "",
    ),
    (
        "limits",
        "discovered_429_per_1000_second_half",
        "429s per 1,000 jobs, discovered, 2nd half",
        "< 5",
    ),
    ("limits", "discovered_failed", "jobs failed, limits discovered", "0"),
    (
        "limits",
        "short_jobs_given_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, given, 3-9 s jobs",
        "",
    ),
    (
        "rpm_shared",
        "jobs_per_min_vs_ceiling_ratio",
        "jobs/min / (RPM/2), polls and submits share the budget",
        ">= 0.95",
    ),
    ("rpm_shared", "rate_limited_429", "429s, shared request budget", "0"),
    (
        "short_budget",
        "gateway_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / (RPM/2), 120 jobs of 2 s, RPM 240, 20 active (gateway)",
        ">= 0.93",
    ),
    ("short_budget", "gateway_rate_limited", "rate-limit answers, short batch (gateway)", "0"),
    (
        "short_budget",
        "minimax_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / (RPM/3), 120 jobs of 2 s, RPM 240 (MiniMax)",
        ">= 0.93",
    ),
    ("short_budget", "minimax_rate_limited", "rate-limit answers, short batch (MiniMax)", "0"),
    ("rpm_shared", "polls_per_job", "polls/job, shared request budget", ""),
    (
        "workers",
        "shared_2w_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, 2 worker processes, shared limits",
        ">= 0.9",
    ),
    (
        "workers",
        "shared_8w_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, 8 worker processes, shared limits",
        ">= 0.9",
    ),
    ("workers", "shared_8w_429_per_1000_jobs", "429s per 1,000 jobs, 8 workers, shared", "0"),
    (
        "workers",
        "joining_smallest_share",
        "smallest share of 60 jobs, `hailuo batch` + 2 `hailuo work` joining it",
        ">= 0.1",
    ),
    (
        "workers",
        "replaced_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, 3 `hailuo work`, one killed (-9) and replaced",
        ">= 0.85",
    ),
    (
        "workers",
        "per_process_8w_jobs_per_min_vs_ceiling_ratio",
        "jobs/min / ceiling, 8 workers, independent clients (limits / N)",
        "",
    ),
    (
        "decoding",
        "decode_ratio",
        "(decode_json + decode_task_result) / json.loads",
        "<= 1.5",
    ),
    (
        "decoding",
        "captured_decode_ratio",
        "the same on the real service's captured answer (COS URL)",
        "",
    ),
    (
        "decoding",
        "stdlib_decode_ratio",
        "(json.loads + decode_task_result) / json.loads",
        "",
    ),
]


def headline(scenarios: dict[str, dict[str, Any]]) -> str:
    """The headline table: the figures that answer the issues, with their targets."""
    rows: list[list[object]] = []
    for scenario, key, label, target in HEADLINE:
        figures = scenarios.get(scenario, {}).get("figures", {})
        if key in figures:
            rows.append([scenario, label, fmt(figures[key]), target])
    return markdown_table(["scenario", "figure", "value", "target"], rows)


def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios and write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short suite (< 3 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--output", type=Path, help="the JSON file to write")
    parser.add_argument("--plot", type=Path, help="the PNG file to write")
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    output: Path = args.output or RESULTS / f"latest{suffix}.json"
    plot_path: Path = args.plot or RESULTS / f"polls_vs_delay{suffix}.png"
    names = [name for name in SCENARIOS if not args.only or name in args.only]

    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = _load(output) if args.only else {}
    scenarios: dict[str, dict[str, Any]] = dict(previous.get("scenarios", {}))
    failed: list[str] = []
    for name in names:
        print(f"\n# running {name} ({'quick' if args.quick else 'full'})", flush=True)
        module = importlib.import_module(SCENARIOS[name])
        # Other processes on the machine skew timings: keep the load each scenario met.
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        try:
            result: ScenarioResult = module.run(quick=args.quick)
        except Exception:
            failed.append(name)
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            scenarios[name] = {"name": name, "error": error, "figures": {}, "ratios": {}}
            continue
        print(result.render(), flush=True)
        data = result.as_dict()
        data["run_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data["loadavg_before"] = load_before
        data["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        scenarios[name] = data
        if name == "polling":
            from benchmarks.bench_polling import plot

            plot(result.extra["points"], plot_path)
            print(f"\nwrote {plot_path}", flush=True)
    runtime = time.perf_counter() - started

    figures = {
        f"{name}.{key}": value
        for name, data in scenarios.items()
        for key, value in data.get("figures", {}).items()
    }
    ratios = {key: value for key, value in figures.items() if key.endswith("_ratio")}
    document = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "started_at": started_at if not args.only else previous.get("started_at", started_at),
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime_s": runtime if not args.only else previous.get("runtime_s"),
        "last_run": {"scenarios": names, "runtime_s": runtime},
        "machine": machine_info(),
        "ratios": ratios,
        "figures": figures,
        "scenarios": scenarios,
        "headline": headline(scenarios),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(output)
    print("\n## Headline\n")
    print(document["headline"])
    print(f"\nwrote {output} ({runtime:.0f} s)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
