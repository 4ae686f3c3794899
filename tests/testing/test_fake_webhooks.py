"""The fake's webhook delivery: the event's shape, the gateway's retries, drops and duplicates."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from aiohttp import web
from fakeutil import open_api, serving

from hailuo_async.testing import FakeHailuoConfig, FakeHailuoServer, Fixed
from hailuo_async.testing.__main__ import build_parser, config_from_args

pytestmark = pytest.mark.anyio

SCALE = 0.01
FAST: dict[str, Any] = {
    "time_scale": SCALE,
    "seed": 3,
    "job_duration": Fixed(5.0),
    "webhook_retry_delay": 0.5,
    # 10 s to answer: a receiver slowed by a busy machine is not retried (the scaled default
    # would be the 50 ms floor); the tests about timeouts set their own.
    "webhook_timeout": 1000.0,
    # The API in memory; the webhooks still go to receivers on ports.
    "in_process": True,
}
Behaviour = Callable[[int], Awaitable[int]]


class Receiver:
    """A loopback webhook endpoint that records each POST and answers as told."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        self.url = ""
        self._behaviour = behaviour

    async def handle(self, request: web.Request) -> web.Response:
        """Record the POST, then answer with the status the behaviour picks (200 by default)."""
        self.attempts += 1
        attempt = self.attempts
        status = 200 if self._behaviour is None else await self._behaviour(attempt)
        if 200 <= status < 300:
            self.events.append(await request.json())
        return web.Response(status=status)

    async def wait_for(self, count: int, *, timeout: float = 30.0) -> None:
        """Wait until ``count`` events were accepted."""
        await eventually(lambda: len(self.events) >= count, timeout=timeout)


