"""Issue 14, section 5: forged webhook deliveries cost nothing, and bursts are capped."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from clientutil import make_client, serve_app

from hailuo_async import HailuoClient, InvalidRequestError, TaskResult, TaskStatus, VideoRequest
from hailuo_async._push import (
    Admission,
    InMemoryPushRegistry,
    WebhookConfirmer,
    WebhookEvent,
    admit_delivery,
)
from hailuo_async.testing import FakeHailuoServer, Fixed
from hailuo_async.webhooks import (
    MAX_CONCURRENT_CONFIRMATIONS,
    MAX_WAITING_CONFIRMATIONS,
    WEBHOOK_EVENT_TYPE,
    WebhookSecret,
    aiohttp_handler,
    parse_webhook,
)

pytestmark = pytest.mark.anyio

SCALE = 0.01
SECRET = "a-webhook-secret-for-tests-0123456789"
# A backstop so far off that every GET in these tests is a confirmation.
NO_BACKSTOP = 10_000.0


def event_for(task_id: str) -> dict[str, Any]:
    """A well-formed ASYNC_TASK_RESULT event claiming success for ``task_id``."""
    return {
        "event_type": WEBHOOK_EVENT_TYPE,
        "payload": {"task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}},
    }


@asynccontextmanager
async def aiohttp_receiver(client: HailuoClient, secret: WebhookSecret) -> AsyncIterator[str]:
    """An aiohttp app with the handler on ``/hailuo/webhook/{secret}``; yields its base URL."""
    hook = aiohttp_handler(client, secret=secret)
    app = web.Application()
    app.router.add_post("/hailuo/webhook/{secret}", hook)
    app.cleanup_ctx.append(hook.cleanup_ctx)
    async with serve_app(app, shutdown_timeout=0.1) as url:
        yield url


def test_the_secret_is_checked_and_never_shown() -> None:
    """Matching is exact; repr, str and a bad value's error never show the secret."""
    secret = WebhookSecret(SECRET)
    assert secret.matches(SECRET)
    assert not secret.matches(SECRET[:-1])
    assert not secret.matches(None)
    assert not secret.matches("")
    assert SECRET not in repr(secret)
    assert SECRET not in str(secret)
    assert secret.url("https://my.host/hook/") == f"https://my.host/hook/{SECRET}"
    with pytest.raises(InvalidRequestError) as caught:
        WebhookSecret(SECRET + "/")
    assert SECRET not in str(caught.value)
    assert WebhookSecret.generate().reveal() != WebhookSecret.generate().reveal()
    assert WebhookSecret.resolve(False) is None


def test_the_secret_comes_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes behind one URL share HAILUO_WEBHOOK_SECRET; else each makes one."""
    monkeypatch.setenv("HAILUO_WEBHOOK_SECRET", SECRET)
    resolved = WebhookSecret.resolve(None)
    assert resolved is not None
    assert resolved.reveal() == SECRET
    monkeypatch.delenv("HAILUO_WEBHOOK_SECRET")
    generated = WebhookSecret.resolve(True)
    assert generated is not None
    assert len(generated.reveal()) >= 32


def test_a_request_repr_hides_the_webhook_path() -> None:
    """A VideoRequest's repr shows where its webhook goes, never the secret in its path."""
    request = VideoRequest(prompt="a kite", webhook_url=f"https://my.host/hook/{SECRET}")
    assert SECRET not in repr(request)
    assert "https://my.host" in repr(request)


