"""Crash and resume: a journaled batch in a child process, killed with SIGKILL and run again."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from hailuo_async.journal import JobRecord, JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, StorageFaults, Uniform, sample_video

from .crash_child import job_key, job_prompt
from .support import Figures, canary, count_in, scaled

pytestmark = pytest.mark.anyio

TRIALS = scaled(fast=20, soak=100)
CONCURRENT_TRIALS = 6
JOBS = 12
MAX_KILLS = 3
KILL_WINDOW = (0.3, 1.8)
"""Seconds after a start at which the child is killed: from mid-import to past its end."""
SCALE = 0.01
FAULTS = Faults(server_error=0.03, accepted_but_lost=0.03, reset=0.02, slow=0.04, slow_seconds=0.3)
STORAGE_FAULTS = StorageFaults(truncate=0.05)
INTERRUPTED = "the process stopped after the submission was journaled"
TESTS_DIR = Path(__file__).resolve().parent.parent


@attrs.define
class Trial:
    """One batch, killed and restarted until it completes, and what it left behind."""

    number: int
    folder: Path
    runs: int = 0
    kills: int = 0
    records: dict[str, JobRecord] = attrs.Factory(dict)
    final_outcomes: list[dict[str, Any]] = attrs.Factory(list)
    tasks: dict[str, str] = attrs.Factory(dict)
    duplicates: int = 0
    storage_authorizations: int = 0

    @property
    def journal(self) -> Path:
        return self.folder / "journal.sqlite"

    @property
    def videos(self) -> Path:
        return self.folder / "videos"

    @property
    def done(self) -> Path:
        return self.folder / "done"


async def run_child(
    trial: Trial, server: FakeHailuoServer, key: str, kill_at: float | None
) -> bool:
    """Start the batch once; kill it after ``kill_at`` seconds. True if it was killed."""
    trial.runs += 1
    run = trial.runs
    folder = trial.folder
    command = [
        sys.executable, "-m", "reliability.crash_child",
        "--base-url", server.url,
        "--jobs", str(JOBS),
        "--journal", str(trial.journal),
        "--download-to", str(trial.videos),
        "--outcomes", str(folder / f"outcomes-{run}.jsonl"),
        "--done", str(trial.done),
        "--log", str(folder / f"log-{run}.txt"),
        "--scale", str(SCALE),
        "--trial", str(trial.number),
    ]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HAILUO_API_KEY": key, "PYTHONPATH": pythonpath}
    with (folder / f"stderr-{run}.txt").open("wb") as stderr:
        async with await anyio.open_process(
            command, env=env, stdin=None, stdout=stderr, stderr=stderr
        ) as process:
            if kill_at is None:
                with anyio.fail_after(60):
                    await process.wait()
            else:
                with anyio.move_on_after(kill_at):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                    return True
    if process.returncode != 0:
        message = (folder / f"stderr-{run}.txt").read_text(errors="replace")
        raise AssertionError(f"run {run} of trial {trial.number} failed:\n{message}")
    return False


async def run_trial(trial: Trial, key: str, rng: random.Random) -> None:
    """Kill the batch at random moments until it completes, then read what it left."""
    trial.folder.mkdir(parents=True)
    async with FakeHailuoServer(
        api_key=key,
        time_scale=SCALE,
        seed=trial.number,
        job_duration=Uniform(15, 45),
        failure_rate=0.1,
        faults=FAULTS,
        storage_faults=STORAGE_FAULTS,
    ) as server:
        while not trial.done.exists():
            assert trial.runs < MAX_KILLS + 2, "the batch completes once left alone"
            kill_at = rng.uniform(*KILL_WINDOW) if trial.kills < MAX_KILLS else None
            if await run_child(trial, server, key, kill_at):
                trial.kills += 1
        trial.tasks = {tid: task.request.prompt for tid, task in server.tasks.items()}
        trial.duplicates = server.stats.duplicate_submissions
        trial.storage_authorizations = len(server.stats.storage_authorization_headers)
    async with SQLiteJobStore(trial.journal) as store:
        trial.records = await store.get_many()
    lines = (trial.folder / f"outcomes-{trial.runs}.jsonl").read_text().splitlines()
    trial.final_outcomes = [json.loads(line) for line in lines if '"index"' in line]


@attrs.define
class Tally:
    """The figures over all trials."""

    counts: Counter[str] = attrs.Factory(Counter)
    kills_per_trial: Counter[int] = attrs.Factory(Counter)
    states: Counter[str] = attrs.Factory(Counter)


def check_trial(trial: Trial, key: str, tally: Tally) -> None:
    """Every job ended, no task id hidden, nothing paid twice, every file whole, no key leaked."""
    tally.counts["kills"] += trial.kills
    tally.counts["runs"] += trial.runs
    tally.kills_per_trial[trial.kills] += 1
    assert sorted(trial.records) == [job_key(i) for i in range(JOBS)]
    for record in trial.records.values():
        tally.states[record.state.value] += 1
    final = {JobState.FINISHED, JobState.FAILED, JobState.UNKNOWN}
    assert {r.state for r in trial.records.values()} <= final, "every job ends"
    check_final_outcomes(trial)
    check_tasks(trial, tally.counts)
    check_files(trial, tally.counts)
    texts = [p.read_text(errors="replace") for p in trial.folder.glob("*.txt")]
    texts += [p.read_text(errors="replace") for p in trial.folder.glob("*.jsonl")]
    tally.counts["canary key appearances"] += count_in(key, texts) + trial.storage_authorizations
    tally.counts["log and outcome lines scanned for the key"] += sum(t.count("\n") for t in texts)


def check_final_outcomes(trial: Trial) -> None:
    """The last run yields every job exactly once, as the journal has it."""
    outcomes = trial.final_outcomes
    assert sorted(o["index"] for o in outcomes) == list(range(JOBS))
    for outcome in outcomes:
        record = trial.records[outcome["key"]]
        if record.state is JobState.FINISHED:
            assert outcome["ok"], outcome
            assert outcome["task_id"] == record.task_id
        elif record.state is JobState.UNKNOWN:
            assert outcome["error_type"] == "SubmissionUnknownError", outcome
        else:
            assert not outcome["ok"], outcome


def check_tasks(trial: Trial, count: Counter[str]) -> None:
    """Every task the fake made is journaled with its id, or its job is surfaced as unknown."""
    records = trial.records
    key_of = {job_prompt(trial.number, i): job_key(i) for i in range(JOBS)}
    for task_id, prompt in trial.tasks.items():
        record = records[key_of[prompt]]
        if record.task_id == task_id:
            count["tasks journaled with their id"] += 1
        elif record.state is JobState.UNKNOWN:
            count["tasks whose job is surfaced as unknown"] += 1
        else:
            count["tasks lost (neither journaled nor surfaced)"] += 1
    journaled_ids = {r.task_id for r in records.values() if r.task_id}
    assert journaled_ids <= set(trial.tasks), "every journaled id is a real task"
    prompts_with_task = set(trial.tasks.values())
    for record in records.values():
        if record.state is JobState.UNKNOWN:
            killed = (record.error or "").startswith(INTERRUPTED)
            made = record.payload["prompt"] in prompts_with_task
            where = "kill in the POST window" if killed else "lost answer (fault)"
            count[f"unknown jobs: {where}, task made"] += made
            count[f"unknown jobs: {where}, no task made"] += not made
    count["duplicate submissions"] += trial.duplicates


def check_files(trial: Trial, count: Counter[str]) -> None:
    """Complete videos at every final name, one per finished job."""
    video = sample_video()
    finished = {r.path for r in trial.records.values() if r.state is JobState.FINISHED}
    assert None not in finished, "every finished job's video is downloaded"
    for path in trial.videos.iterdir():
        if path.name.endswith(".part"):
            count["temp files left by kills (hidden .part, never at a final name)"] += 1
            continue
        count["files at final names"] += 1
        if path.read_bytes() != video:
            count["partial files at final names"] += 1
        assert str(path) in finished, f"{path} belongs to no finished job"
    assert all(Path(p).read_bytes() == video for p in finished if p)


async def test_kill_and_resume(tmp_path: Path, figures: Figures) -> None:
    """A batch killed with SIGKILL at random moments completes without loss or double pay."""
    key = canary()
    seed = random.randrange(2**32)
    trials = [Trial(n, tmp_path / f"trial-{n}") for n in range(TRIALS)]
    limit = anyio.CapacityLimiter(CONCURRENT_TRIALS)
    started = time.monotonic()

    async def limited(trial: Trial) -> None:
        async with limit:
            await run_trial(trial, key, random.Random(seed + trial.number))

    async with anyio.create_task_group() as group:
        for trial in trials:
            group.start_soon(limited, trial)
    seconds = time.monotonic() - started
    tally = Tally()
    for name in (
        "tasks lost (neither journaled nor surfaced)",
        "duplicate submissions",
        "partial files at final names",
        "canary key appearances",
        "temp files left by kills (hidden .part, never at a final name)",
    ):
        tally.counts[name] = 0
    for trial in trials:
        check_trial(trial, key, tally)
    count = tally.counts
    figures.record(
        f"2. crash and resume ({TRIALS} trials of {JOBS} jobs, SIGKILL at random moments)",
        {
            "seed of the kill times": seed,
            "kills / runs": f"{count['kills']} / {count['runs']}",
            "trials by number of kills": dict(sorted(tally.kills_per_trial.items())),
            "journal states at the end": dict(tally.states.most_common()),
            "jobs not ended (recorded / submitting / submitted)": sum(
                tally.states[s] for s in ("recorded", "submitting", "submitted")
            ),
            **{
                name: value
                for name, value in sorted(count.items())
                if name not in ("kills", "runs")
            },
            "wall time (s)": round(seconds, 1),
        },
    )
    figures.record(
        "4. secrets: canary key appearances",
        {"crash trials (child logs, outcomes, stderr, storage)": count["canary key appearances"]},
    )
    assert count["tasks lost (neither journaled nor surfaced)"] == 0
    assert count["duplicate submissions"] == 0
    assert count["partial files at final names"] == 0
    assert count["canary key appearances"] == 0
