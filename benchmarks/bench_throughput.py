"""Scenario 1, throughput: the client's own overhead on "instant" jobs.

hailuo_async ``generate_many`` against two hand-written loops (one aiohttp ClientSession, or
one httpx.AsyncClient, with an asyncio.Semaphore over the jobs), with the same limits: the
same number of active jobs, 64 connections / requests in flight, and the same poll cadence.
Jobs last 1 µs (``Fixed(1)`` at ``time_scale=1e-6``), so each job is exactly one POST and
one GET on every side and the run measures nothing but request handling; the fake's own
count of requests per job is reported as the proof.

The same work on both sides: the same request body and headers, the first poll
``POLL_DELAY`` (2 ms) after the submission's answer came, when every job has ended.
hailuo_async's ``PollPolicy`` has ``min_interval = max_interval = max_aimed_interval =
POLL_DELAY``: the interval bounds make every wait exactly 2 ms (the jitter is clamped away),
and ``max_aimed_interval`` keeps the first poll from being aimed at the durations learnt in
the run (under load, the slowest answer seen: tens of ms), which would compare poll plans,
not overhead. The bare loops wait 2 ms +/- 10 % (uniform jitter, same mean).

How the ratios are kept trustworthy on a shared, busy machine: a ratio of two runs taken
minutes apart mostly measures how the machine's load changed in between (single runs swung
0.5-1.6 on 2 cores). So the runs are paired: at each size every contender gets a client
process and a fake process (same seed and settings) of its own, started once and warmed up
with a batch, and the scenario then plays ``rounds`` rounds (quick: 8, full: 16), each one a
hailuo_async batch and a bare aiohttp batch back to back (no process start in between), in
ABBA order (hailuo first in even rounds, bare first in odd ones), so a drift of the load
favours neither side. Each round gives one ratio for jobs/s and one for CPU per job; the
``*_ratio`` figures are the median of those paired ratios, and ``*_ratio_min`` /
``*_ratio_max`` / ``*_ratio_pairs`` their spread. Bare httpx (30x slower, a reference only)
runs one batch per size, right before the first hailuo_async batch, its pair. The
per-contender figures are medians over that contender's batches.

Client CPU is ``time.process_time()`` of the client's process over the measured batch: the
fake's CPU is never in it (another process, reported as its own column; between batches the
client waits for the next order on a thread, idle). On a 2-core machine the fake's process
(one core) is often the bottleneck of jobs/s, which is why CPU seconds per job are reported
too: they show the client's overhead even when the service caps the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from benchmarks._bare import PollCadence, aiohttp_fetcher, httpx_fetcher, run_jobs
from benchmarks._common import (
    FakeProcess,
    ScenarioResult,
    fmt,
    markdown_table,
    same_malloc_footing,
    timed,
)

NAME = "throughput"
TITLE = "1. Throughput: client overhead on instant jobs"
TIME_SCALE = 1e-6
POLL_DELAY = 0.002  # seconds from submission to the first poll, for every contender
MAX_IN_FLIGHT = 64
PROMPT = "a paper boat drifting down a rain gutter, macro lens"

Contender = Literal["hailuo_async", "bare_aiohttp", "bare_httpx"]
CONTENDERS: tuple[Contender, ...] = ("hailuo_async", "bare_aiohttp", "bare_httpx")
PAIRED: tuple[Contender, Contender] = ("hailuo_async", "bare_aiohttp")
WARMUP = 256
HTTPX_WARMUP = 64
_SPAWN = multiprocessing.get_context("spawn")
LABELS = {
    "hailuo_async": "hailuo_async generate_many",
    "bare_aiohttp": "bare aiohttp loop",
    "bare_httpx": "bare httpx loop",
}


def _hailuo_policy() -> Any:
    from hailuo_async import PollPolicy

    # max_aimed_interval too: otherwise the first poll is aimed from the durations learnt in
    # the run (under contention the slowest one seen, tens of ms), not made after POLL_DELAY
    # as the bare loops make it, and the run would compare poll plans, not client overhead.
    return PollPolicy(
        first_poll_delay=POLL_DELAY,
        min_interval=POLL_DELAY,
        max_interval=POLL_DELAY,
        max_aimed_interval=POLL_DELAY,
        jitter=0.1,
    )


def _bare_cadence() -> PollCadence:
    return PollCadence(
        kind="eta",
        first_delay=POLL_DELAY,
        min_interval=POLL_DELAY,
        max_interval=POLL_DELAY,
        jitter=0.1,
    )


async def _hailuo_batch(client: Any, jobs: int, active: int) -> tuple[int, int]:
    from hailuo_async import VideoRequest

    request = VideoRequest(prompt=PROMPT)
    ok = 0
    async with client.generate_many(
        (request for _ in range(jobs)), max_active_jobs=active
    ) as outcomes:
        async for outcome in outcomes:
            ok += outcome.ok
        polls: int = outcomes.counts.polls
    return ok, polls


async def _measured(run_batch: BatchRunner, jobs: int) -> dict[str, Any]:
    """One batch of ``jobs`` on an open, warmed-up client: wall and CPU time, completions, polls."""
    cpu0 = time.process_time()
    with timed() as elapsed:
        ok, polls = await run_batch(jobs)
    return {"wall": elapsed(), "cpu": time.process_time() - cpu0, "ok": ok, "polls": polls}


async def measured_run(
    contender: Contender, *, url: str, api_key: str, jobs: int, active: int, warmup: int
) -> dict[str, Any]:
    """One contender's warm-up batch, then its measured one (for the profiler)."""
    async with _batch_runner(contender, url, api_key, active) as run_batch:
        await run_batch(warmup)
        return await _measured(run_batch, jobs)


