"""Injected faults: each kind, what it does to tasks, and what a client sees."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import aiohttp
import anyio
import pytest
from fakeutil import Api, running

from hailuo_async.testing import Faults

pytestmark = pytest.mark.anyio

CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def test_server_errors_are_5xx_in_json_and_html_and_create_nothing() -> None:
    """server_error answers 500/502/503/504, some as proxy HTML, and starts no task."""
    async with running(faults=Faults(server_error=1.0)) as api:
        replies = [await api.submit() for _ in range(30)]
        assert api.server.task_ids == []
        assert api.server.stats.faults_injected == {"server_error": 30}
    assert {r.status for r in replies} <= {500, 502, 503, 504}
    assert len({r.status for r in replies}) > 1
    kinds = {r.headers["Content-Type"].split(";")[0] for r in replies}
    assert kinds == {"text/html", "application/json"}
    for reply in replies:
        if reply.headers["Content-Type"].startswith("application/json"):
            assert reply.json()["code"] == reply.status
        else:
            assert str(reply.status).encode() in reply.body


async def test_server_errors_hit_polls_too() -> None:
    """A poll can get a 5xx like a submit can."""
    async with running(faults=Faults(server_error=0.5), seed=4) as api:
        replies = [await api.submit() for _ in range(10)]
        task_id = next(r.json()["task_id"] for r in replies if r.status == 200)
        polls = [await api.result(task_id) for _ in range(20)]
    assert {p.status for p in polls} & {500, 502, 503, 504}
    assert 200 in {p.status for p in polls}


async def test_injected_rate_limit_with_retry_after() -> None:
    """rate_limit answers 429, with Retry-After when the knob asks for it."""
    async with running(faults=Faults(rate_limit=1.0), retry_after=True, time_scale=0.01) as api:
        reply = await api.submit()
        assert reply.status == 429
        assert reply.json()["code"] == 429
        # 1 to 5 service seconds, scaled.
        assert 0.01 <= float(reply.headers["Retry-After"]) <= 0.05
        assert api.server.stats.rate_limited == {"injected": 1}
        assert api.server.task_ids == []


async def test_injected_rate_limit_without_retry_after() -> None:
    """With retry_after off a 429 carries no Retry-After."""
    async with running(faults=Faults(rate_limit=1.0)) as api:
        reply = await api.submit()
    assert reply.status == 429
    assert "Retry-After" not in reply.headers


async def test_reset_on_submit_fails_fast_and_creates_no_task() -> None:
    """reset drops a POST's connection before any response; no task exists."""
    async with running(faults=Faults(reset=1.0)) as api:
        started = time.monotonic()
        with pytest.raises(CONNECTION_ERRORS):
            await api.submit()
        assert time.monotonic() - started < 5  # well under the request's 10 s timeout
        assert api.server.task_ids == []
        assert api.server.stats.faults_injected == {"reset": 1}
        assert api.server.stats.submission_attempts == 1


async def _create_despite_faults(api: Api) -> str:
    """Submit until a submission gets through; count the dropped ones."""
    for _ in range(50):
        with contextlib.suppress(*CONNECTION_ERRORS):
            return await api.create()
    raise AssertionError("no submission got through")


async def _poll_ok(api: Api, task_id: str) -> bool:
    """Poll once; False when the connection was dropped."""
    try:
        await api.poll(task_id)
    except CONNECTION_ERRORS:
        return False
    return True


async def test_reset_on_poll_fails_the_request() -> None:
    """reset drops a task-result GET's connection too."""
    async with running(faults=Faults(reset=0.5), seed=3) as api:
        task_id = await _create_despite_faults(api)
        outcomes = [await _poll_ok(api, task_id) for _ in range(20)]
        assert not all(outcomes)
        assert any(outcomes)
        # aiohttp may resend an idempotent GET once on a reset, so the fake can see more.
        assert api.server.stats.faults_injected["reset"] >= outcomes.count(False)


async def test_accepted_but_lost_creates_a_task_the_client_never_heard_of() -> None:
    """accepted_but_lost starts the job, then drops the connection: the id is lost."""
    async with running(faults=Faults(accepted_but_lost=1.0)) as api:
        with pytest.raises(CONNECTION_ERRORS):
            await api.submit()
        server = api.server
        assert len(server.task_ids) == 1
        assert server.lost_task_ids == server.task_ids
        assert server.stats.submissions_accepted == 1
        assert server.stats.never_polled_task_ids == server.task_ids
        assert server.stats.faults_injected == {"accepted_but_lost": 1}
        # The job runs (and would be billed) all the same.
        data = await api.wait_terminal(server.task_ids[0])
        assert data["task"]["status"] == "TASK_STATUS_SUCCEED"


async def test_accepted_but_lost_spares_polls() -> None:
    """accepted_but_lost only exists for submissions; polls are unharmed."""
    async with running(faults=Faults(accepted_but_lost=0.5), seed=1) as api:
        task_id = await _create_despite_faults(api)
        for _ in range(20):
            await api.poll(task_id)


