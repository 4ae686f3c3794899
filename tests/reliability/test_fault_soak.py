"""Fault soak: thousands of jobs through generate_many against a fake that fails 20% of requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hailuo_async import JobOutcome, SubmissionUnknownError
from hailuo_async.testing import sample_video

from .soak import ACTIVE_PER_SHARD, SoakRun, run_soak
from .support import (
    Figures,
    attempt_histogram,
    canary,
    count_in,
    error_texts,
    scaled,
)

pytestmark = pytest.mark.anyio

JOBS = scaled(fast=200, soak=2000)


def outcome_kind(outcome: JobOutcome) -> str:
    """How a job ended, in one word."""
    if outcome.ok:
        return "succeeded"
    return type(outcome.error).__name__ if outcome.error is not None else "no result"


def created_tasks(run: SoakRun) -> dict[str, str]:
    """Every task the fakes created, with the prompt it was created for."""
    return {
        task_id: task.request.prompt
        for shard in run.shards
        for task_id, task in shard.server.tasks.items()
    }


def lost_ids(run: SoakRun) -> set[str]:
    """Tasks the fakes created whose id they know never reached the client."""
    return {task_id for shard in run.shards for task_id in shard.server.stats.lost_task_ids}


def duplicates(run: SoakRun) -> tuple[int, int]:
    """Repeated submissions: all of them, and those whose every answer reached the client.

    A repeat is expected only after a submission whose answer was lost (resent by policy);
    two tasks for one body whose ids both reached the client would be an unexpected one.
    """
    lost = lost_ids(run)
    total = unexpected = 0
    for shard in run.shards:
        for ids in shard.server.stats.task_ids_by_body.values():
            total += len(ids) - 1
            unexpected += max(0, sum(1 for i in ids if i not in lost) - 1)
    return total, unexpected


def canary_hits(run: SoakRun, key: str) -> dict[str, int]:
    """Where the canary key turned up: logs, reprs, errors, requests to the storage host."""

    def outcome_texts() -> Iterator[str]:
        for outcome in run.outcomes:
            yield repr(outcome)
            yield repr(outcome.result)
            if outcome.error is not None:
                yield from error_texts(outcome.error)

    storage_texts = [
        f"{name}: {value}"
        for shard in run.shards
        for headers in shard.storage_headers
        for name, value in headers
    ]
    return {
        "logs (hailuo_async + aiohttp, DEBUG)": count_in(key, run.logs.texts()),
        "reprs of clients": count_in(key, [r for s in run.shards for r in s.client_reprs]),
        "outcomes, results, errors and their chains": count_in(key, outcome_texts()),
        "storage requests' headers": count_in(key, storage_texts),
        "storage Authorization headers": sum(
            len(s.server.stats.storage_authorization_headers) for s in run.shards
        ),
    }


def check_downloads(run: SoakRun) -> tuple[int, int, int]:
    """Files at final names (all complete), temp files left, and ok outcomes without a file."""
    video = sample_video()
    files = temps = missing = 0
    for shard in run.shards:
        for path in shard.download_to.iterdir():
            if path.name.endswith(".part"):
                temps += 1
                continue
            files += 1
            assert path.read_bytes() == video, f"{path} is not the complete video"
        for outcome in shard.outcomes:
            if outcome.ok and (outcome.path is None or not Path(outcome.path).is_file()):
                missing += 1
    return files, temps, missing


def common_figures(run: SoakRun, key: str) -> dict[str, object]:
    """The figures both policies report, with the checks every run must pass."""
    outcomes = run.outcomes
    delivered = Counter(o.request.prompt for o in outcomes)
    assert len(outcomes) == run.jobs, "every request yields an outcome"
    assert all(count == 1 for count in delivered.values()), "each request exactly once"
    assert len(delivered) == run.jobs
    kinds = Counter(outcome_kind(o) for o in outcomes)
    files, temps, missing = check_downloads(run)
    hits = canary_hits(run, key)
    messages = run.logs.messages("hailuo_async")
    polls = [n for s in run.shards for n in s.server.stats.polls_by_task.values()]
    poll_buckets = Counter(min(n, 10) for n in polls)
    stats = [s.server.stats for s in run.shards]
    assert sum(hits.values()) == 0, f"the canary key leaked: {hits}"
    assert temps == 0, "no temporary download file is left behind"
    assert missing == 0, "every successful outcome has its file"
    assert files == kinds["succeeded"]
    assert run.leftover_tasks == 0, "no task is left on the loop after the batches"
    assert all(s.sockets_after_close == 0 for s in run.shards), "every socket is closed"
    assert run.peak_sockets <= 2 * 64, "at most max_in_flight sockets per client"
    allowed = {"succeeded", "TaskFailedError", "SubmissionUnknownError"}
    assert set(kinds) <= allowed, f"unexpected outcomes: {kinds}"
    return {
        "jobs requested": run.jobs,
        "outcomes delivered (each request exactly once)": len(outcomes),
        "outcomes by kind": dict(kinds.most_common()),
        "API requests (POST / GET)": (
            f"{sum(s.submission_attempts for s in stats)} / {sum(s.polls_total for s in stats)}"
        ),
        "faults injected by method and kind": {
            f"{method} {kind}": n for (method, kind), n in sorted(run.faults.items())
        },
        "429 served (Retry-After shard / without)": (
            f"{stats[0].rate_limited_total} / {stats[1].rate_limited_total}"
        ),
        "storage faults injected": dict(
            sum((Counter(s.storage_faults_injected) for s in stats), Counter())
        ),
        "submit attempts per request (attempts: requests)": attempt_histogram(messages, "POST"),
        "attempts per poll call (attempts: calls)": attempt_histogram(messages, "GET"),
        "polls per task incl. retries (10 = 10+)": dict(sorted(poll_buckets.items())),
        "files downloaded, all complete / temp files left": f"{files} / {temps}",
        "peak client sockets to the fakes": run.peak_sockets,
        "sockets open after close / tasks left": (
            f"{sum(s.sockets_after_close for s in run.shards)} / {run.leftover_tasks}"
        ),
        "canary key appearances": hits,
        "wall time (s)": round(run.seconds, 1),
        "jobs per second": round(run.jobs / run.seconds, 1),
    }


async def test_fault_soak_default_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    """Under 20% faults every job is delivered once, none paid twice, no lost id hidden."""
    key = canary()
    run = await run_soak(
        jobs=JOBS, policy="raise", key=key, tmp=tmp_path, monkeypatch=monkeypatch, seed=11
    )
    report = common_figures(run, key)
    created = created_tasks(run)
    known = {o.task_id for o in run.outcomes if o.task_id is not None}
    by_prompt = {o.request.prompt: o for o in run.outcomes}
    unknown = [o for o in run.outcomes if isinstance(o.error, SubmissionUnknownError)]
    prompts_with_task = set(created.values())
    unknown_with_task = [o for o in unknown if o.request.prompt in prompts_with_task]
    never_known = {tid for tid in created if tid not in known}
    hidden = [
        tid
        for tid in never_known
        if not isinstance(by_prompt[created[tid]].error, SubmissionUnknownError)
    ]
    total_dups, unexpected_dups = duplicates(run)
    faults = run.faults
    task_making_post_faults = (
        faults["POST", "accepted_but_lost"]
        + faults["POST", "malformed_json"]
        + faults["POST", "slow"]
    )

    assert total_dups == 0, "the default policy never sends a submission twice"
    assert hidden == [], "every task id the client never learnt is surfaced as unknown"
    assert never_known == lost_ids(run), "the fake's lost ids are exactly those never known"
    assert len(never_known) == len(unknown_with_task)
    assert len(unknown_with_task) == task_making_post_faults
    assert len(unknown) - len(unknown_with_task) == faults["POST", "reset"]
    assert all(not o.error.resent for o in unknown if isinstance(o.error, SubmissionUnknownError))
    report.update(
        {
            "duplicate submissions (identical bodies): chosen by policy": 0,
            "duplicate submissions: unexpected": unexpected_dups,
            "tasks created on the fakes": len(created),
            "task ids created but never known to the client": len(never_known),
            "...of which hidden (not surfaced as SubmissionUnknownError)": len(hidden),
            "SubmissionUnknownError surfaced": len(unknown),
            "...with a task created (= accepted_but_lost + malformed + slow POSTs)": (
                f"{len(unknown_with_task)} (= {task_making_post_faults})"
            ),
            "...without a task (= resets on POST, nothing created)": (
                f"{len(unknown) - len(unknown_with_task)} (= {faults['POST', 'reset']})"
            ),
            "active jobs per shard / shards": f"{ACTIVE_PER_SHARD} / 2",
        }
    )
    figures.record(f"1. fault soak, on_unknown_submission='raise' ({JOBS} jobs)", report)
    figures.record(
        "4. secrets: canary key appearances",
        {"fault soak, raise (logs, reprs, errors, storage)": sum(canary_hits(run, key).values())},
    )


async def test_fault_soak_resubmit_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    """With "resubmit" chosen, repeats happen only after a lost answer, and are counted."""
    key = canary()
    run = await run_soak(
        jobs=JOBS, policy="resubmit", key=key, tmp=tmp_path, monkeypatch=monkeypatch, seed=23
    )
    report = common_figures(run, key)
    created = created_tasks(run)
    known = {o.task_id for o in run.outcomes if o.task_id is not None}
    lost = lost_ids(run)
    by_prompt = {o.request.prompt: o for o in run.outcomes}
    unknown = [o for o in run.outcomes if isinstance(o.error, SubmissionUnknownError)]
    never_known = {tid for tid in created if tid not in known}
    total_dups, unexpected_dups = duplicates(run)
    lost_then_resent = [tid for tid in never_known if by_prompt[created[tid]].task_id is not None]

    assert unexpected_dups == 0, "a repeat only ever follows a lost answer"
    assert never_known == lost
    assert all(o.error.resent for o in unknown if isinstance(o.error, SubmissionUnknownError))
    report.update(
        {
            "duplicate submissions (identical bodies): chosen by policy": total_dups,
            "duplicate submissions: unexpected": unexpected_dups,
            "tasks created on the fakes": len(created),
            "task ids never known to the client (all resent by policy or unknown)": len(lost),
            "...of which resent and then answered (paid twice by choice)": len(lost_then_resent),
            "SubmissionUnknownError surfaced (retries ran out, resent=True)": len(unknown),
        }
    )
    figures.record(f"1. fault soak, on_unknown_submission='resubmit' ({JOBS} jobs)", report)
    figures.record(
        "4. secrets: canary key appearances",
        {
            "fault soak, resubmit (logs, reprs, errors, storage)": sum(
                canary_hits(run, key).values()
            )
        },
    )
