"""Webhooks: polls per job with push delivery on and off, and what a lost push costs.

The same batch runs three ways through ``generate_many``: polling only (no webhook), with
webhooks (every request carries ``webhook_url``; an aiohttp receiver built with
``hailuo_async.webhooks.aiohttp_handler`` feeds the events to the batch's watcher), and with
webhooks on a lossy gateway (10 % of events dropped, 10 % sent twice). Jobs and time scale
are those of the polling scenario: log-normal durations (median 75 service seconds, sigma
0.45), a noisy eta (``eta_error=0.3``), ``time_scale=0.02``, at most 32 jobs active, and the
default ``PollPolicy`` scaled.

"polls/job" counts every task-result GET the fake served, divided by the jobs: with
webhooks that is the one confirmation GET per event plus any backstop poll. "delay" is when
the batch yields the outcome minus when the fake ended the task, in service seconds (a
dropped event is found by the backstop poll, well after the expected finish). The fake runs
in its own process and POSTs its events to the receiver over loopback.

    python -m benchmarks.bench_webhooks [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks._common import FakeProcess, ScenarioResult, markdown_table, percentile, timed

NAME = "webhooks"
TITLE = "Webhooks: polls per job with push delivery on and off"
TIME_SCALE = 0.02
MEDIAN_SECONDS = 75.0
SIGMA = 0.45
ETA_ERROR = 0.3
ACTIVE = 32
PROMPT = "a hot-air balloon rising over terraced rice fields at dawn"
HOOK_PATH = "/hailuo/webhook"

# (key, label, webhooks on, fraction dropped, fraction duplicated)
CONTENDERS: list[tuple[str, str, bool, float, float]] = [
    ("polling", "webhooks off (polling)", False, 0.0, 0.0),
    ("webhooks", "webhooks on", True, 0.0, 0.0),
    ("lossy", "webhooks on, 10 % dropped, 10 % doubled", True, 0.1, 0.1),
]


async def _batch(url: str, api_key: str, jobs: int, webhooks: bool) -> dict[str, Any]:
    from aiohttp import web

    from hailuo_async import HailuoClient, PollPolicy, VideoRequest
    from hailuo_async.webhooks import aiohttp_handler

    received = 0
    seen: dict[str, float] = {}
    async with HailuoClient(
        api_key=api_key, base_url=url, poll_policy=PollPolicy().scaled(TIME_SCALE)
    ) as client:
        hook = aiohttp_handler(client)

        async def count_and_handle(request: web.Request) -> web.StreamResponse:
            nonlocal received
            received += 1
            return await hook(request)

        app = web.Application()
        app.router.add_post(HOOK_PATH, count_and_handle)
        app.cleanup_ctx.append(hook.cleanup_ctx)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        webhook_url = f"http://127.0.0.1:{runner.addresses[0][1]}{HOOK_PATH}"
        try:
            request = VideoRequest(prompt=PROMPT, webhook_url=webhook_url if webhooks else None)
            with timed() as elapsed:
                async with client.generate_many(
                    (request for _ in range(jobs)), max_active_jobs=ACTIVE
                ) as outcomes:
                    ok = 0
                    async for outcome in outcomes:
                        if outcome.task_id is not None:
                            seen[outcome.task_id] = time.monotonic()
                        ok += outcome.ok
                    watcher_polls = outcomes.counts.polls
        finally:
            await runner.cleanup()
        return {
            "wall": elapsed(),
            "ok": ok,
            "seen": seen,
            "watcher_polls": watcher_polls,
            "events_received": received,
            "confirmed": client._webhooks.confirmed,
        }


def _run_one(jobs: int, webhooks: bool, drop: float, duplicate: float) -> dict[str, Any]:
    from hailuo_async.testing import LogNormal

    with FakeProcess(
        time_scale=TIME_SCALE,
        seed=42,
        job_duration=LogNormal(MEDIAN_SECONDS, SIGMA),
        eta_error=ETA_ERROR,
        webhook_drop=drop,
        webhook_duplicate=duplicate,
    ) as fake:
        outcome = asyncio.run(_batch(fake.url, fake.api_key, jobs, webhooks))
        stats = fake.stats()
        finished = fake.finished_at(list(outcome["seen"]))
    delays = [
        (outcome["seen"][task_id] - finished[task_id]) / TIME_SCALE
        for task_id in outcome["seen"]
        if task_id in finished
    ]
    return {
        "jobs": jobs,
        "ok": outcome["ok"],
        "wall": outcome["wall"],
        "polls_per_job": stats["polls_total"] / jobs,
        "watcher_polls_per_job": outcome["watcher_polls"] / jobs,
        "events_per_job": outcome["events_received"] / jobs,
        "confirmed_per_job": outcome["confirmed"] / jobs,
        "delay_p50": percentile(delays, 0.5),
        "delay_p95": percentile(delays, 0.95),
        "delay_max": max(delays) if delays else None,
        "submissions": stats["submissions_accepted"],
    }


def run(*, quick: bool = False) -> ScenarioResult:
    """Run the scenario (``quick``: 60 jobs per contender instead of 200)."""
    jobs = 60 if quick else 200
    figures: dict[str, Any] = {"jobs": jobs}
    rows = []
    with timed() as elapsed:
        for key, label, webhooks, drop, duplicate in CONTENDERS:
            result = _run_one(jobs, webhooks, drop, duplicate)
            for name, value in result.items():
                figures[f"{key}_{name}"] = value
            rows.append(
                [
                    label,
                    result["ok"],
                    result["polls_per_job"],
                    result["watcher_polls_per_job"],
                    result["events_per_job"],
                    result["delay_p50"],
                    result["delay_p95"],
                    result["delay_max"],
                    result["wall"],
                ]
            )
    figures["polls_per_job_webhooks_vs_polling_ratio"] = (
        figures["webhooks_polls_per_job"] / figures["polling_polls_per_job"]
    )
    figures["polls_per_job_lossy_vs_polling_ratio"] = (
        figures["lossy_polls_per_job"] / figures["polling_polls_per_job"]
    )
    table = markdown_table(
        [
            "contender",
            "ok",
            "polls/job",
            "watcher polls/job",
            "events/job",
            "delay p50 (s)",
            "delay p95 (s)",
            "delay max (s)",
            "wall (real s)",
        ],
        rows,
    )
    notes = [
        f"{jobs} jobs per contender, log-normal durations (median {MEDIAN_SECONDS:g} service s, "
        f"sigma {SIGMA}), at most {ACTIVE} active, time scale {TIME_SCALE}; delays in service s.",
        "polls/job: every task-result GET the fake served / jobs (with webhooks: the "
        "confirmation GET of each event, plus backstop polls).",
        f"polls/job, webhooks / polling: {figures['polls_per_job_webhooks_vs_polling_ratio']:.2f}; "
        f"lossy webhooks / polling: {figures['polls_per_job_lossy_vs_polling_ratio']:.2f}.",
        "A dropped event is found by the backstop poll: first at max(4 x max_interval, "
        "1.5 x the p95 duration seen) after submission, which is what the lossy row's p95 "
        "and max delays show.",
    ]
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_webhooks"))