async def eventually(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


@asynccontextmanager
async def receiving(behaviour: Behaviour | None = None) -> AsyncIterator[Receiver]:
    """Serve a Receiver on a free loopback port."""
    receiver = Receiver(behaviour)
    async with serving("/hook", receiver.handle) as receiver.url:
        yield receiver


def hooked(url: str, **webhook: Any) -> dict[str, Any]:
    """A valid submission body asking for a webhook at ``url``."""
    return {"prompt": "a lighthouse in a storm", "extra": {"webhook": {"url": url, **webhook}}}


async def settle(server: FakeHailuoServer, *, timeout: float = 30.0) -> None:
    """Wait until the fake has no delivery under way."""
    await eventually(lambda: not server._service.webhook_tasks, timeout=timeout)


async def test_event_is_the_task_result_wrapped() -> None:
    """An ended task's webhook carries ASYNC_TASK_RESULT and the task-result body."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST) as server,
        open_api(server) as api,
    ):
        task_id = await api.create(hooked(receiver.url))
        await receiver.wait_for(1)
        await settle(server)
        polled = await api.poll(task_id)
    (event,) = receiver.events
    assert event["event_type"] == "ASYNC_TASK_RESULT"
    payload = event["payload"]
    assert payload["task"]["task_id"] == task_id
    assert payload["task"]["status"] == "TASK_STATUS_SUCCEED"
    assert payload["task"]["status"] == polled["task"]["status"]
    assert payload["videos"][0]["video_url"].startswith(server.storage_url)
    assert payload["extra"]["webhook"] == {"url": receiver.url}
    assert set(payload) >= {"task", "videos", "images", "audios", "extra"}
    stats = server.stats
    assert (stats.webhook_attempts, stats.webhooks_sent, stats.webhooks_failed) == (1, 1, 0)


async def test_failed_task_event_has_reason() -> None:
    """A task that fails sends its FAILED status and reason, without videos."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST, failure_rate=1.0) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(receiver.url))
        await receiver.wait_for(1)
    task = receiver.events[0]["payload"]["task"]
    assert task["status"] == "TASK_STATUS_FAILED"
    assert task["reason"]
    assert receiver.events[0]["payload"]["videos"] == []


async def test_no_webhook_asked_none_sent() -> None:
    """Tasks submitted without extra.webhook send nothing."""
    async with FakeHailuoServer(**FAST) as server, open_api(server) as api:
        task_id = await api.create()
        await api.wait_terminal(task_id)
        await anyio.sleep(0.02)
        assert not server._service.webhook_tasks
    assert server.stats.webhook_attempts == 0
    assert server.stats.webhooks_sent == 0


async def test_delivered_once_the_task_ends_not_before() -> None:
    """The event leaves when the task's schedule ends it."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST) as server,
        open_api(server) as api,
    ):
        task_id = await api.create(hooked(receiver.url))
        await receiver.wait_for(1)
        arrived = time.monotonic()
        finished = server.finished_at(task_id)
    assert finished is not None
    assert finished <= arrived < finished + 1.0


async def test_non_2xx_is_retried_until_accepted() -> None:
    """Answers of 500 and 404 are retried; the third attempt's 204 ends the delivery."""

    async def flaky(attempt: int) -> int:
        return {1: 500, 2: 404}.get(attempt, 204)

    async with (
        receiving(flaky) as receiver,
        FakeHailuoServer(**FAST) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(receiver.url))
        await receiver.wait_for(1)
        await settle(server)
    assert receiver.attempts == 3
    stats = server.stats
    assert (stats.webhook_attempts, stats.webhooks_sent, stats.webhooks_failed) == (3, 1, 0)


async def test_five_retries_then_gives_up() -> None:
    """A receiver that always answers 503 gets the first attempt and five retries."""

    async def down(attempt: int) -> int:
        return 503

    async with (
        receiving(down) as receiver,
        FakeHailuoServer(**{**FAST, "webhook_retry_delay": 0.1}) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(receiver.url))
        await anyio.sleep(0.05)
        await settle(server)
    assert receiver.attempts == 6
    stats = server.stats
    assert (stats.webhook_attempts, stats.webhooks_sent, stats.webhooks_failed) == (6, 0, 1)


async def test_slow_answer_counts_as_failure() -> None:
    """A receiver slower than the scaled timeout is retried, even though it answers 200."""

    async def slow_first(attempt: int) -> int:
        if attempt == 1:
            await anyio.sleep(30)  # never in time; cancelled when the receiver closes
        return 200

    # 500 service seconds at scale 0.01: the receiver has 5 s to answer (1 s was once too
    # short for the prompt second attempt on a loaded machine).
    async with (
        receiving(slow_first) as receiver,
        FakeHailuoServer(**{**FAST, "webhook_timeout": 500.0}) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(receiver.url))
        await receiver.wait_for(1)
        await settle(server)
    stats = server.stats
    assert stats.webhook_attempts == 2
    assert stats.webhooks_sent == 1


async def test_unreachable_receiver_fails_after_retries() -> None:
    """A refused connection is a failed attempt like any other."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with (
        FakeHailuoServer(**{**FAST, "webhook_retries": 2}) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(f"http://127.0.0.1:{port}/hook"))
        await anyio.sleep(0.06)
        await settle(server)
    assert (server.stats.webhook_attempts, server.stats.webhooks_failed) == (3, 1)


async def test_drop_all_sends_nothing() -> None:
    """webhook_drop=1 drops every event and counts it."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST, webhook_drop=1.0) as server,
        open_api(server) as api,
    ):
        ids = [await api.create(hooked(receiver.url)) for _ in range(4)]
        for task_id in ids:
            await api.wait_terminal(task_id)
        await settle(server)
    assert receiver.attempts == 0
    assert server.stats.webhooks_dropped == 4
    assert server.stats.webhooks_sent == 0


