"""Scenario 5, limits: how close to the account's ceiling a batch runs, and at what 429 cost.

The fake enforces ``max_active_tasks=10`` and ``requests_per_minute=600`` (a sliding window
of 60 service seconds, every endpoint counted) and sends no Retry-After, as the gateway
documents none. hailuo_async runs the same batch twice through ``generate_many``:

* limits given: ``requests_per_minute=600, max_active_jobs=10``;
* limits discovered: the client is given neither and learns them from the 429s it meets.

Jobs take 30-180 service seconds (uniform, the fake's default). The physical ceiling is
``min(10 x 60 / mean duration, 600 / 2)`` jobs per minute (10 jobs always running; one
submit and one poll per job at least), from the durations the fake actually drew; with such
jobs the active cap is what binds. The full run adds a row with 3-9 s jobs and the limits
given, where the request budget could bind too and the first-poll delay matters.

Time scale 0.01 (a service minute is 0.6 real seconds; 3-9 s jobs run at 0.05). The client
gets ``rate_window=60 x time_scale`` and its poll and retry policies scaled by the same
factor. Its 429 pause (``RequestLimiter``: 1 s, doubling up to 60 s) has no public knob, so
the benchmark scales the private ``_initial_pause``/``_max_pause`` too; left in real seconds
it would be 100 service seconds per 429, which no real run would see.
429s are counted by the fake, by cause, over the first and second half of the jobs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from benchmarks._common import FakeProcess, ScenarioResult, markdown_table, timed

if TYPE_CHECKING:
    from hailuo_async import HailuoClient

NAME = "limits"
TITLE = "5. Limits: jobs per minute vs the ceiling, and 429s"
ACTIVE_CAP = 10
RPM = 600
REALISTIC = (30.0, 180.0, 0.01)  # job durations (service s) and the time scale
SHORT = (3.0, 9.0, 0.05)
PROMPT = "a street market at night in the rain, neon reflections"


def scaled_client(
    fake: FakeProcess,
    scale: float,
    *,
    requests_per_minute: float | None,
    max_active_jobs: int | None,
    **options: Any,
) -> HailuoClient:
    """A client of ``fake`` with every interval scaled by ``scale`` (its 429 pause too)."""
    from hailuo_async import HailuoClient, Limits, PollPolicy, RetryPolicy

    retry = RetryPolicy()
    client = HailuoClient(
        api_key=fake.api_key,
        base_url=fake.url,
        poll_policy=PollPolicy().scaled(scale),
        retry_policy=RetryPolicy(
            initial_delay=retry.initial_delay * scale,
            max_delay=retry.max_delay * scale,
            max_retry_after=retry.max_retry_after * scale,
            not_found_grace=retry.not_found_grace * scale,
        ),
        limits=Limits(
            rate_window=60.0 * scale,
            requests_per_minute=requests_per_minute,
            max_active_jobs=max_active_jobs,
        ),
        **options,
    )
    # No public knob scales the 429 pause; see the module docstring.
    limiter: Any = client._state.limiter
    limiter._initial_pause *= scale
    limiter._max_pause *= scale
    return client


async def _batch(
    fake: FakeProcess,
    jobs: int,
    *,
    given: bool,
    scale: float,
    active_cap: int = ACTIVE_CAP,
    rpm: int = RPM,
) -> dict[str, Any]:
    from hailuo_async import VideoRequest

    client = scaled_client(
        fake,
        scale,
        requests_per_minute=rpm if given else None,
        max_active_jobs=active_cap if given else None,
    )
    limiter: Any = client._state.limiter
    request = VideoRequest(prompt=PROMPT)
    half: dict[str, Any] = {}
    ok = done = 0
    failures: dict[str, int] = {}
    failed_at: list[int] = []  # how many outcomes had come when each failure came
    succeeded_at: list[float] = []  # seconds into the batch of each success
    async with client:
        with timed() as elapsed:
            async with client.generate_many(request for _ in range(jobs)) as outcomes:
                async for outcome in outcomes:
                    done += 1
                    ok += outcome.ok
                    if outcome.ok:
                        succeeded_at.append(elapsed())
                    if outcome.error is not None:
                        kind = f"{type(outcome.error).__name__}: {outcome.error}"[:120]
                        failures[kind] = failures.get(kind, 0) + 1
                        failed_at.append(done)
                    if done == jobs // 2:
                        half = await fake.acall("stats")
                        half["at"] = elapsed()
        wall = elapsed()
    return {
        "ok": ok,
        "failures": failures,
        "failed_first_half": sum(1 for at in failed_at if at <= jobs // 2),
        "failed_second_half": sum(1 for at in failed_at if at > jobs // 2),
        "wall": wall,
        "succeeded_at": succeeded_at,
        "half": half,
        "client_429": dict(limiter.rate_limited),
        "learned_active": client._state.active_jobs.value,
        "learned_rpm": limiter.rate.value,
    }


def measure(
    jobs: int,
    *,
    given: bool,
    durations: tuple[float, float, float],
    active_cap: int = ACTIVE_CAP,
    rpm: int = RPM,
) -> dict[str, Any]:
    """One batch against a fresh fake with the limits on."""
    from hailuo_async.testing import Uniform

    low, high, scale = durations
    with FakeProcess(
        time_scale=scale,
        seed=5,
        job_duration=Uniform(low, high),
        max_active_tasks=active_cap,
        requests_per_minute=rpm,
    ) as fake:
        result = asyncio.run(
            _batch(fake, jobs, given=given, scale=scale, active_cap=active_cap, rpm=rpm)
        )
        result["stats"] = fake.stats()
        drawn = fake.durations()
    mean = sum(drawn) / len(drawn)
    ceiling = min(active_cap * 60.0 / mean, rpm / 2.0)
    service_minutes = result["wall"] / scale / 60.0
    stats, half = result["stats"], result["half"]

    def by_cause(snapshot: dict[str, Any]) -> dict[str, int]:
        causes: dict[str, int] = snapshot.get("rate_limited", {})
        return causes

    first, total = by_cause(half), by_cause(stats)
    second = {cause: total.get(cause, 0) - first.get(cause, 0) for cause in total}
    halves = jobs // 2, jobs - jobs // 2
    result.update(
        jobs=jobs,
        mean_duration=mean,
        ceiling_jpm=ceiling,
        jpm=result["ok"] / service_minutes,
        first=first,
        second=second,
        per_1000_first=sum(first.values()) * 1000 / halves[0],
        per_1000_second=sum(second.values()) * 1000 / halves[1],
        per_1000_total=sum(total.values()) * 1000 / jobs,
        requests_per_job=(stats["submission_attempts"] + stats["polls_total"]) / jobs,
        polls_per_job=stats["polls_total"] / jobs,
        accepted=stats["submissions_accepted"],
    )
    return result


def run(*, quick: bool = False) -> ScenarioResult:
    """The same batch with the limits given, then discovered."""
    jobs = 160 if quick else 1_000
    figures: dict[str, Any] = {
        "time_scale": REALISTIC[2],
        "jobs": jobs,
        "fake_max_active_tasks": ACTIVE_CAP,
        "fake_requests_per_minute": RPM,
        "job_duration": f"uniform {REALISTIC[0]:g}-{REALISTIC[1]:g} s",
    }
    rows: list[list[object]] = []
    notes: list[str] = []
    runs: list[tuple[str, bool, tuple[float, float, float], int]] = [
        ("given", True, REALISTIC, jobs),
        ("discovered", False, REALISTIC, jobs),
    ]
    if not quick:
        runs.append(("short_jobs_given", True, SHORT, 400))
    with timed() as elapsed:
        for mode, given, durations, count in runs:
            result = measure(count, given=given, durations=durations)
            figures[f"{mode}_jobs_per_min"] = result["jpm"]
            figures[f"{mode}_ceiling_jobs_per_min"] = result["ceiling_jpm"]
            figures[f"{mode}_jobs_per_min_vs_ceiling_ratio"] = result["jpm"] / result["ceiling_jpm"]
            figures[f"{mode}_429_per_1000_jobs"] = result["per_1000_total"]
            figures[f"{mode}_429_per_1000_first_half"] = result["per_1000_first"]
            figures[f"{mode}_429_per_1000_second_half"] = result["per_1000_second"]
            figures[f"{mode}_429_first_half_by_cause"] = result["first"]
            figures[f"{mode}_429_second_half_by_cause"] = result["second"]
            figures[f"{mode}_client_429_by_kind"] = result["client_429"]
            figures[f"{mode}_requests_per_job"] = result["requests_per_job"]
            figures[f"{mode}_polls_per_job"] = result["polls_per_job"]
            figures[f"{mode}_succeeded"] = result["ok"]
            figures[f"{mode}_failed"] = sum(result["failures"].values())
            figures[f"{mode}_failures"] = result["failures"]
            figures[f"{mode}_failed_first_half"] = result["failed_first_half"]
            figures[f"{mode}_failed_second_half"] = result["failed_second_half"]
            figures[f"{mode}_submissions_accepted"] = result["accepted"]
            figures[f"{mode}_wall_s"] = result["wall"]
            figures[f"{mode}_learned_active_jobs"] = result["learned_active"]
            figures[f"{mode}_learned_rpm"] = result["learned_rpm"]
            low, high, _ = durations
            rows.append(
                [
                    f"limits {'given' if given else 'discovered'}, {low:g}-{high:g} s jobs",
                    f"{result['ok']} / {count}",
                    result["jpm"],
                    result["ceiling_jpm"],
                    result["jpm"] / result["ceiling_jpm"],
                    result["per_1000_first"],
                    result["per_1000_second"],
                    result["requests_per_job"],
                    f"{result['learned_active']} / {fmt_rpm(result['learned_rpm'])}",
                ]
            )
            notes.append(
                f"{mode}: 429s by cause, first half {result['first'] or '{}'}, second half "
                f"{result['second'] or '{}'}; client saw {result['client_429']}."
            )
            for failure, times in result["failures"].items():
                notes.append(
                    f"{mode}: {times} job(s) failed ({result['failed_first_half']} in the first "
                    f"half, {result['failed_second_half']} in the second) with {failure}"
                )
    notes.insert(
        0,
        f"{jobs} jobs of {REALISTIC[0]:g}-{REALISTIC[1]:g} service s against "
        f"max_active_tasks={ACTIVE_CAP}, requests_per_minute={RPM}, time_scale "
        f"{REALISTIC[2]:g}; jobs/min in service minutes. "
        "Targets: no 429 with the limits given; < 5 per 1,000 jobs once discovery settles "
        "(second half).",
    )
    table = markdown_table(
        [
            "client",
            "jobs succeeded",
            "jobs/min",
            "ceiling jobs/min",
            "achieved / ceiling",
            "429s/1k jobs, 1st half",
            "429s/1k jobs, 2nd half",
            "requests/job",
            "active / rpm at end",
        ],
        rows,
    )
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


def fmt_rpm(value: float | None) -> str:
    """A learned rate, or 'unpaced'."""
    return "unpaced" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_limits"))