async def _serve_batches(
    conn: multiprocessing.connection.Connection,
    *,
    contender: Contender,
    url: str,
    api_key: str,
    active: int,
    warmup: int,
) -> None:
    """Keep one client open; run a batch of the asked size each time one is asked for."""
    loop = asyncio.get_running_loop()
    async with _batch_runner(contender, url, api_key, active) as run_batch:
        await run_batch(warmup)
        conn.send(("ready", None))
        while True:
            # Waited for on a thread, so the loop keeps serving its connections meanwhile
            # (a blocked loop would miss the fake closing an idle keep-alive connection).
            jobs = await loop.run_in_executor(None, conn.recv)
            if jobs is None:
                break
            conn.send(("ok", await _measured(run_batch, jobs)))
    conn.send(("ok", None))


def _client_main(conn: multiprocessing.connection.Connection, settings: dict[str, Any]) -> None:
    asyncio.run(_serve_batches(conn, **settings))


BatchRunner = Callable[[int], Awaitable[tuple[int, int]]]


@contextlib.asynccontextmanager
async def _batch_runner(
    contender: Contender, url: str, api_key: str, active: int
) -> AsyncIterator[BatchRunner]:
    """An open client of ``contender``, as a function running a batch: (completed, polls)."""
    same_malloc_footing()
    if contender == "hailuo_async":
        from hailuo_async import HailuoClient, Limits

        async with HailuoClient(
            api_key=api_key,
            base_url=url,
            poll_policy=_hailuo_policy(),
            limits=Limits(max_in_flight=MAX_IN_FLIGHT),
        ) as client:
            yield lambda jobs: _hailuo_batch(client, jobs, active)
        return
    from hailuo_async import VideoRequest
    from hailuo_async.providers._gateway import gateway_body

    body = json.dumps(gateway_body(VideoRequest(prompt=PROMPT))).encode()
    stack = contextlib.AsyncExitStack()
    async with stack:
        if contender == "bare_aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, limit_per_host=0)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            fetch = aiohttp_fetcher(session, url, api_key)
        else:
            import httpx

            limits = httpx.Limits(
                max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT
            )
            httpx_client = await stack.enter_async_context(
                httpx.AsyncClient(limits=limits, timeout=60.0)
            )
            fetch = httpx_fetcher(httpx_client, url, api_key)

        async def batch(jobs: int) -> tuple[int, int]:
            run = await run_jobs(
                fetch, jobs=jobs, active=active, cadence=_bare_cadence(), body=body
            )
            return len(run.done_at), run.polls

        yield batch


