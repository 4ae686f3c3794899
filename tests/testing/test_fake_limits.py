"""Authentication, the per-key request window and the active-task cap."""

from __future__ import annotations

import anyio
import pytest
from fakeutil import running

from hailuo_async.testing import Fixed

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer wrong-key", id="wrong-key"),
        pytest.param("Bearer ", id="empty-key"),
        pytest.param("Basic ZmFrZTpoYWlsdW8=", id="basic-scheme"),
        pytest.param("fake-hailuo-key", id="no-scheme"),
        pytest.param("Bearer fake-hailuo-key-and-more", id="prefix-match"),
        pytest.param("Bearer fäke", id="non-ascii"),
    ],
)
async def test_bad_credentials_get_401_on_both_endpoints(authorization: str | None) -> None:
    """Without the right bearer key both endpoints answer a JSON 401 and do nothing."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with running() as api:
        task_id = await api.create()
        submit = await api.request(
            "POST",
            api.server.url + "/v3/async/minimax-hailuo-02",
            headers={"Content-Type": "application/json", **headers},
            data=b'{"prompt": "x"}',
        )
        poll = await api.result(task_id, headers=headers)
        assert api.server.task_ids == [task_id]
        assert api.server.stats.polls_by_task == {}
    for reply in (submit, poll):
        assert reply.status == 401
        assert reply.json()["code"] == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive() -> None:
    """ "bearer KEY" authenticates like "Bearer KEY"."""
    async with running() as api:
        reply = await api.submit(headers={"Authorization": f"bearer {api.server.api_key}"})
    assert reply.status == 200


async def test_auth_is_checked_before_the_body() -> None:
    """An invalid body with a wrong key is a 401, not a 400."""
    async with running() as api:
        reply = await api.submit({"prompt": ""}, headers={"Authorization": "Bearer nope"})
    assert reply.status == 401


async def test_custom_api_key() -> None:
    """The fake accepts the key it was given, and only that one."""
    async with running(api_key="test-key") as api:
        assert api.server.api_key == "test-key"
        assert (await api.submit()).status == 200
        wrong = await api.submit(headers={"Authorization": "Bearer fake-hailuo-key"})
        assert wrong.status == 401


async def test_request_window_answers_429_then_frees_up() -> None:
    """requests_per_minute admits that many requests per scaled minute, polls included."""
    async with running(requests_per_minute=3, time_scale=0.01, retry_after=True) as api:
        task_id = await api.create()
        await api.poll(task_id)
        await api.poll(task_id)
        refused = await api.submit()
        assert refused.status == 429
        assert refused.json()["reason"] == "RATE_LIMIT_EXCEEDED"
        wait = float(refused.headers["Retry-After"])
        assert 0 < wait <= 0.6
        assert (await api.result(task_id)).status == 429
        assert api.server.stats.rate_limited == {"rate_window": 2}
        assert api.server.task_ids == [task_id]
        await anyio.sleep(wait + 0.02)
        assert (await api.submit()).status == 200


async def test_request_window_without_retry_after() -> None:
    """With retry_after off the window's 429 has no Retry-After header."""
    async with running(requests_per_minute=1) as api:
        await api.create()
        refused = await api.submit()
    assert refused.status == 429
    assert "Retry-After" not in refused.headers


async def test_unauthenticated_requests_do_not_use_the_window() -> None:
    """Requests with a wrong key are not counted against the real key's window."""
    async with running(requests_per_minute=1) as api:
        for _ in range(3):
            assert (await api.submit(headers={"Authorization": "Bearer x"})).status == 401
        assert (await api.submit()).status == 200


async def test_retry_after_is_whole_seconds_unscaled() -> None:
    """At time_scale 1 Retry-After is an integer number of seconds, at most the window."""
    async with running(requests_per_minute=1, time_scale=1.0, retry_after=True) as api:
        await api.create()
        refused = await api.submit()
    value = refused.headers["Retry-After"]
    assert value.isdigit()
    assert 59 <= int(value) <= 60


async def test_active_cap_refuses_submits_until_a_task_ends() -> None:
    """max_active_tasks refuses a submit while that many tasks run, with a slot estimate."""
    async with running(
        max_active_tasks=2, time_scale=0.01, job_duration=Fixed(30), retry_after=True
    ) as api:
        first = await api.create()
        await api.create()
        refused = await api.submit()
        assert refused.status == 429
        assert "active" in refused.json()["message"]
        wait = float(refused.headers["Retry-After"])
        assert 0 < wait <= 0.3
        assert len(api.server.task_ids) == 2
        assert api.server.stats.rate_limited == {"active_cap": 1}
        # Polls are not capped.
        assert (await api.result(first)).status == 200
        await anyio.sleep(wait + 0.02)
        assert api.server.finished_at(first) is not None
        assert (await api.submit()).status == 200


async def test_active_cap_without_retry_after() -> None:
    """With retry_after off the active cap's 429 has no Retry-After header."""
    async with running(max_active_tasks=1, job_duration=Fixed(1000)) as api:
        await api.create()
        refused = await api.submit()
    assert refused.status == 429
    assert "Retry-After" not in refused.headers


async def test_limits_are_off_by_default() -> None:
    """Without limit knobs a burst of requests is all admitted."""
    async with running(job_duration=Fixed(10_000)) as api:
        for _ in range(100):
            await api.create()
        assert api.server.stats.rate_limited == {}
