"""Resources: a batch left mid-way (cancel, break, error) leaves no task, socket or temp file."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from pathlib import Path
from typing import NoReturn

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web

from hailuo_async import HailuoClient, Limits, PollPolicy, RetryPolicy, Timeouts, VideoRequest
from hailuo_async._submitter import SUBMISSION_GRACE
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, StorageFaults, Uniform

from .support import (
    Figures,
    canary,
    client_tasks,
    count_in,
    scaled,
    serve,
    sockets_to,
    wait_for_no_sockets,
)

pytestmark = pytest.mark.anyio

ROUNDS = scaled(fast=6, soak=40)
JOBS = 40
SCALE = 0.002
FAULTS = Faults(server_error=0.03, rate_limit=0.03, reset=0.03, slow=0.03, accepted_but_lost=0.02,
                malformed_json=0.02, slow_seconds=0.5)  # fmt: skip
MAX_CONCURRENCY = 16


class Stop(Exception):
    """The caller's own error, raised inside the batch."""


def stop() -> NoReturn:
    """Raise the caller's own error."""
    raise Stop


def make_client(server: FakeHailuoServer, key: str) -> HailuoClient:
    """A client tuned to the fake's time scale."""
    return HailuoClient(
        key,
        base_url=server.url,
        timeout=Timeouts(total=0.3),
        max_retries=6,
        retry_policy=RetryPolicy(initial_delay=0.005, max_delay=0.05, max_retry_after=0.05),
        poll_policy=PollPolicy().scaled(SCALE),
        limits=Limits(max_in_flight=MAX_CONCURRENCY, rate_window=60 * SCALE),
    )


def requests() -> list[tuple[str, VideoRequest]]:
    """The batch: keyed, so a rerun finds each job in the journal."""
    return [(f"job-{i}", VideoRequest(prompt=f"resources job {i}")) for i in range(JOBS)]


