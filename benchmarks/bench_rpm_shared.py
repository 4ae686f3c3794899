"""Scenario 8, a shared request budget: polls and submissions under one requests-per-minute limit.

The fake enforces ``requests_per_minute=RPM`` over every endpoint (a sliding window of 60
service seconds, no Retry-After) and ``max_active_tasks=ACTIVE_CAP``; the client is given
both limits. The active cap is set well above what the request budget can keep busy, so the
budget alone binds: each job needs at least one POST and one GET, so the ceiling is
``RPM / 2`` jobs per minute, and every poll past the first per job lowers what is reachable.

Jobs take 5-60 service seconds (uniform): spread enough that no first poll can be placed
after every end, so polling well is what the budget rewards. The rate is the steady one:
jobs finished between the 10th and the 90th percentile of the finishes, over that span (the
ramp, while the first jobs run, and the tail, while the last do, are not the budget's
doing). The whole batch's rate is reported beside it. Time scale 0.02 (a service minute is
1.2 real seconds); the client's intervals are scaled as in ``limits``. Reported: jobs per
minute / ceiling, 429s (target: >= 0.95 and none), polls per job.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import ScenarioResult, markdown_table, timed
from benchmarks.bench_limits import measure

NAME = "rpm_shared"
TITLE = "8. Shared request budget: jobs per minute vs RPM / 2, and 429s"
RPM = 120
ACTIVE_CAP = 64
DURATIONS = (5.0, 60.0, 0.02)  # job durations (service s) and the time scale


def steady_jobs_per_min(finished_at: list[float], scale: float) -> float:
    """Jobs per service minute between the 10th and the 90th percentile finish."""
    times = sorted(finished_at)
    first, last = len(times) // 10, len(times) * 9 // 10
    span = (times[last] - times[first]) / scale / 60.0
    return (last - first) / span if span > 0 else float("nan")


def run(*, quick: bool = False) -> ScenarioResult:
    """One batch with the limits given, the request budget binding."""
    jobs = 600 if quick else 1_500
    with timed() as elapsed:
        result = measure(jobs, given=True, durations=DURATIONS, active_cap=ACTIVE_CAP, rpm=RPM)
    ceiling = RPM / 2.0
    steady = steady_jobs_per_min(result["succeeded_at"], DURATIONS[2])
    rejected = sum(result["stats"].get("rate_limited", {}).values())
    figures: dict[str, Any] = {
        "time_scale": DURATIONS[2],
        "jobs": jobs,
        "fake_requests_per_minute": RPM,
        "fake_max_active_tasks": ACTIVE_CAP,
        "job_duration": f"uniform {DURATIONS[0]:g}-{DURATIONS[1]:g} s",
        "jobs_per_min": steady,
        "whole_batch_jobs_per_min": result["jpm"],
        "ceiling_jobs_per_min": ceiling,
        "jobs_per_min_vs_ceiling_ratio": steady / ceiling,
        "whole_batch_jobs_per_min_vs_ceiling_ratio": result["jpm"] / ceiling,
        "rate_limited_429": rejected,
        "rate_limited_by_cause": result["stats"].get("rate_limited", {}),
        "polls_per_job": result["polls_per_job"],
        "requests_per_job": result["requests_per_job"],
        "succeeded": result["ok"],
        "failed": sum(result["failures"].values()),
        "wall_s": result["wall"],
    }
    table = markdown_table(
        [
            "client",
            "jobs succeeded",
            "jobs/min (steady)",
            "jobs/min (whole batch)",
            "ceiling (RPM/2)",
            "achieved / ceiling",
            "429s",
            "polls/job",
            "requests/job",
        ],
        [
            [
                "generate_many, limits given",
                f"{result['ok']} / {jobs}",
                steady,
                result["jpm"],
                ceiling,
                steady / ceiling,
                rejected,
                result["polls_per_job"],
                result["requests_per_job"],
            ]
        ],
    )
    notes = [
        f"{jobs} jobs of {DURATIONS[0]:g}-{DURATIONS[1]:g} service s; fake "
        f"requests_per_minute={RPM} (polls and submissions alike), max_active_tasks="
        f"{ACTIVE_CAP}; time_scale {DURATIONS[2]:g}. Targets: >= 0.95 of RPM/2, no 429. "
        "A job that needs n polls caps the batch at RPM/(1+n) jobs per minute.",
    ]
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_rpm_shared"))