class _Contender:
    """One contender's client in a process of its own, against a fake of its own.

    Both stay up for all the rounds at one size, so a round costs no process start and the
    two runs of a pair are a fraction of a second apart.
    """

    def __init__(self, contender: Contender, active: int, warmup: int) -> None:
        from hailuo_async.testing import Fixed

        self.contender = contender
        self._stack = contextlib.ExitStack()
        try:
            self._start(
                active, warmup, FakeProcess(time_scale=TIME_SCALE, seed=1, job_duration=Fixed(1.0))
            )
        except BaseException:
            self._stack.close()  # no fake or client process left behind
            raise

    def _start(self, active: int, warmup: int, fake: FakeProcess) -> None:
        contender = self.contender
        self.fake = self._stack.enter_context(fake)
        parent, child = _SPAWN.Pipe()
        self._conn = parent
        process = _SPAWN.Process(
            target=_client_main,
            args=(
                child,
                {
                    "contender": contender,
                    "url": self.fake.url,
                    "api_key": self.fake.api_key,
                    "active": active,
                    "warmup": warmup,
                },
            ),
            name=f"bench-{contender}",
            daemon=True,
        )
        process.start()
        child.close()
        self._process = process
        self._stack.callback(self._stop)
        self._answer(timeout=300)

    def _answer(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise RuntimeError(f"{self.contender} did not answer within {timeout} s")
        status, result = self._conn.recv()
        if status not in ("ok", "ready"):
            raise RuntimeError(f"{self.contender} failed: {result}")
        return result

    def _stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self._conn.send(None)
            self._answer(timeout=30)
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()

    def run(self, jobs: int) -> dict[str, Any]:
        """One measured batch of ``jobs``, with the fake's view of it."""
        before = self.fake.stats()
        cpu0 = self.fake.cpu()
        self._conn.send(jobs)
        result: dict[str, Any] = self._answer(timeout=600)
        result["server_cpu"] = self.fake.cpu() - cpu0
        after = self.fake.stats()
        result["server_requests"] = _requests(after) - _requests(before)
        result["server_errors"] = _errors(after) - _errors(before)
        result["jobs"] = jobs
        result["jobs_per_s"] = result["ok"] / result["wall"]
        result["cpu_ms_per_job"] = result["cpu"] / jobs * 1000.0
        result["polls_per_job"] = result["polls"] / jobs
        return result

    def __enter__(self) -> _Contender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


def _requests(stats: dict[str, Any]) -> int:
    return int(stats["submission_attempts"] + stats["polls_total"])


def _errors(stats: dict[str, Any]) -> int:
    return sum(
        count for status, count in stats["responses_by_status"].items() if int(status) >= 400
    )


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs at one size: medians of the rates, totals of what went wrong."""
    return {
        "runs": len(runs),
        "jobs": runs[0]["jobs"],
        "jobs_per_s": _median([run["jobs_per_s"] for run in runs]),
        "cpu_ms_per_job": _median([run["cpu_ms_per_job"] for run in runs]),
        "polls_per_job": _median([run["polls_per_job"] for run in runs]),
        "requests_per_job": _median([run["server_requests"] / run["jobs"] for run in runs]),
        "completed": min(run["ok"] for run in runs),
        "server_cpu": _median([run["server_cpu"] for run in runs]),
        "server_errors": sum(run["server_errors"] for run in runs),
        "client_util": _median([run["cpu"] / run["wall"] for run in runs]),
        "server_util": _median([run["server_cpu"] / run["wall"] for run in runs]),
    }


Pair = tuple[dict[str, Any], dict[str, Any]]


def _rounds(
    active: int, jobs: int, httpx_jobs: int, rounds: int
) -> tuple[dict[Contender, list[dict[str, Any]]], dict[str, list[Pair]]]:
    """Run the contenders at ``active`` in alternating rounds; return every run and the pairs.

    The rounds go hailuo_async then bare aiohttp, then bare aiohttp then hailuo_async (ABBA),
    so a drift of the machine's load across the rounds favours neither side. Bare httpx runs
    once, right before the first hailuo_async run, its pair.
    """
    runs: dict[Contender, list[dict[str, Any]]] = {contender: [] for contender in CONTENDERS}
    pairs: dict[str, list[Pair]] = {"aiohttp": [], "httpx": []}
    with contextlib.ExitStack() as stack:
        sides = {
            contender: stack.enter_context(
                _Contender(contender, active, HTTPX_WARMUP if contender == "bare_httpx" else WARMUP)
            )
            for contender in CONTENDERS
        }
        for round_ in range(rounds):
            if round_ == 0:
                runs["bare_httpx"].append(sides["bare_httpx"].run(httpx_jobs))
            order = PAIRED if round_ % 2 == 0 else PAIRED[::-1]
            results = {contender: sides[contender].run(jobs) for contender in order}
            for contender, result in results.items():
                runs[contender].append(result)
            pairs["aiohttp"].append((results["hailuo_async"], results["bare_aiohttp"]))
            if round_ == 0:
                pairs["httpx"].append((results["hailuo_async"], runs["bare_httpx"][0]))
    return runs, pairs


def _paired_ratios(figures: dict[str, Any], key: str, values: list[float]) -> None:
    """``key``: the median of the paired ratios; ``key_min``/``_max``/``_pairs``: the spread."""
    figures[key] = _median(values)
    figures[f"{key}_min"] = min(values)
    figures[f"{key}_max"] = max(values)
    figures[f"{key}_pairs"] = len(values)


def run(*, quick: bool = False) -> ScenarioResult:
    """Measure every contender at 64 and 1,024 active jobs, in alternating rounds."""
    # httpx spends milliseconds of CPU per request with many requests queued on its pool,
    # so it gets fewer jobs (a rate needs no more).
    sizes = (
        {64: (1_500, 256), 1024: (3_072, 1_024)}
        if quick
        else {64: (3_000, 1_000), 1024: (6_144, 2_048)}
    )
    rounds = 8 if quick else 16
    figures: dict[str, Any] = {
        "time_scale": TIME_SCALE,
        "max_in_flight": MAX_IN_FLIGHT,
        "rounds": rounds,
    }
    rows: list[list[object]] = []
    ratio_rows: list[list[object]] = []
    with timed() as elapsed:
        for active, (jobs, httpx_jobs) in sizes.items():
            runs, pairs = _rounds(active, jobs, httpx_jobs, rounds)
            for contender in CONTENDERS:
                result = _aggregate(runs[contender])
                prefix = f"{contender}_{active}"
                figures[f"{prefix}_jobs"] = result["jobs"]
                figures[f"{prefix}_runs"] = result["runs"]
                figures[f"{prefix}_jobs_per_s"] = result["jobs_per_s"]
                figures[f"{prefix}_cpu_ms_per_job"] = result["cpu_ms_per_job"]
                figures[f"{prefix}_polls_per_job"] = result["polls_per_job"]
                figures[f"{prefix}_requests_per_job"] = result["requests_per_job"]
                figures[f"{prefix}_completed"] = result["completed"]
                figures[f"{prefix}_server_cpu_s"] = result["server_cpu"]
                figures[f"{prefix}_server_errors"] = result["server_errors"]
                rows.append(
                    [
                        LABELS[contender],
                        active,
                        result["jobs"],
                        result["runs"],
                        result["jobs_per_s"],
                        result["cpu_ms_per_job"],
                        result["polls_per_job"],
                        result["requests_per_job"],
                        result["client_util"],
                        result["server_util"],
                    ]
                )
            for short, rival_pairs in pairs.items():
                rate = [ours["jobs_per_s"] / theirs["jobs_per_s"] for ours, theirs in rival_pairs]
                cpu = [
                    ours["cpu_ms_per_job"] / theirs["cpu_ms_per_job"]
                    for ours, theirs in rival_pairs
                ]
                rate_key = f"generate_many_vs_bare_{short}_{active}_ratio"
                cpu_key = f"cpu_per_job_generate_many_vs_bare_{short}_{active}_ratio"
                _paired_ratios(figures, rate_key, rate)
                _paired_ratios(figures, cpu_key, cpu)
                ratio_rows.append(
                    [
                        f"bare {short}",
                        active,
                        len(rate),
                        figures[rate_key],
                        f"{fmt(min(rate))}-{fmt(max(rate))}",
                        figures[cpu_key],
                        f"{fmt(min(cpu))}-{fmt(max(cpu))}",
                    ]
                )
    for short in ("aiohttp", "httpx"):
        # The worse size's median, with that size's spread.
        worse = min(
            sizes, key=lambda active: figures[f"generate_many_vs_bare_{short}_{active}_ratio"]
        )
        source = f"generate_many_vs_bare_{short}_{worse}_ratio"
        for suffix in ("", "_min", "_max", "_pairs"):
            figures[f"generate_many_vs_bare_{short}_ratio{suffix}"] = figures[source + suffix]
    table = markdown_table(
        [
            "client",
            "active jobs",
            "jobs",
            "batches",
            "jobs/s",
            "client CPU ms/job",
            "polls/job",
            "requests/job",
            "client CPU util",
            "fake CPU util",
        ],
        rows,
    )
    ratio_table = markdown_table(
        [
            "generate_many vs",
            "active jobs",
            "pairs",
            "jobs/s ratio (median)",
            "min-max",
            "CPU/job ratio (median)",
            "min-max",
        ],
        ratio_rows,
    )
    notes = [
        f"generate_many / bare aiohttp, jobs/s (median of paired ratios, worse of 64 and "
        f"1,024): {figures['generate_many_vs_bare_aiohttp_ratio']:.2f} (target >= 0.9); "
        f"/ bare httpx: {figures['generate_many_vs_bare_httpx_ratio']:.2f}.",
        "CPU ms/job ratios (hailuo_async / bare aiohttp, median of paired ratios, lower is "
        "better, target <= 1.3): "
        + ", ".join(
            f"@{active}: {figures[f'cpu_per_job_generate_many_vs_bare_aiohttp_{active}_ratio']:.2f}"
            for active in sizes
        ),
        f"{rounds} rounds per size, hailuo_async and bare aiohttp alternating (ABBA), each "
        "contender a client process and a fake of its own kept up for all the rounds (after a "
        "warm-up batch); a ratio is taken per round (its two batches back to back) and the "
        "median of them is reported; bare httpx runs one batch per size, next to the first "
        "hailuo_async batch. The per-contender rows are medians over the batches.",
        "Each job is one POST and one GET on every side (1 µs jobs, first poll 2 ms after the "
        "submission's answer; requests/job is the fake's count); 64 requests in flight at "
        "most; the fake serves from its own process (a CPU util near 1.0 means that process "
        "is the bottleneck); client CPU is the client process's own (`time.process_time()`).",
    ]
    return ScenarioResult(NAME, TITLE, table + "\n\n" + ratio_table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_throughput"))
