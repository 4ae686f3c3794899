"""Shared plumbing of the benchmarks: the fake service in its own process, isolated client
runs, samplers (RSS, threads, event-loop lag), percentiles and markdown tables.

The fake always runs in a child process of its own, so that what a benchmark measures in
the client process (CPU seconds, RSS, threads, loop lag) is the client's alone. On Linux
``time.monotonic()`` is CLOCK_MONOTONIC, one clock for every process, so the fake's
``finished_at`` times compare directly with the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "FakeProcess",
    "LoopLag",
    "ProcSampler",
    "ScenarioResult",
    "cli",
    "fmt",
    "machine_info",
    "markdown_table",
    "percentile",
    "read_proc_status",
    "reset_peak_rss",
    "run_isolated",
]

T = TypeVar("T")
_SPAWN = multiprocessing.get_context("spawn")


# -- results ----------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """What one benchmark script reports: a markdown table, flat figures, ratios and notes."""

    name: str
    title: str
    table: str
    figures: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> dict[str, float]:
        """The figures whose key ends in ``_ratio``: each a comparison of two contenders."""
        return {
            key: value
            for key, value in self.figures.items()
            if key.endswith("_ratio") and isinstance(value, (int, float))
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        data = asdict(self)
        data["ratios"] = self.ratios
        return data

    def render(self) -> str:
        """The table and notes, as markdown."""
        lines = [f"## {self.title}", "", self.table, ""]
        lines += [f"- {note}" for note in self.notes]
        lines.append(f"\n_{self.seconds:.1f} s_")
        return "\n".join(lines)


def same_malloc_footing() -> None:
    """Raise glibc's mmap threshold in this (client) process, as hailuo_async's session does.

    asyncio's socket transports read into a fresh 256 KiB buffer each time; until a block that
    large has been freed once, glibc serves each one with mmap, mremap and munmap (three
    system calls and a page fault per read). hailuo_async raises the threshold when its
    session opens (``hailuo_async/_transport.py``); a bare loop's process gets there, or not,
    by accident of what it freed before (runs of the bare loop were seen both ways). The
    throughput ratios compare the clients' own work, so every contender starts here, with the
    very call the session makes.
    """
    from hailuo_async._transport import _serve_reads_from_the_heap

    _serve_reads_from_the_heap()


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table: a few significant digits, thousands separated."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    return f"{value:.{decimals}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numbers are right-aligned and shortened."""
    cells = [[fmt(cell) for cell in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [
        max(len(headers[i]), *(len(row[i]) for row in cells)) if cells else len(headers[i])
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])
            for i, value in enumerate(values)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (widths[i] + 1) + ":" if numeric[i] else "-" * (widths[i] + 2)
            for i in range(len(headers))
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_info() -> dict[str, Any]:
    """Where the figures were taken: CPU count, platform, interpreter, package versions."""
    packages = {}
    for name in (
        "hailuo-async",
        "aiohttp",
        "anyio",
        "attrs",
        "cattrs",
        "httpx",
        "requests",
        "novita-client",
        "matplotlib",
        "psutil",
    ):
        packages[name] = _version(name)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": packages,
        "source": _source_state(),
    }


def _source_state() -> dict[str, Any]:
    """The checkout's commit and how many files differ from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent
    state: dict[str, Any] = {"commit": None, "changed_files": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        state["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, read-only
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "hailuo_async"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        state["changed_files"] = len(changed.splitlines())
    return state


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# -- process-level measurements -----------------------------------------------------------------


def read_proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (bytes) and Threads of this process, from /proc (Linux)."""
    wanted = {"VmRSS": 1024, "VmHWM": 1024, "Threads": 1}
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in wanted:
                    found[key] = int(rest.split()[0]) * wanted[key]
    except OSError:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        found = {"VmRSS": usage.ru_maxrss * 1024, "VmHWM": usage.ru_maxrss * 1024}
        found["Threads"] = threading.active_count()
    return found


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux's clear_refs "5"); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


class ProcSampler:
    """A daemon thread that samples RSS and the OS thread count every ``interval`` seconds.

    The sampler's own thread is left out of ``peak_threads``.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self.peak_rss = 0
        self.peak_threads = 0

    def _sample(self) -> None:
        status = read_proc_status()
        self.peak_rss = max(self.peak_rss, status.get("VmRSS", 0))
        self.peak_threads = max(self.peak_threads, status.get("Threads", 0) - 1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        self._sample()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class LoopLag:
    """A ticker task that sleeps ``interval`` again and again and records each oversleep."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, time.perf_counter() - started - self.interval))

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, float | None]:
        """p50, p99 and max oversleep in milliseconds."""
        ms = [lag * 1000.0 for lag in self.lags]
        return {
            "p50_ms": percentile(ms, 0.5),
            "p99_ms": percentile(ms, 0.99),
            "max_ms": max(ms) if ms else None,
        }


