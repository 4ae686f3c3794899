"""Scenario 9, workers: 1, 2, 4 and 8 worker processes share one batch in PostgreSQL.

The fake (in its own process) enforces the account's limits: ``max_active_tasks=ACTIVE_CAP``
and ``requests_per_minute=RPM`` (time-scaled). One batch of JOBS jobs is added to a
PostgreSQL journal, then N processes each run ``client.work(store)`` on it. Jobs take
DURATION service seconds, so the physical ceiling is ``min(ACTIVE_CAP * 60 / DURATION,
RPM / 2)`` jobs per service minute (each job needs at least one POST and one GET).

Limits, in two modes: *per_process* (``--per-process``), each process has its own client
limits, the account's divided by N (``requests_per_minute = RPM / N``, ``max_active_jobs =
max(1, ACTIVE_CAP // N)``): the baseline that needs no coordination; *shared*
(``--shared``), every process's client takes the account's full limits and
``coordination=Coordination(dsn)``: the limits are shared through PostgreSQL.

Reported per N: jobs per service minute (first submission to last end, from the journal's
own timestamps, so process start-up is not counted) over the ceiling; 429s per 1,000 jobs;
duplicate submissions (accepted POSTs repeating a body) and jobs lost (not finished at the
end); journal round trips per job (``PostgresJobStore.round_trips`` summed over workers),
in shared mode the shared limits' round trips per API request (submits and polls the
fake answered), and the p95 of a claim's latency.

Parameters, and why:

- ``TIME_SCALE = 0.25`` (a job of 1 service second lasts 0.25 s): at 0.1, every job's fixed
  costs (about four journal round trips, an HTTP request each way, the scheduling of nine
  processes: the fake, PostgreSQL and the workers, on a 2-core machine) weigh 2.5 times more
  against a job's length, and the figure measured the machine, not the client: at 8 workers
  shared and per-process limits alike fell to about 0.80 of the ceiling, CPU-bound. At 0.25
  the shared limits reach 0.95 at every N (the share of the budget they spend by design),
  and independent clients up to 4 workers (at 8, their caps of ``10 // 8`` leave 2 of the
  account's 10 places unused).
- The poll policy's ``first_poll_delay`` is the job's length (1 service second) instead of
  the default 10 s: a real job lasts minutes, so the default comes before its end, but here
  it would hold the first ten places idle for ten job lengths before any duration is learnt
  (in the quick run, a tenth of the whole span).
- The example limits (10 active jobs, 600 requests per minute), the ceiling and the 2,000
  jobs of the full run are the issue's; ``--quick`` works 400.

    python -m benchmarks.bench_workers [--quick] [--shared | --per-process]

Without either flag (and in ``python -m benchmarks.run``) both modes run, one after the
other, so the 429s with shared limits stand beside those of the same processes with
independent clients.

Then two scenarios of the CLI as the docs run it (real ``hailuo`` processes, limits shared
through the journal's database, the fake enforcing the account's 10 active tasks):

- *joining*: the "N workers in three commands" recipe on 60 jobs. ``hailuo batch`` starts
  alone; once it has submitted jobs, two ``hailuo work`` join the running batch. Reported:
  each process's share of the jobs (from the journal: the folder each video was saved
  in), the smallest share (the goal: each >= 10 %), and the seconds from a joining
  worker's launch to its first submission (process start-up included).
- *replaced*: three ``hailuo work`` on a batch; once a third of it has finished, one is
  killed with SIGKILL and a new one started. Reported: jobs per service minute over the
  ceiling, beside the same three workers with none killed. Jobs of 60 service seconds
  (1.5 real seconds at ``time_scale`` 0.025), so the active-job cap binds (the ceiling is
  ``ACTIVE_CAP`` jobs per service minute): the places a dead worker holds are what counts.

    python -m benchmarks.bench_workers --sharing   # only these two
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import (
    _SPAWN,
    FakeProcess,
    ScenarioResult,
    markdown_table,
    percentile,
    timed,
)

NAME = "workers"
TITLE = "9. Workers: N processes on one batch in PostgreSQL"
ACTIVE_CAP = 10
RPM = 600
DURATION = 1.0  # service seconds per job
TIME_SCALE = 0.25
WORKERS = (1, 2, 4, 8)
DSN = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = "bench"


def _work(
    *, url: str, api_key: str, dsn: str, schema: str, workers: int, shared: bool
) -> dict[str, Any]:
    return asyncio.run(
        _work_async(
            url=url, api_key=api_key, dsn=dsn, schema=schema, workers=workers, shared=shared
        )
    )


async def _work_async(
    *, url: str, api_key: str, dsn: str, schema: str, workers: int, shared: bool
) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    from hailuo_async import Coordination, HailuoClient, Limits, PollPolicy
    from hailuo_async.journal import PostgresJobStore

    window = 60.0 * TIME_SCALE
    # The first poll comes after a job's length (the policy's default, 10 s, is shorter than
    # a real job but ten of these 1 s jobs): until durations are learnt, it sets the start.
    policy = PollPolicy(first_poll_delay=DURATION).scaled(TIME_SCALE)
    options: dict[str, Any] = {"poll_policy": policy}
    async with AsyncExitStack() as stack:
        if shared:
            # The client opens the coordination: limits shared through PostgreSQL, per the
            # fake's scaled rate window (Limits.rate_window), the account's full limits.
            options["limits"] = Limits(
                requests_per_minute=RPM, max_active_jobs=ACTIVE_CAP, rate_window=window
            )
            options["coordination"] = Coordination(dsn, schema=schema)
        else:
            options["limits"] = Limits(
                requests_per_minute=RPM / workers,
                max_active_jobs=max(1, ACTIVE_CAP // workers),
                rate_window=window,
            )
        client = await stack.enter_async_context(
            HailuoClient(api_key=api_key, base_url=url, **options)
        )
        store = await stack.enter_async_context(PostgresJobStore(dsn, batch=BATCH, schema=schema))
        stream = client.work(store, lease=10.0, idle_poll=0.2)
        done = 0
        async with stream as outcomes:
            async for outcome in outcomes:
                done += outcome.ok
        # The shared limits the client opened (None with per-process limits): their counter.
        coordinator = client._coordinator
        return {
            "done": done,
            "round_trips": store.round_trips,
            "limits_round_trips": 0 if coordinator is None else coordinator.limits.round_trips,
            "claims": stream.claim_latencies,
        }


def measure(workers: int, jobs: int, *, shared: bool) -> dict[str, Any]:
    """One batch worked by ``workers`` processes against a fresh fake and schema."""
    import psycopg

    from hailuo_async.testing import Fixed

    schema = f"bench_workers_{secrets.token_hex(4)}"
    try:
        _add_jobs(schema, jobs)
        with FakeProcess(
            time_scale=TIME_SCALE,
            seed=9,
            job_duration=Fixed(DURATION),
            max_active_tasks=ACTIVE_CAP,
            requests_per_minute=RPM,
        ) as fake:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
                futures = [
                    pool.submit(
                        _work,
                        url=fake.url,
                        api_key=fake.api_key,
                        dsn=DSN,
                        schema=schema,
                        workers=workers,
                        shared=shared,
                    )
                    for _ in range(workers)
                ]
                results = [future.result() for future in futures]
            stats = fake.stats()
        with psycopg.connect(DSN, autocommit=True) as connection:
            row = connection.execute(
                f"SELECT count(*) FILTER (WHERE state = %s),"  # noqa: S608
                " extract(epoch FROM max(finished_at) - min(submitted_at))"
                f' FROM "{schema}".hailuo_jobs WHERE batch = %s',
                ("finished", BATCH),
            ).fetchone()
    finally:
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert row is not None
    finished, span = int(row[0]), float(row[1] or 0.0)
    service_minutes = span / TIME_SCALE / 60.0
    claims = [latency for result in results for latency in result["claims"]]
    return {
        "workers": workers,
        "finished": finished,
        "lost": jobs - finished,
        "jobs_per_min": finished / service_minutes if service_minutes else float("nan"),
        "rate_limited": stats["rate_limited_total"],
        "duplicates": stats["duplicate_submissions"],
        "accepted": stats["submissions_accepted"],
        "round_trips_per_job": sum(r["round_trips"] for r in results) / jobs,
        "limits_round_trips_per_request": sum(r["limits_round_trips"] for r in results)
        / max(1, stats["submission_attempts"] + stats["polls_total"]),
        "claim_p95_ms": (percentile(claims, 0.95) or 0.0) * 1000,
        "claims": len(claims),
    }


# -- the CLI's processes sharing a batch ----------------------------------------------------

JOIN_JOBS = 60
JOIN_DURATION = 40.0  # service seconds: 2 real seconds at JOIN_SCALE, six rounds of 10 places
JOIN_SCALE = 0.05
REPLACE_DURATION = 60.0
REPLACE_SCALE = 0.025
REPLACE_RPM = 600


class _Shared:
    """A fresh schema holding one batch, a fake enforcing the account's limits, and ``hailuo``
    processes started against both (their output to files under ``folder``)."""

    def __init__(self, folder: Path, fake: FakeProcess, scale: float) -> None:
        self.schema = f"bench_workers_{secrets.token_hex(4)}"
        self.journal = f"{DSN}?schema={self.schema}"
        self.folder = folder
        self.scale = scale
        self.env = {**os.environ, "HAILUO_API_KEY": fake.api_key, "HAILUO_BASE_URL": fake.url}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.launched: dict[str, float] = {}

    def start(self, name: str, command: str, *arguments: str) -> None:
        """``hailuo COMMAND ARGUMENTS`` with the account's limits, saving into ``folder/name``."""
        argv = [sys.executable, "-m", "hailuo_async.cli", command, *arguments]
        argv += ["--journal", self.journal, "--name", BATCH, "--out", str(self.folder / name)]
        argv += ["--rpm", str(REPLACE_RPM), "--max-active", str(ACTIVE_CAP)]
        argv += ["--time-scale", str(self.scale)]
        with (self.folder / f"{name}.log").open("wb") as log:
            self.launched[name] = time.time()
            self.processes[name] = subprocess.Popen(  # noqa: S603 (our own CLI)
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def query(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of ``statement`` ({s} is the schema's jobs table) in a fresh connection."""
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as connection:
            table = f'"{self.schema}".hailuo_jobs'
            return connection.execute(statement.format(s=table), params).fetchall()

    def count(self, state: str) -> int:
        """Jobs of the batch in ``state`` now (0 before the table exists)."""
        import psycopg

        try:
            return int(self.query("SELECT count(*) FROM {s} WHERE state = %s", state)[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def wait_all(self, timeout: float = 600.0) -> dict[str, int]:
        """Every process's exit status, once all have ended."""
        deadline = time.monotonic() + timeout
        codes = {}
        for name, process in self.processes.items():
            codes[name] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        return codes

    def kill_all(self) -> None:
        """Kill whatever still runs (after a failure), and drop the schema."""
        import psycopg

        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def _add_jobs(journal_schema: str, jobs: int) -> None:
    from hailuo_async import VideoRequest
    from hailuo_async._decoding import request_to_json
    from hailuo_async.extend import JobSpec
    from hailuo_async.journal import PostgresJobStore

    async def add() -> None:
        async with PostgresJobStore(DSN, batch=BATCH, schema=journal_schema) as store:
            requests = [VideoRequest(f"benchmark job {i}") for i in range(jobs)]
            await store.record(
                [
                    JobSpec(
                        key=f"j{i}", index=i, payload=request_to_json(r), fingerprint=r.fingerprint
                    )
                    for i, r in enumerate(requests)
                ]
            )

    asyncio.run(add())


def _account(*, scale: float, duration: float, seed: int) -> FakeProcess:
    """A fake enforcing the account's limits (ACTIVE_CAP active tasks, REPLACE_RPM)."""
    from hailuo_async.testing import Fixed

    return FakeProcess(
        time_scale=scale,
        seed=seed,
        job_duration=Fixed(duration),
        max_active_tasks=ACTIVE_CAP,
        requests_per_minute=REPLACE_RPM,
    )


def measure_joining() -> dict[str, Any]:
    """`hailuo batch` alone on 60 jobs, then two `hailuo work` joining it once it runs."""
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        folder = Path(tmp)
        prompts = folder / "prompts.txt"
        prompts.write_text("".join(f"a heron, take {i}\n" for i in range(JOIN_JOBS)))
        with _account(scale=JOIN_SCALE, duration=JOIN_DURATION, seed=25) as fake:
            run = _Shared(folder, fake, JOIN_SCALE)
            try:
                run.start("batch", "batch", str(prompts))
                deadline = time.monotonic() + 120
                while run.count("submitted") + run.count("finished") == 0:
                    if time.monotonic() > deadline or run.processes["batch"].poll() is not None:
                        raise RuntimeError("hailuo batch submitted nothing")
                    time.sleep(0.05)
                for name in ("work-1", "work-2"):
                    run.start(name, "work")
                codes = run.wait_all()
                rows = run.query(
                    "SELECT path, extract(epoch FROM submitted_at) FROM {s} WHERE state = %s",
                    "finished",
                )
                stats = fake.stats()
            finally:
                run.kill_all()
    done = dict.fromkeys(run.processes, 0)
    first: dict[str, float] = {}
    for path, submitted in rows:
        name = Path(path).parent.name
        done[name] += 1
        first[name] = min(first.get(name, math.inf), float(submitted))
    joined = [first.get(name, math.inf) - run.launched[name] for name in ("work-1", "work-2")]
    return {
        "codes": codes,
        "done": done,
        "finished": len(rows),
        "smallest_share": min(done.values()) / JOIN_JOBS,
        "seconds_to_first_submission": max(joined),
        "rate_limited": stats["rate_limited_total"],
        "duplicates": stats["duplicate_submissions"],
    }


def measure_replaced(jobs: int, *, kill: bool) -> dict[str, Any]:
    """Three `hailuo work` on ``jobs``; with ``kill``, one killed a third of the way, replaced."""
    with tempfile.TemporaryDirectory(prefix="bench-replace-") as tmp:
        folder = Path(tmp)
        with _account(scale=REPLACE_SCALE, duration=REPLACE_DURATION, seed=26) as fake:
            run = _Shared(folder, fake, REPLACE_SCALE)
            try:
                _add_jobs(run.schema, jobs)
                for name in ("work-1", "work-2", "work-3"):
                    run.start(name, "work")
                if kill:
                    deadline = time.monotonic() + 600
                    while run.count("finished") < jobs // 3:
                        if time.monotonic() > deadline:
                            raise RuntimeError("the workers did not finish a third of the batch")
                        time.sleep(0.05)
                    run.processes["work-1"].send_signal(signal.SIGKILL)
                    run.processes["work-1"].wait()
                    run.start("work-4", "work")
                codes = run.wait_all()
                finished, span = run.query(
                    "SELECT count(*) FILTER (WHERE state = %s),"
                    " extract(epoch FROM max(finished_at) - min(submitted_at)) FROM {s}",
                    "finished",
                )[0]
                stats = fake.stats()
            finally:
                run.kill_all()
    ceiling = min(ACTIVE_CAP * 60.0 / REPLACE_DURATION, REPLACE_RPM / 2.0)
    service_minutes = float(span or 0.0) / REPLACE_SCALE / 60.0
    rate = int(finished) / service_minutes if service_minutes else float("nan")
    return {
        "codes": codes,
        "finished": int(finished),
        "jobs_per_min": rate,
        "ratio": rate / ceiling,
        "rate_limited": stats["rate_limited_total"],
        "duplicates": stats["duplicate_submissions"],
    }


def run_sharing(*, quick: bool = False) -> tuple[dict[str, Any], list[list[object]], list[str]]:
    """The joining and replaced scenarios: their figures, table rows and notes."""
    jobs = 180 if quick else 360
    figures: dict[str, Any] = {}
    rows: list[list[object]] = []
    join = measure_joining()
    shares = ", ".join(f"{name} {n}" for name, n in join["done"].items())
    figures["joining_jobs_per_process"] = join["done"]
    figures["joining_smallest_share"] = join["smallest_share"]
    figures["joining_seconds_to_first_submission"] = join["seconds_to_first_submission"]
    figures["joining_429"] = join["rate_limited"]
    figures["joining_duplicate_submissions"] = join["duplicates"]
    rows.append(
        [
            "joining: batch + 2 work joining it",
            f"{join['finished']} / {JOIN_JOBS}",
            f"{shares}; smallest {join['smallest_share']:.0%}",
            f"{join['seconds_to_first_submission']:.1f} s to a joiner's first submission",
            join["rate_limited"],
            join["duplicates"],
        ]
    )
    for kill in (False, True):
        result = measure_replaced(jobs, kill=kill)
        prefix = "replaced" if kill else "three_workers"
        figures[f"{prefix}_jobs_per_min"] = result["jobs_per_min"]
        figures[f"{prefix}_jobs_per_min_vs_ceiling_ratio"] = result["ratio"]
        figures[f"{prefix}_429"] = result["rate_limited"]
        figures[f"{prefix}_duplicate_submissions"] = result["duplicates"]
        rows.append(
            [
                "3 work, one SIGKILLed and replaced" if kill else "3 work, none killed",
                f"{result['finished']} / {jobs}",
                f"{result['jobs_per_min']:.2f} jobs/min",
                f"{result['ratio']:.3f} of the ceiling",
                result["rate_limited"],
                result["duplicates"],
            ]
        )
    notes = [
        f"Sharing: real `hailuo` processes, `--rpm {REPLACE_RPM} --max-active {ACTIVE_CAP}`,"
        " limits shared through the journal's database. Joining: "
        f"{JOIN_JOBS} jobs of {JOIN_DURATION:g} service s at time_scale {JOIN_SCALE:g}; the"
        " workers start once `hailuo batch` has submitted. Replaced: "
        f"{jobs} jobs of {REPLACE_DURATION:g} service s at time_scale {REPLACE_SCALE:g}, ceiling"
        f" {ACTIVE_CAP} jobs per service minute (the active-job cap binds); the kill comes"
        " once a third has finished, and the new worker starts at once. Rate from the"
        " journal's first submission to its last end.",
    ]
    return figures, rows, notes


def sharing_table(rows: list[list[object]]) -> str:
    """The sharing scenarios' rows as a markdown table."""
    return markdown_table(
        ["scenario", "finished", "jobs", "figure", "429s", "duplicate POSTs"], rows
    )


def run(*, quick: bool = False, shared: bool | None = None, sharing: bool = True) -> ScenarioResult:
    """The same batch worked by 1, 2, 4 and 8 processes; with ``shared`` None, in both modes.

    Then (``sharing``) the CLI's processes joining a running batch, and one killed and replaced.
    """
    jobs = 400 if quick else 2_000
    ceiling = min(ACTIVE_CAP * 60.0 / DURATION, RPM / 2.0)
    modes = (True, False) if shared is None else (shared,)
    figures: dict[str, Any] = {
        "jobs": jobs,
        "limits": "both" if shared is None else _mode(shared),
        "fake_max_active_tasks": ACTIVE_CAP,
        "fake_requests_per_minute": RPM,
        "job_duration_s": DURATION,
        "time_scale": TIME_SCALE,
        "ceiling_jobs_per_min": ceiling,
    }
    rows: list[list[object]] = []
    with timed() as elapsed:
        for mode_shared, workers in itertools.product(modes, WORKERS):
            mode = _mode(mode_shared)
            result = measure(workers, jobs, shared=mode_shared)
            ratio = result["jobs_per_min"] / ceiling
            prefix = f"{mode}_{workers}w"
            figures[f"{prefix}_jobs_per_min"] = result["jobs_per_min"]
            figures[f"{prefix}_jobs_per_min_vs_ceiling_ratio"] = ratio
            figures[f"{prefix}_429_per_1000_jobs"] = result["rate_limited"] * 1000 / jobs
            figures[f"{prefix}_duplicate_submissions"] = result["duplicates"]
            figures[f"{prefix}_jobs_lost"] = result["lost"]
            figures[f"{prefix}_db_round_trips_per_job"] = result["round_trips_per_job"]
            if mode_shared:
                figures[f"{prefix}_limits_round_trips_per_request"] = result[
                    "limits_round_trips_per_request"
                ]
            figures[f"{prefix}_claim_p95_ms"] = result["claim_p95_ms"]
            rows.append(
                [
                    mode,
                    workers,
                    f"{result['finished']} / {jobs}",
                    result["jobs_per_min"],
                    ratio,
                    result["rate_limited"] * 1000 / jobs,
                    result["duplicates"],
                    result["lost"],
                    result["round_trips_per_job"],
                    result["limits_round_trips_per_request"],
                    result["claim_p95_ms"],
                ]
            )
    table = markdown_table(
        [
            "limits",
            "workers",
            "finished",
            "jobs/min",
            "÷ ceiling",
            "429s / 1,000 jobs",
            "duplicate POSTs",
            "jobs lost",
            "journal round trips / job",
            "limits round trips / API request",
            "claim p95 (ms)",
        ],
        rows,
    )
    limits = "; ".join(
        "shared: the account's, through PostgreSQL (HailuoClient(coordination=...))"
        if mode_shared
        else "per_process: each process its own client limits, the account's / N"
        for mode_shared in modes
    )
    notes = [
        f"{jobs} jobs of {DURATION:g} service s; fake max_active_tasks={ACTIVE_CAP},"
        f" requests_per_minute={RPM}; time_scale {TIME_SCALE:g}; ceiling min(cap*60/duration,"
        f" RPM/2) = {ceiling:g} jobs/min. Limits: {limits}. Rate from the journal's first"
        " submission to its last end (process start-up not counted).",
    ]
    seconds = elapsed()
    if sharing:
        with timed() as sharing_elapsed:
            more, sharing_rows, sharing_notes = run_sharing(quick=quick)
        figures.update(more)
        table += "\n\n" + sharing_table(sharing_rows)
        notes += sharing_notes
        seconds += sharing_elapsed()
    return ScenarioResult(NAME, TITLE, table, figures, notes, seconds)


def run_sharing_only(*, quick: bool = False) -> ScenarioResult:
    """Only the joining and replaced scenarios."""
    with timed() as elapsed:
        figures, rows, notes = run_sharing(quick=quick)
    return ScenarioResult(NAME, TITLE, sharing_table(rows), figures, notes, elapsed())


def _mode(shared: bool) -> str:
    return "shared" if shared else "per_process"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_workers [--quick] [--shared | --per-process] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_workers")
    parser.add_argument("--quick", action="store_true", help="400 jobs instead of 2,000")
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--shared",
        dest="shared",
        action="store_const",
        const=True,
        help="only the account's limits shared through PostgreSQL (coordination=)",
    )
    only.add_argument(
        "--per-process",
        dest="shared",
        action="store_const",
        const=False,
        help="only independent clients, each with the account's limits / N",
    )
    parser.add_argument(
        "--sharing",
        action="store_true",
        help="only the CLI's processes: joining a running batch, one killed and replaced",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    # Imported by the package name, so the workers sent to child processes pickle.
    module = importlib.import_module("benchmarks.bench_workers")
    result: ScenarioResult
    if args.sharing:
        result = module.run_sharing_only(quick=args.quick)
    else:
        result = module.run(quick=args.quick, shared=args.shared)
    print(result.render())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