async def test_duplicate_all_sends_twice() -> None:
    """webhook_duplicate=1 delivers every event twice, identical."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST, webhook_duplicate=1.0) as server,
        open_api(server) as api,
    ):
        for _ in range(3):
            await api.create(hooked(receiver.url))
        await receiver.wait_for(6)
        await settle(server)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events:
        by_task.setdefault(event["payload"]["task"]["task_id"], []).append(event)
    assert len(by_task) == 3
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in by_task.values())
    assert server.stats.webhooks_duplicated == 3
    assert server.stats.webhooks_sent == 6


async def test_fractions_are_seeded() -> None:
    """Half-dropped runs with one seed drop the same share each time."""
    counts = []
    for _ in range(2):
        async with (
            receiving() as receiver,
            FakeHailuoServer(**FAST, webhook_drop=0.5, webhook_duplicate=0.5) as server,
            open_api(server) as api,
        ):
            for _ in range(20):
                await api.create(hooked(receiver.url))
            await eventually(lambda: server.stats.tasks_terminal >= 20)
            await settle(server)
            stats = server.stats
            counts.append((stats.webhooks_dropped, stats.webhooks_duplicated, stats.webhooks_sent))
            sent_events = 20 - stats.webhooks_dropped
            assert receiver.attempts == stats.webhooks_sent
            assert sent_events <= stats.webhooks_sent <= 2 * sent_events
    assert counts[0] == counts[1]
    assert 0 < counts[0][0] < 20


async def test_close_cancels_deliveries_under_way() -> None:
    """Closing the fake while a receiver hangs cancels the delivery at once, cleanly."""
    hung = anyio.Event()

    async def hang(attempt: int) -> int:
        hung.set()
        await anyio.sleep(30)
        return 200

    async with receiving(hang) as receiver:
        server = FakeHailuoServer(**{**FAST, "webhook_timeout": 1000.0})
        async with server, open_api(server) as api:
            await api.create(hooked(receiver.url))
            with anyio.fail_after(5):
                await hung.wait()
            started = time.monotonic()
        # Well under the 10 s the delivery would otherwise wait for the hung receiver.
        assert time.monotonic() - started < 5.0
        assert not server._service.webhook_tasks
        assert server._service.webhook_session is None
    assert server.stats.webhooks_sent == 0


async def test_test_mode_sends_a_simulated_event_at_once() -> None:
    """test_mode sends one event with the asked status right after the submission."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**{**FAST, "job_duration": Fixed(300.0)}) as server,
        open_api(server) as api,
    ):
        mode = {"enabled": True, "return_task_status": "TASK_STATUS_FAILED"}
        task_id = await api.create(hooked(receiver.url, test_mode=mode))
        await receiver.wait_for(1)
        # Before the job's 3 s are over: the event did not wait for the schedule's end.
        assert server.finished_at(task_id) is None
        await api.wait_terminal(task_id)
        await anyio.sleep(0.03)
        await settle(server)
    (event,) = receiver.events
    assert event["payload"]["task"]["task_id"] == task_id
    assert event["payload"]["task"]["status"] == "TASK_STATUS_FAILED"
    assert event["payload"]["task"]["reason"]


async def test_test_mode_defaults_to_success() -> None:
    """test_mode without a return status simulates a success with a video."""
    async with (
        receiving() as receiver,
        FakeHailuoServer(**FAST) as server,
        open_api(server) as api,
    ):
        await api.create(hooked(receiver.url, test_mode={"enabled": True}))
        await receiver.wait_for(1)
    payload = receiver.events[0]["payload"]
    assert payload["task"]["status"] == "TASK_STATUS_SUCCEED"
    assert payload["videos"]


def test_webhook_flags() -> None:
    """The fake's command line sets every webhook knob."""
    args = build_parser().parse_args(
        [
            "--webhook-drop=0.1",
            "--webhook-duplicate=0.2",
            "--webhook-timeout=2",
            "--webhook-retries=3",
            "--webhook-retry-delay=0.5",
        ]
    )
    assert config_from_args(args) == FakeHailuoConfig(
        webhook_drop=0.1,
        webhook_duplicate=0.2,
        webhook_timeout=2.0,
        webhook_retries=3,
        webhook_retry_delay=0.5,
    )


def test_webhook_knobs_are_checked() -> None:
    """Fractions outside [0, 1] and a zero timeout are refused."""
    with pytest.raises(ValueError, match="webhook_drop"):
        FakeHailuoConfig(webhook_drop=1.5)
    with pytest.raises(ValueError, match="webhook_timeout"):
        FakeHailuoConfig(webhook_timeout=0)