def run_isolated(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run ``fn(**kwargs)`` in a fresh interpreter (spawn) and return its result.

    ``fn`` must be a module-level function of an importable module (``benchmarks.*``).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as pool:
        return pool.submit(fn, **kwargs).result()


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used, all threads included."""
    return time.process_time()


# -- the fake service in a child process ----------------------------------------------------------


def _fake_main(conn: multiprocessing.connection.Connection, knobs: dict[str, Any]) -> None:
    asyncio.run(_fake_serve(conn, knobs))


async def _fake_serve(conn: multiprocessing.connection.Connection, knobs: dict[str, Any]) -> None:
    from hailuo_async.testing import FakeHailuoServer
    from hailuo_async.testing._validation import parse_submit_body

    loop = asyncio.get_running_loop()
    server = FakeHailuoServer(**knobs)
    scale = server.config.time_scale
    async with server:
        conn.send(("ready", {"url": server.url, "api_key": server.api_key, "pid": os.getpid()}))
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            result: Any = None
            if command == "close":
                conn.send(("ok", None))
                break
            if command == "stats":
                stats = server.stats
                result = {
                    "submission_attempts": stats.submission_attempts,
                    "submissions_accepted": stats.submissions_accepted,
                    "polls_total": stats.polls_total,
                    "rate_limited": dict(stats.rate_limited),
                    "rate_limited_total": stats.rate_limited_total,
                    "duplicate_submissions": stats.duplicate_submissions,
                    "responses_by_status": dict(stats.responses_by_status),
                    "tasks_terminal": stats.tasks_terminal,
                    "faults_injected": dict(stats.faults_injected),
                    "retrieves_total": stats.retrieves_total,
                    "api_requests": stats.api_requests,
                    "requests_by_second": dict(stats.requests_by_second),
                    "error_codes": dict(stats.error_codes),
                }
            elif command == "polls_by_task":
                result = dict(server.stats.polls_by_task)
            elif command == "finished_at":
                ids = args[0] if args else list(server.tasks)
                result = {tid: server.tasks[tid].finished_at for tid in ids if tid in server.tasks}
            elif command == "durations":
                # Service seconds from submission to the task's end, for every task created.
                result = [
                    (task.finished_at - task.created_at) / scale for task in server.tasks.values()
                ]
            elif command == "seed":
                # Create tasks directly, as accepted submissions would (no HTTP involved).
                count, prompt = args
                submission = parse_submit_body(
                    json.dumps({"prompt": prompt}).encode(), max_image_bytes=1024
                )
                ids = []
                for start in range(0, count, 5000):
                    for _ in range(min(5000, count - start)):
                        ids.append(server._service.create_task(server.api_key, submission).task_id)
                    await asyncio.sleep(0)
                result = ids
            elif command == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                result = usage.ru_utime + usage.ru_stime
            else:
                result = f"unknown command {command!r}"
            conn.send(("ok", result))


class FakeProcess:
    """A FakeHailuoServer (with these knobs) serving from a child process.

    Use as ``with FakeProcess(time_scale=0.01) as fake:``; then ``fake.url``, ``fake.api_key``,
    ``fake.stats()``, ``fake.finished_at(ids)``, ``fake.seed(n)``, ``fake.cpu()``.
    """

    def __init__(self, **knobs: Any) -> None:
        self.knobs = knobs
        self.url = ""
        self.api_key = ""
        self.pid = 0
        self._conn: multiprocessing.connection.Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> FakeProcess:
        parent, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_fake_main, args=(child, self.knobs), name="fake-hailuo", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(60):
            raise RuntimeError("the fake service did not start within 60 s")
        _, info = parent.recv()
        self.url, self.api_key, self.pid = info["url"], info["api_key"], info["pid"]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self.call("close", timeout=10)
        if self._process is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
        if self._conn is not None:
            self._conn.close()

    def call(self, command: str, *args: Any, timeout: float = 300.0) -> Any:
        """Send one command to the fake's process and return its answer."""
        assert self._conn is not None, "use FakeProcess in a `with` block"
        with self._lock:
            self._conn.send((command, args))
            if not self._conn.poll(timeout):
                raise RuntimeError(f"the fake did not answer {command!r} within {timeout} s")
            status, result = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the fake failed {command!r}: {result}")
        return result

    async def acall(self, command: str, *args: Any) -> Any:
        """``call`` from inside an event loop, without blocking it."""
        return await asyncio.get_running_loop().run_in_executor(None, self.call, command, *args)

    def stats(self) -> dict[str, Any]:
        """The fake's counters (without the per-task lists)."""
        result: dict[str, Any] = self.call("stats")
        return result

    def finished_at(self, ids: Sequence[str] | None = None) -> dict[str, float]:
        """Monotonic end time of each task (all tasks when ``ids`` is None)."""
        result: dict[str, float] = self.call("finished_at", *([list(ids)] if ids else []))
        return result

    def polls_by_task(self) -> dict[str, int]:
        """Task-result requests per task id."""
        result: dict[str, int] = self.call("polls_by_task")
        return result

    def durations(self) -> list[float]:
        """Every task's duration in service seconds."""
        result: list[float] = self.call("durations")
        return result

    def seed(self, count: int, prompt: str = "a seeded benchmark task") -> list[str]:
        """Create ``count`` tasks directly inside the fake and return their ids."""
        result: list[str] = self.call("seed", count, prompt)
        return result

    def cpu(self) -> float:
        """CPU seconds the fake's process has used."""
        result: float = self.call("cpu")
        return result


# -- command line -------------------------------------------------------------------------------


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...; elapsed()`` gives the seconds since entry."""
    started = time.perf_counter()
    ended: list[float] = []

    def elapsed() -> float:
        return (ended[0] if ended else time.perf_counter()) - started

    try:
        yield elapsed
    finally:
        ended.append(time.perf_counter())


def cli(module_name: str, argv: Sequence[str] | None = None) -> int:
    """The command line of one benchmark script: run it, print its markdown table."""
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}")
    parser.add_argument("--quick", action="store_true", help="the short version (CI-sized)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    # Import by the package name, so that functions sent to child processes are pickled as
    # benchmarks.<module>.<function> even when the script runs as __main__.
    module = importlib.import_module(module_name)
    result: ScenarioResult = module.run(quick=args.quick)
    print(result.render())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0
