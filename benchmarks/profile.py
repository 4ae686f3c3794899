"""Profile hailuo_async's side of a scenario with pyinstrument (``pip install pyinstrument``).

    python -m benchmarks.profile throughput [--active 64] [--jobs 3000]
    python -m benchmarks.profile polling [--jobs 96]
    python -m benchmarks.profile throughput --calls [--active 64] [--jobs 3000]

    python -m benchmarks.profile throughput --instructions [--active 64] [--jobs 1000]

``--instructions`` runs each throughput contender in a child interpreter under valgrind's
callgrind (``apt-get install valgrind``), twice: with ``--jobs`` measured jobs and with
twice as many, after the same warm-up; the difference of the two instruction counts over
``--jobs`` is the client's instructions per job, start-up and warm-up cancelled out. Like
call counts, and closer to CPU time, instruction counts do not move with the machine's
load. (Each run takes a minute or two: callgrind runs the client some 50 times slower.)

``--calls`` runs hailuo_async and the bare aiohttp loop of the throughput scenario under
cProfile instead and prints function calls per job of each (warm-up batch included in both
the calls and the jobs). Unlike times, call counts do not depend on the machine's load, so
they compare a change's cost across runs on a busy machine.

The fake serves from its own process, as in the benchmarks; the client runs in this one
under the profiler; its call tree and its top entries by own time are printed. The HTML
tree is written to ``benchmarks/results/profile-<scenario>.html`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _scenario(name: str, jobs: int, active: int) -> tuple[dict[str, Any], Any]:
    """The fake's settings and the client coroutine factory of a scenario."""
    if name == "throughput":
        from benchmarks import bench_throughput as throughput
        from hailuo_async.testing import Fixed

        knobs = {"time_scale": throughput.TIME_SCALE, "seed": 1, "job_duration": Fixed(1.0)}
        return knobs, lambda url, key: throughput.measured_run(
            "hailuo_async", url=url, api_key=key, jobs=jobs, active=active, warmup=200
        )
    from benchmarks import bench_polling as polling
    from hailuo_async.testing import LogNormal

    knobs = {
        "time_scale": polling.TIME_SCALE,
        "seed": 7,
        "job_duration": LogNormal(polling.MEDIAN_SECONDS, polling.SIGMA),
        "eta_error": polling.ETA_ERROR,
    }
    return knobs, lambda url, key: polling._hailuo(url, key, jobs)


def _calls_per_job(jobs: int, active: int) -> dict[str, float]:
    """cProfile's call count per job of each throughput contender (fresh fake each)."""
    import cProfile
    import pstats

    from benchmarks import bench_throughput as throughput
    from benchmarks._common import FakeProcess

    knobs, _ = _scenario("throughput", jobs, active)
    warmup = throughput.WARMUP
    counts: dict[str, float] = {}
    for contender in ("hailuo_async", "bare_aiohttp"):
        with FakeProcess(**knobs) as fake:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(
                throughput.measured_run(
                    contender,
                    url=fake.url,
                    api_key=fake.api_key,
                    jobs=jobs,
                    active=active,
                    warmup=warmup,
                )
            )
            profiler.disable()
        stats = pstats.Stats(profiler)
        counts[contender] = stats.total_calls / (jobs + warmup)  # type: ignore[attr-defined]
    return counts


def _instructions(contender: str, jobs: int, active: int) -> int:
    """Instructions callgrind counts in a child interpreter running ``jobs`` measured jobs."""
    import os
    import re
    import subprocess
    import sys

    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.profile",
        "throughput",
        "--run-only",
        contender,
        "--jobs",
        str(jobs),
        "--active",
        str(active),
    ]
    # PYTHONMALLOC=malloc would change what is measured; the interpreter's own allocator
    # is what users run, and valgrind copes with it.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # The command is fixed here; only numbers from our own arguments go into it.
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def _instructions_per_job(jobs: int, active: int) -> dict[str, float]:
    """Callgrind instructions per measured job of each throughput contender."""
    per_job: dict[str, float] = {}
    for contender in ("hailuo_async", "bare_aiohttp"):
        fewer = _instructions(contender, jobs, active)
        more = _instructions(contender, 2 * jobs, active)
        per_job[contender] = (more - fewer) / jobs
    return per_job


def _run_only(contender: str, jobs: int, active: int) -> None:
    """One contender's warm-up and measured batch against a fresh fake (under callgrind)."""
    from benchmarks import bench_throughput as throughput
    from benchmarks._common import FakeProcess

    knobs, _ = _scenario("throughput", jobs, active)
    with FakeProcess(**knobs) as fake:
        asyncio.run(
            throughput.measured_run(
                contender,  # type: ignore[arg-type]
                url=fake.url,
                api_key=fake.api_key,
                jobs=jobs,
                active=active,
                warmup=throughput.WARMUP,
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scenario's hailuo_async contender under pyinstrument."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("scenario", choices=["throughput", "polling"])
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--active", type=int, default=64)
    parser.add_argument(
        "--calls", action="store_true", help="throughput only: cProfile calls per job"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="throughput only: callgrind instructions per job (needs valgrind)",
    )
    parser.add_argument("--run-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_only is not None:
        _run_only(args.run_only, args.jobs, args.active)
        return 0
    if args.instructions:
        if args.scenario != "throughput":
            parser.error("--instructions measures the throughput scenario only")
        per_job = _instructions_per_job(args.jobs or 1_000, args.active)
        for contender, count in per_job.items():
            print(f"{contender}: {count:,.0f} instructions per job @{args.active}")
        ratio = per_job["hailuo_async"] / per_job["bare_aiohttp"]
        print(f"ratio: {ratio:.3f}")
        return 0
    jobs = args.jobs or (3_000 if args.scenario == "throughput" else 96)
    if args.calls:
        if args.scenario != "throughput":
            parser.error("--calls measures the throughput scenario only")
        for contender, calls in _calls_per_job(jobs, args.active).items():
            print(f"{contender}: {calls:,.0f} calls per job @{args.active}")
        return 0
    from pyinstrument import Profiler

    from benchmarks._common import FakeProcess

    knobs, client = _scenario(args.scenario, jobs, args.active)
    with FakeProcess(**knobs) as fake:
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        with profiler:
            asyncio.run(client(fake.url, fake.api_key))
    from pyinstrument.renderers import ConsoleRenderer

    print(profiler.output_text(unicode=False, color=False, show_all=False))
    print("Top entries by own time:")
    flat = ConsoleRenderer(unicode=False, color=False, flat=True, flat_time="self")
    print("\n".join(profiler.output(flat).splitlines()[:40]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"profile-{args.scenario}.html"
    path.write_text(profiler.output_html(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
