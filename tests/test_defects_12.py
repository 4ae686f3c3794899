"""Regression tests for the defects of issue 12 (each failed before its fix)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from clientutil import client_for, make_client, serve

from hailuo_async import (
    HailuoError,
    InvalidRequestError,
    TaskEvent,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from hailuo_async._limits import AdaptiveRate, RequestLimiter
from hailuo_async.journal import JobKeyer, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed, Uniform

pytestmark = pytest.mark.anyio

SCALE = 0.01
KEY = "test-key"


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests."""
    return (VideoRequest(prompt=f"defect {i}") for i in range(count))


def done(task_id: str) -> TaskResult:
    """A successful result for ``task_id``."""
    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="TASK_STATUS_SUCCEED")


@pytest.mark.parametrize("status", [404, 500])
async def test_a_poll_failing_after_a_push_ended_the_task_is_harmless(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1: a push ends a task while its poll is in flight; the poll's failure is ignored."""
    # One transient failure ends a watch, so the 500 takes the "too many failures" branch.
    monkeypatch.setattr("hailuo_async._watcher.MAX_POLL_FAILURES", 1)
    poll_started, release = anyio.Event(), anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        poll_started.set()
        await release.wait()
        return web.json_response({"message": "no"}, status=status)

    async with serve(handler) as url, client_for(url, api_key=KEY, max_retries=0) as client:
        async with client.watch(["t-1"]) as watcher:
            await poll_started.wait()
            assert watcher.deliver(done("t-1"))
            release.set()
            results = [result async for result in watcher]
            # Let the failed poll finish inside the watcher.
            await anyio.sleep(0.05)
    assert [r.task_id for r in results] == ["t-1"]
    assert "t-1" not in watcher.errors


async def test_a_batch_under_its_own_limit_does_not_teach_the_client() -> None:
    """Defect 2: submit 429s in a batch with max_active_jobs leave the client's limit alone."""
    async with FakeHailuoServer(
        time_scale=SCALE, seed=3, job_duration=Uniform(20, 40), max_active_tasks=2
    ) as server:
        async with make_client(server) as client:
            before = client._state.active_jobs.value
            async with client.generate_many(prompts(8), max_active_jobs=8) as outcomes:
                results = [o async for o in outcomes]
            after = client._state.active_jobs.value
    assert all(o.ok for o in results)
    assert server.stats.rate_limited.get("active_cap", 0) > 0
    assert after == before


async def test_a_failing_event_callback_loses_no_job(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 3: an on_event callback that raises is logged with the task id; the batch goes on."""

    def explode(event: TaskEvent) -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR, logger="hailuo_async")
    async with FakeHailuoServer(time_scale=SCALE, seed=3, job_duration=Fixed(20)) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(5), on_event=explode) as outcomes:
                results = [o async for o in outcomes]
    assert sorted(o.index for o in results) == list(range(5))
    assert all(o.ok for o in results)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert all(o.task_id in logged for o in results if o.task_id)


async def test_a_job_leased_by_another_worker_is_not_a_failure(tmp_path: Path) -> None:
    """Defect 4: a job another worker holds is skipped, not reported as failed."""
    journal = tmp_path / "leased.sqlite"
    store = SQLiteJobStore(journal)
    await store.open()
    requests = list(prompts(3))
    await store.record([JobKeyer().spec(requests[0], None)])
    assert len(await store.claim("other-worker", 1, lease_seconds=3600)) == 1
    async with FakeHailuoServer(time_scale=SCALE, seed=3, job_duration=Fixed(20)) as server:
        async with make_client(server) as client:
            async with client.generate_many(requests, journal=store) as outcomes:
                results = [o async for o in outcomes]
                counts = outcomes.counts
    await store.aclose()
    assert sorted(o.index for o in results) == [1, 2]
    assert all(o.ok for o in results)
    assert counts.skipped == 1
    assert server.stats.submissions_accepted == 2


async def test_a_batch_exposes_events_and_poll_counts_not_its_watcher() -> None:
    """Defect 5: callers read a batch's events and counts; its watcher is not public."""
    async with FakeHailuoServer(time_scale=SCALE, seed=3, job_duration=Fixed(20)) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(4)) as outcomes:
                with outcomes.events() as events:
                    results = [o async for o in outcomes]
                    seen = []
                    while True:
                        try:
                            seen.append(events.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                counts = outcomes.counts
    assert not hasattr(outcomes, "watcher")
    assert len(results) == 4
    assert {e.task_id for e in seen if e.kind == "done"} == {o.task_id for o in results}
    assert counts.polls >= 4


async def test_wait_returns_a_result_that_ended_before_the_deadline() -> None:
    """Defect 6: a deadline that falls during on_progress does not hide a finished task."""

    async def handler(request: web.Request) -> web.Response:
        body = {"task": {"task_id": "t-1", "status": "TASK_STATUS_FAILED", "reason": "nsfw"}}
        return web.json_response(body)

    async def slow_progress(result: TaskResult) -> None:
        await anyio.sleep(1.0)

    async with serve(handler) as url, client_for(url, api_key=KEY) as client:
        with pytest.raises(TaskFailedError) as info:
            await client.wait("t-1", timeout=0.1, on_progress=slow_progress)
    assert info.value.result.is_done


def test_a_rate_429_pauses_every_kind_that_spends_the_budget() -> None:
    """Defect 7: a rate 429 on a submit pauses polls too; an active-cap 429 pauses submits only."""
    limiter = RequestLimiter(max_in_flight=4)
    limiter.on_rate_limited("submit", 30.0, rate_exceeded=True)
    assert limiter.paused_for("poll") > 0
    assert limiter.paused_for("download") == 0
    capped = RequestLimiter(max_in_flight=4)
    capped.on_rate_limited("submit", 30.0, rate_exceeded=False)
    assert capped.paused_for("submit") > 0
    assert capped.paused_for("poll") == 0


async def test_watcher_add_checks_ids_like_the_client() -> None:
    """Defect 8: a watcher refuses the ids the client refuses (blank, unprintable, too long)."""
    async with client_for("http://127.0.0.1:9", api_key=KEY) as client:
        watcher = client.watch()
        for bad in ("   ", "a\nb", "x" * 300):
            with pytest.raises(InvalidRequestError):
                watcher.add(bad)


async def test_download_refuses_bad_options_with_a_typed_error() -> None:
    """Defect 8: a bad download option raises the library's typed error, not a bare ValueError."""
    async with client_for("http://127.0.0.1:9", api_key=KEY) as client:
        with pytest.raises(HailuoError):
            await client.download(done("t-1"), "out.mp4", max_bytes=0)


def test_the_first_rate_429_sets_the_rate_from_the_admitted_requests() -> None:
    """Defect 7: a first 429 early in the run paces from what was admitted, not sent."""
    rate = AdaptiveRate(window=60.0, known=None)
    rate.record_sent(0.0)
    for i in range(12):
        rate.on_success(0.1 * i)
    rate.on_rate_limited(2.0)
    assert rate.value == pytest.approx(12 * 0.75)
    few = AdaptiveRate(window=60.0, known=None)
    few.record_sent(0.0)
    for i in range(3):
        few.on_success(0.1 * i)
    few.on_rate_limited(2.0)
    assert few.value is None  # three answers say too little: the pause alone acts


async def test_a_request_waiting_its_turn_respects_a_pause_set_meanwhile() -> None:
    """Defect 7: a request queued at the pacer when a 429 comes waits for that pause too."""
    limiter = RequestLimiter(max_in_flight=4, requests_per_minute=600, rate_window=60.0)
    async with limiter.slot("poll"):
        pass  # the pacer's next turn is now 0.1 s away
    left_at: list[float] = []

    async def request() -> None:
        async with limiter.slot("poll"):
            left_at.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        group.start_soon(request)
        await anyio.sleep(0.01)  # it waits at the pacer
        limiter.on_rate_limited("submit", 0.3)
        paused_at = anyio.current_time()
    assert left_at
    assert left_at[0] >= paused_at + 0.3 - 0.01
