"""Scenario 3, the gateway's own SDK: novita-client (requests, threads) vs hailuo_async.

novita-client 0.7 has no Hailuo-02 method, so the benchmark uses what it does have:

* submit: ``NovitaClient._post("/v3/async/minimax-hailuo-02", payload)``, the generic POST
  every one of its v3 methods is built on (same headers, same error handling);
* wait: ``NovitaClient.wait_for_task_v3(task_id, wait_for=...)``, its own polling loop over
  ``GET /v3/async/task-result`` (``async_task_result``), which sleeps
  ``settings.DEFAULT_POLL_INTERVAL`` (0.5 s) between polls.

Three adjustments, all outside the SDK's logic: ``base_url`` points at the fake;
``settings.DEFAULT_POLL_INTERVAL`` is scaled by the time scale like every other interval
(0.5 service seconds); and a wrapper around ``NovitaClient._get`` rounds a fractional
``task.eta`` up to whole seconds, because a time-scaled fake reports eta in fractions of a
second while the SDK declares ``eta: Optional[int]`` and its loader (dataclass-wizard)
refuses ``0.217`` with a ParseError. The real gateway (and the fake at ``time_scale=1``)
sends whole seconds. ``wait_for`` counts polls, not seconds: its default of 300 polls x 0.5 s
gives up after 150 s, shorter than a long Hailuo-02 job, so it is raised.

Both clients run the same jobs (same fake seed): 50 at a time (a ThreadPoolExecutor of 50
threads; ``max_active_jobs=50``). Jobs are log-normal with a median of 30 service seconds at
``time_scale=0.2`` (6 real seconds): 50 threads polling every 0.1 real seconds is 500
requests a second, which the machine serves without the client saturating, so the SDK's
figures are what it would show in real time. ``--quick`` runs 50 jobs, 25 at a time, at
``time_scale=0.1`` (the same 500 requests a second).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._common import (
    FakeProcess,
    ProcSampler,
    ScenarioResult,
    markdown_table,
    percentile,
    run_isolated,
    timed,
)

NAME = "novita"
TITLE = "3. The gateway's SDK: novita-client + threads vs hailuo_async"
MEDIAN_SECONDS = 30.0
SIGMA = 0.4
# (time scale, workers): the SDK's demand, workers x 2 polls per service second / time
# scale, is 500 requests per real second in both modes.
FULL = (0.2, 50)
QUICK = (0.1, 25)
SDK_POLL_INTERVAL = 0.5  # novita_client.settings.DEFAULT_POLL_INTERVAL, service seconds
SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
PROMPT = "a lighthouse keeper climbing a spiral staircase, cinematic"


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().split(":")[0][:80]
        self.messages[text] = self.messages.get(text, 0) + 1


def _novita_run(
    url: str, api_key: str, jobs: int, time_scale: float, workers: int
) -> dict[str, Any]:
    from novita_client import NovitaClient, settings

    settings.DEFAULT_POLL_INTERVAL = SDK_POLL_INTERVAL * time_scale
    original_get = NovitaClient._get

    def get_with_whole_eta(self: Any, api_path: str, params: Any = None) -> Any:
        data = original_get(self, api_path, params)
        task = data.get("task") if isinstance(data, dict) else None
        if isinstance(task, dict) and isinstance(task.get("eta"), float):
            task["eta"] = math.ceil(task["eta"])
        return data

    NovitaClient._get = get_with_whole_eta
    counter = _Counter()
    # Count the SDK's warnings instead of printing them (its wait loop calls logging.debug()
    # on the root logger, which installs a stderr handler).
    for name in ("urllib3", "novita_client"):
        logger = logging.getLogger(name)
        logger.addHandler(counter)
        logger.propagate = False
    client = NovitaClient(api_key, base_url=url)
    payload = {"prompt": PROMPT, "duration": 6, "resolution": "768P"}
    seen: dict[str, float] = {}
    errors: list[str] = []

    def job(_: int) -> bool:
        try:
            task_id = client._post(SUBMIT_PATH, payload)["task_id"]
            final = client.wait_for_task_v3(task_id, wait_for=10**9)
        except Exception as exc:  # report whatever stops the SDK
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return False
        seen[task_id] = time.monotonic()
        return bool(final.task.status.value == "TASK_STATUS_SUCCEED")

    with ProcSampler() as sampler:
        cpu0 = time.process_time()
        with timed() as elapsed, ThreadPoolExecutor(max_workers=workers) as pool:
            ok = sum(pool.map(job, range(jobs)))
        cpu = time.process_time() - cpu0
    return {
        "ok": ok,
        "seen": seen,
        "wall": elapsed(),
        "cpu": cpu,
        "peak_threads": sampler.peak_threads,
        "peak_rss": sampler.peak_rss,
        "errors": errors[:5],
        "error_count": len(errors),
        "warnings": counter.messages,
    }


async def _hailuo(
    url: str, api_key: str, jobs: int, time_scale: float, workers: int
) -> dict[str, Any]:
    from hailuo_async import HailuoClient, PollPolicy, VideoRequest

    request = VideoRequest(prompt=PROMPT)
    seen: dict[str, float] = {}
    ok = 0
    async with (
        HailuoClient(
            api_key=api_key, base_url=url, poll_policy=PollPolicy().scaled(time_scale)
        ) as client,
        client.generate_many((request for _ in range(jobs)), max_active_jobs=workers) as outcomes,
    ):
        async for outcome in outcomes:
            ok += outcome.ok
            if outcome.task_id is not None:
                seen[outcome.task_id] = time.monotonic()
    return {"ok": ok, "seen": seen}


def _hailuo_run(
    url: str, api_key: str, jobs: int, time_scale: float, workers: int
) -> dict[str, Any]:
    with ProcSampler() as sampler:
        cpu0 = time.process_time()
        with timed() as elapsed:
            result = asyncio.run(_hailuo(url, api_key, jobs, time_scale, workers))
        cpu = time.process_time() - cpu0
    result.update(
        wall=elapsed(),
        cpu=cpu,
        peak_threads=sampler.peak_threads,
        peak_rss=sampler.peak_rss,
        errors=[],
        error_count=0,
        warnings={},
    )
    return result


def client_run(
    *, contender: str, url: str, api_key: str, jobs: int, time_scale: float, workers: int
) -> dict[str, Any]:
    """One contender's run, in a fresh interpreter."""
    if contender == "novita":
        return _novita_run(url, api_key, jobs, time_scale, workers)
    return _hailuo_run(url, api_key, jobs, time_scale, workers)