async def test_forged_deliveries_to_aiohttp_get_404_and_cost_no_get() -> None:
    """A wrong or missing secret: 404, and the fake sees no task-result GET; the right one
    is confirmed with one."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=Fixed(1e9), seed=1
    ) as server:
        async with (
            make_client(server) as client,
            client.watch(keep_open=True, backstop_interval=NO_BACKSTOP) as watcher,
        ):
            task_id = await client.submit(VideoRequest(prompt="a forged end"))
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            async with (
                aiohttp_receiver(client, WebhookSecret(SECRET)) as base,
                aiohttp.ClientSession() as http,
            ):
                for path in ("", "/", "/wrong-secret-0123456789", f"/{SECRET}x", "/x" * 3):
                    async with http.post(
                        f"{base}/hailuo/webhook{path}", json=event_for(task_id)
                    ) as reply:
                        assert reply.status == 404, path
                await anyio.sleep(0.05)
                assert server.stats.polls_total == 0, "no forged delivery cost a GET"
                async with http.post(
                    f"{base}/hailuo/webhook/{SECRET}", json=event_for(task_id)
                ) as reply:
                    assert reply.status == 202
                with anyio.fail_after(5):
                    while server.stats.polls_total == 0:  # noqa: ASYNC110 - no event to wait on
                        await anyio.sleep(0.005)
    assert server.stats.polls_by_task == {task_id: 1}


async def test_a_burst_of_deliveries_never_runs_more_than_the_cap_at_once() -> None:
    """100 deliveries for watched tasks: at most 8 GETs at once, 64 wait, the rest get 503."""
    burst = 100
    admitted = MAX_CONCURRENT_CONFIRMATIONS + MAX_WAITING_CONFIRMATIONS
    async with FakeHailuoServer(in_process=True, time_scale=SCALE, seed=3) as server:
        async with (
            make_client(server) as client,
            client.watch(keep_open=True, backstop_interval=NO_BACKSTOP) as watcher,
        ):
            task_ids = [str(uuid.uuid4()) for _ in range(burst)]
            for task_id in task_ids:
                watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            running = peak = 0
            gate = anyio.Event()

            async def counted_get_task(task_id: str) -> TaskResult:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                try:
                    await gate.wait()
                    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED)
                finally:
                    running -= 1

            client.get_task = counted_get_task  # type: ignore[method-assign]
            async with (
                aiohttp_receiver(client, WebhookSecret(SECRET)) as base,
                aiohttp.ClientSession() as http,
            ):
                url = f"{base}/hailuo/webhook/{SECRET}"
                statuses = []
                for task_id in task_ids:
                    async with http.post(url, json=event_for(task_id)) as reply:
                        statuses.append(reply.status)
                assert statuses.count(202) == admitted
                assert statuses.count(503) == burst - admitted
                gate.set()
                ended = {task_id async for task_id, _ in _outcomes(watcher, admitted)}
                # The gateway delivers the refused ones again later: now they are confirmed.
                for task_id, status in zip(task_ids, statuses, strict=True):
                    if status == 503:
                        async with http.post(url, json=event_for(task_id)) as reply:
                            assert reply.status == 202
                ended |= {task_id async for task_id, _ in _outcomes(watcher, burst - admitted)}
    assert peak == MAX_CONCURRENT_CONFIRMATIONS
    assert ended == set(task_ids)


async def _outcomes(watcher: Any, count: int) -> AsyncIterator[tuple[str, object]]:
    with anyio.fail_after(10):
        for _ in range(count):
            yield await watcher.next_outcome()


def test_access_logs_show_the_secret_masked(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn's (path in args) and aiohttp's (path in the message) access lines show ***."""
    secret = WebhookSecret(f"access-log-{uuid.uuid4().hex}")
    secret.mask_in_access_logs()
    path = f"/hailuo/webhook/{secret.reveal()}"
    with (
        caplog.at_level(logging.INFO, logger="uvicorn.access"),
        caplog.at_level(logging.INFO, logger="aiohttp.access"),
    ):
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", path, "1.1", 202
        )
        logging.getLogger("aiohttp.access").info(f'127.0.0.1 "POST {path} HTTP/1.1" 202')
    assert len(caplog.records) == 2
    assert secret.reveal() not in caplog.text
    assert caplog.text.count("/hailuo/webhook/***") == 2


async def test_relays_to_other_processes_are_capped_like_confirmations() -> None:
    """100 events nobody here watches, for a coordinated receiver: 8 NOTIFYs at once, 64
    waiting, the rest 503; a repeated id is relayed once per cool-down."""
    confirmer = WebhookConfirmer(InMemoryPushRegistry())
    gate = anyio.Event()
    running = peak = 0
    relayed: list[str] = []

    async def relay(event: WebhookEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            relayed.append(event.task_id or "")
        finally:
            running -= 1

    async def confirm(event: WebhookEvent) -> None:
        raise AssertionError("nobody here watches these ids: nothing to confirm")

    def deliver(task_id: str) -> Any:
        event = parse_webhook(event_for(task_id))
        return admit_delivery(confirmer, event, cool_down=60.0, handle=confirm, relay=relay)

    admitted = MAX_CONCURRENT_CONFIRMATIONS + MAX_WAITING_CONFIRMATIONS
    task_ids = [str(uuid.uuid4()) for _ in range(100)]
    async with anyio.create_task_group() as group:
        answers = [deliver(task_id) for task_id in task_ids]
        works = [answer for answer in answers if not isinstance(answer, Admission)]
        for work in works:
            group.start_soon(work)
        assert deliver(task_ids[0]) is Admission.IGNORED  # already being relayed
        with anyio.fail_after(10):
            while running < MAX_CONCURRENT_CONFIRMATIONS:  # noqa: ASYNC110 - no event tells
                await anyio.sleep(0.005)
        gate.set()
    assert len(works) == admitted
    assert answers.count(Admission.BUSY) == 100 - admitted
    assert peak == MAX_CONCURRENT_CONFIRMATIONS
    assert sorted(relayed) == sorted(task_ids[:admitted])
    assert deliver(task_ids[0]) is Admission.IGNORED  # relayed a moment ago
    assert not isinstance(deliver(task_ids[-1]), Admission)  # refused before: relayed now