async def test_retrying_a_lost_submit_doubles_the_job() -> None:
    """A client that retries a lost POST pays twice; the stats show the duplicate body."""
    async with running(faults=Faults(accepted_but_lost=0.5), seed=5) as api:
        await _create_despite_faults(api)
        stats = api.server.stats
        assert stats.submissions_accepted >= 2
        assert stats.duplicate_submissions == stats.submissions_accepted - 1
        (ids,) = stats.duplicate_bodies.values()
        assert ids == api.server.task_ids


async def test_slow_delays_the_response() -> None:
    """slow holds the response back slow_seconds (real seconds) and then answers."""
    async with running(faults=Faults(slow=1.0, slow_seconds=0.3)) as api:
        started = time.monotonic()
        reply = await api.submit()
        assert time.monotonic() - started >= 0.3
        assert reply.status == 200
        assert api.server.lost_task_ids == []


async def test_slow_submit_abandoned_by_the_client_is_a_lost_task() -> None:
    """A client timing out on a slow submit leaves a created task it never learns of."""
    async with running(faults=Faults(slow=1.0, slow_seconds=0.3)) as api:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(api.submit)
            # Abandoned once the task exists, not after a fixed time: on a busy machine the
            # POST may take longer than any short client timeout to arrive at all.
            await _until(lambda: bool(api.server.task_ids))
            tasks.cancel_scope.cancel()
        assert len(api.server.task_ids) == 1
        await _until(lambda: bool(api.server.lost_task_ids))
        assert api.server.lost_task_ids == api.server.task_ids


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - the fake's stats have no event to wait on
            await anyio.sleep(0.01)


async def test_slow_faults_do_not_hold_up_shutdown() -> None:
    """Closing the fake wakes responses held by a slow fault."""
    started = time.monotonic()
    async with running(faults=Faults(slow=1.0, slow_seconds=30)) as api:
        with pytest.raises(TimeoutError):
            await api.submit(timeout=0.05)
    assert time.monotonic() - started < 20  # the held answer would take 30 s


async def test_malformed_json_is_a_200_that_does_not_parse() -> None:
    """malformed_json answers 200 with a cut-off JSON body; a POST still creates a task."""
    async with running(faults=Faults(malformed_json=1.0)) as api:
        reply = await api.submit()
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            reply.json()
        assert len(api.server.task_ids) == 1
        assert api.server.lost_task_ids == api.server.task_ids
        poll = await api.result(api.server.task_ids[0])
        assert poll.status == 200
        with pytest.raises(json.JSONDecodeError):
            poll.json()


async def test_faults_only_strike_requests_that_would_succeed() -> None:
    """Unauthenticated, invalid and unknown-task requests get their own answers, not faults."""
    async with running(faults=Faults(server_error=1.0)) as api:
        assert (await api.submit(headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await api.submit({"prompt": ""})).status == 400
        assert (await api.result("unknown")).status == 404
        assert api.server.stats.faults_injected == {}


async def test_fault_shares_match_their_fractions() -> None:
    """With several faults on, each strikes about its share of requests."""
    faults = Faults(server_error=0.2, rate_limit=0.2, malformed_json=0.2)
    async with running(faults=faults, seed=11) as api:
        replies = [await api.submit() for _ in range(300)]
        injected = api.server.stats.faults_injected
    assert sum(injected.values()) == sum(r.status != 200 for r in replies) + injected.get(
        "malformed_json", 0
    )
    for kind in ("server_error", "rate_limit", "malformed_json"):
        assert 35 <= injected[kind] <= 85, injected


async def test_every_fault_kind_ends_each_request_promptly() -> None:
    """Whatever the fault, a client gets an answer or an error quickly, never a hang."""
    faults = Faults(
        server_error=0.15,
        rate_limit=0.15,
        reset=0.15,
        slow=0.1,
        malformed_json=0.15,
        accepted_but_lost=0.15,
        slow_seconds=0.05,
    )
    async with running(faults=faults, seed=2) as api:
        for _ in range(60):
            started = time.monotonic()
            with contextlib.suppress(*CONNECTION_ERRORS):
                await api.submit(timeout=5)
            assert time.monotonic() - started < 4  # never held until the 5 s timeout
        assert set(api.server.stats.faults_injected) == {
            "server_error",
            "rate_limit",
            "reset",
            "slow",
            "malformed_json",
            "accepted_but_lost",
        }


def test_fault_fractions_are_checked() -> None:
    """Fractions outside [0, 1], or adding up past 1, are refused."""
    with pytest.raises(ValueError, match="fraction"):
        Faults(reset=1.5)
    with pytest.raises(ValueError, match="fraction"):
        Faults(slow=-0.1)
    with pytest.raises(ValueError, match="more than 1"):
        Faults(reset=0.6, server_error=0.6)
    assert Faults(reset=0.5, server_error=0.5).total == 1.0