def measure(contender: str, jobs: int, time_scale: float, workers: int) -> dict[str, Any]:
    """One contender against a fresh fake (same seed, so the same job durations)."""
    from hailuo_async.testing import LogNormal

    with FakeProcess(
        time_scale=time_scale, seed=11, job_duration=LogNormal(MEDIAN_SECONDS, SIGMA)
    ) as fake:
        result = run_isolated(
            client_run,
            contender=contender,
            url=fake.url,
            api_key=fake.api_key,
            jobs=jobs,
            time_scale=time_scale,
            workers=workers,
        )
        stats = fake.stats()
        finished = fake.finished_at(list(result["seen"])) if result["seen"] else {}
    delays = [(result["seen"][tid] - finished[tid]) / time_scale for tid in finished]
    result["polls"] = stats["polls_total"]
    result["submits"] = stats["submission_attempts"]
    result["delay_p50"] = percentile(delays, 0.5)
    result["delay_p95"] = percentile(delays, 0.95)
    del result["seen"]
    return result


def run(*, quick: bool = False) -> ScenarioResult:
    """novita-client over a thread pool, then hailuo_async, on the same jobs."""
    jobs = 50 if quick else 200
    time_scale, workers = QUICK if quick else FULL
    figures: dict[str, Any] = {
        "time_scale": time_scale,
        "jobs": jobs,
        "workers": workers,
        "job_duration": f"lognormal median {MEDIAN_SECONDS:g} s sigma {SIGMA:g}",
    }
    notes: list[str] = []
    rows: list[list[object]] = []
    results: dict[str, dict[str, Any]] = {}
    with timed() as elapsed:
        for contender, label in (
            ("novita", f"novita-client 0.7, {workers} threads"),
            ("hailuo_async", f"hailuo_async generate_many, {workers} active"),
        ):
            try:
                result = measure(contender, jobs, time_scale, workers)
            except Exception as exc:  # report, do not hide, a contender that cannot run
                notes.append(f"{label} could not run: {type(exc).__name__}: {exc}")
                figures[f"{contender}_status"] = f"failed: {type(exc).__name__}: {exc}"[:300]
                continue
            results[contender] = result
            status = "ok" if result["ok"] == jobs else f"{result['ok']}/{jobs} succeeded"
            figures[f"{contender}_status"] = status
            figures[f"{contender}_wall_s"] = result["wall"]
            figures[f"{contender}_polls"] = result["polls"]
            figures[f"{contender}_polls_per_job"] = result["polls"] / jobs
            figures[f"{contender}_cpu_s"] = result["cpu"]
            figures[f"{contender}_cpu_ms_per_job"] = result["cpu"] / jobs * 1000
            figures[f"{contender}_peak_threads"] = result["peak_threads"]
            figures[f"{contender}_peak_rss_mib"] = result["peak_rss"] / 2**20
            figures[f"{contender}_delay_p50"] = result["delay_p50"]
            figures[f"{contender}_delay_p95"] = result["delay_p95"]
            figures[f"{contender}_errors"] = result["error_count"]
            if result["errors"]:
                notes.append(
                    f"{label}: {result['error_count']} jobs failed, e.g. {result['errors'][0]}"
                )
            for message, count in result["warnings"].items():
                notes.append(f"{label} logged {count} x '{message}'")
            rows.append(
                [
                    label,
                    status,
                    result["wall"],
                    result["polls"] / jobs,
                    result["cpu"],
                    result["peak_threads"],
                    result["peak_rss"] / 2**20,
                    result["delay_p50"],
                    result["delay_p95"],
                ]
            )
    if "novita" in results and "hailuo_async" in results:
        hailuo, novita = results["hailuo_async"], results["novita"]
        figures["wall_hailuo_vs_novita_ratio"] = hailuo["wall"] / novita["wall"]
        figures["polls_hailuo_vs_novita_ratio"] = hailuo["polls"] / novita["polls"]
        figures["cpu_hailuo_vs_novita_ratio"] = hailuo["cpu"] / novita["cpu"]
        figures["threads_hailuo_vs_novita_ratio"] = hailuo["peak_threads"] / max(
            1, novita["peak_threads"]
        )
        notes.append(
            f"hailuo_async / novita-client: wall {figures['wall_hailuo_vs_novita_ratio']:.2f}x, "
            f"polls {figures['polls_hailuo_vs_novita_ratio']:.3f}x, CPU "
            f"{figures['cpu_hailuo_vs_novita_ratio']:.3f}x, threads "
            f"{hailuo['peak_threads']} vs {novita['peak_threads']}."
        )
    notes.append(
        f"{jobs} jobs, log-normal durations (median {MEDIAN_SECONDS:g} s, sigma {SIGMA:g}) at "
        f"time_scale {time_scale:g}; novita polls every {SDK_POLL_INTERVAL:g} service s (its "
        "default, scaled); its submit is the SDK's generic _post (it has no Hailuo-02 method); "
        "a shim rounds the scaled fake's fractional eta to whole seconds for its int-typed "
        "loader. Delays in service seconds; threads are OS threads of the client process."
    )
    table = markdown_table(
        [
            "client",
            "result",
            "wall (real s)",
            "polls/job",
            "client CPU s",
            "peak threads",
            "peak RSS MiB",
            "delay p50 (s)",
            "delay p95 (s)",
        ],
        rows,
    )
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_novita"))