async def test_leaving_a_batch_mid_way_leaves_nothing_behind(
    tmp_path: Path, figures: Figures
) -> None:
    """Cancel, break or raise mid-batch: no task, socket or temp file left; a rerun completes."""
    rng = random.Random(5)
    key = canary()
    tally: Counter[str] = Counter()
    # Each pool is capped by max_in_flight: the API's connections and the storage hosts'.
    # Not their sum: the API keeps idle connections open while downloads hold the places.
    peak_api = peak_storage = 0
    for number in range(ROUNDS):
        how = ("cancel", "break", "raise")[number % 3]
        folder = tmp_path / f"round-{number}"
        journal, videos = folder / "journal.sqlite", folder / "videos"
        async with FakeHailuoServer(
            api_key=key,
            time_scale=SCALE,
            seed=number,
            job_duration=Uniform(30, 120),
            faults=FAULTS,
            storage_faults=StorageFaults(truncate=0.05),
        ) as server:
            urls = (server.url, server.storage_url)
            before = client_tasks()
            client = make_client(server, key)
            async with client:
                seen = 0
                stop_at = rng.randrange(1, JOBS // 2)
                with anyio.move_on_after(rng.uniform(0.05, 0.6) if how == "cancel" else None):
                    try:
                        async with client.generate_many(
                            requests(), max_active_jobs=12, journal=journal, download_to=videos
                        ) as outcomes:
                            async for _ in outcomes:
                                seen += 1
                                peak_api = max(peak_api, sockets_to(server.url))
                                peak_storage = max(peak_storage, sockets_to(server.storage_url))
                                if how != "cancel" and seen >= stop_at:
                                    if how == "raise":
                                        stop()
                                    break
                    except Stop:
                        tally["caller's error came out as itself (no ExceptionGroup)"] += 1
                await anyio.lowlevel.checkpoint()
                left = client_tasks() - before
                tally["tasks left after leaving the batch"] += len(left)
                tally["temp files left after leaving the batch"] += len(list(videos.glob("*.part")))
                tally[f"outcomes seen before leaving ({how})"] += seen
            tally["sockets open after close"] += await wait_for_no_sockets(*urls)
            # The journal was closed cleanly: a rerun finishes the batch without paying twice.
            client = make_client(server, key)
            async with (
                client,
                client.generate_many(
                    requests(), max_active_jobs=12, journal=journal, download_to=videos
                ) as outcomes,
            ):
                rerun = [outcome async for outcome in outcomes]
            tally["sockets open after the rerun's close"] += await wait_for_no_sockets(*urls)
            tally["rerun outcomes (each job once)"] += len({o.index for o in rerun})
            tally["duplicate submissions"] += server.stats.duplicate_submissions
            task_prompts = {task.request.prompt for task in server.tasks.values()}
            async with SQLiteJobStore(journal) as store:
                records = await store.get_many()
            for record in records.values():
                tally[f"journal: {record.state.value}"] += 1
                if (
                    record.state is JobState.UNKNOWN
                    and record.payload["prompt"] not in task_prompts
                ):
                    tally["journal: unknown, but no task was made (left before the POST)"] += 1
            tally["canary key appearances in outcomes"] += count_in(key, map(repr, rerun))
        tally["tasks left after the fake closed"] += len(client_tasks() - before)
    figures.record(
        "4. secrets: canary key appearances",
        {"batches left mid-way (rerun outcomes)": tally["canary key appearances in outcomes"]},
    )
    gc.collect()  # an unclosed session or transport would warn now, and warnings are errors
    figures.record(
        f"5. resources: {ROUNDS} batches of {JOBS} left mid-way (cancel / break / raise)",
        {
            "peak client sockets to the API (max_in_flight 16)": peak_api,
            "peak client sockets to storage (max_in_flight 16)": peak_storage,
            **dict(sorted(tally.items())),
        },
    )
    assert tally["tasks left after leaving the batch"] == 0
    assert tally["tasks left after the fake closed"] == 0
    assert tally["temp files left after leaving the batch"] == 0
    assert tally["sockets open after close"] == 0
    assert tally["sockets open after the rerun's close"] == 0
    assert tally["rerun outcomes (each job once)"] == ROUNDS * JOBS
    assert tally["duplicate submissions"] == 0
    assert tally["canary key appearances in outcomes"] == 0
    assert peak_api <= MAX_CONCURRENCY
    assert peak_storage <= MAX_CONCURRENCY
    assert tally["caller's error came out as itself (no ExceptionGroup)"] == ROUNDS // 3


async def test_a_cancelled_batch_lets_posts_on_the_wire_land(tmp_path: Path) -> None:
    """Cancelled with submissions on the wire, a batch waits for their answers and keeps the ids."""
    answered = 0

    async def slow_answer(request: web.Request) -> web.StreamResponse:
        nonlocal answered
        await asyncio.sleep(0.5)
        answered += 1
        return web.json_response({"task_id": f"t-{answered}"})

    journal = tmp_path / "journal.sqlite"
    async with serve(slow_answer) as url:
        async with HailuoClient(canary(), base_url=url, max_retries=0) as client:
            before = client_tasks()
            with anyio.move_on_after(0.2) as scope:
                async with client.generate_many(
                    requests()[:4], max_active_jobs=4, journal=journal
                ) as outcomes:
                    cancelled_at = time.monotonic()
                    async for _ in outcomes:
                        raise AssertionError("no outcome can come")
            exit_seconds = time.monotonic() - cancelled_at - 0.2
            assert scope.cancelled_caught
            assert client_tasks() - before == set()
    async with SQLiteJobStore(journal) as store:
        states = await store.counts()
    assert states == {JobState.SUBMITTED: 4}, states
    assert exit_seconds < 1.5, f"leaving the cancelled batch took {exit_seconds:.1f} s"


async def test_a_cancelled_batch_waits_no_longer_than_the_grace(tmp_path: Path) -> None:
    """A POST that never answers holds a cancelled batch only for SUBMISSION_GRACE."""

    async def never_answers(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    async with serve(never_answers) as url:
        async with HailuoClient(canary(), base_url=url, max_retries=0) as client:
            before = client_tasks()
            with anyio.move_on_after(0.3) as scope:
                async with client.generate_many(
                    requests()[:4], max_active_jobs=4, journal=tmp_path / "journal.sqlite"
                ) as outcomes:
                    cancelled_at = time.monotonic()
                    async for _ in outcomes:
                        raise AssertionError("no outcome can come")
            exit_seconds = time.monotonic() - cancelled_at - 0.3
            assert scope.cancelled_caught
            assert client_tasks() - before == set()
    assert exit_seconds < SUBMISSION_GRACE + 1.0, f"leaving took {exit_seconds:.1f} s"
