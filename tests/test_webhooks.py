"""Push delivery: parsing events, confirming them, feeding watchers, and the aiohttp handler."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from clientutil import serve_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hailuo_async import (
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    Limits,
    PollPolicy,
    RetryPolicy,
    TaskEvent,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from hailuo_async._push import InMemoryPushRegistry
from hailuo_async.testing import FakeHailuoServer, Fixed, Uniform
from hailuo_async.webhooks import (
    MAX_WEBHOOK_BYTES,
    WEBHOOK_EVENT_TYPE,
    WebhookError,
    WebhookEvent,
    aiohttp_handler,
    parse_webhook,
)

pytestmark = pytest.mark.anyio

SCALE = 0.01
HOOK_PATH = "/hailuo/webhook"


def make_client(server: FakeHailuoServer, **kwargs: Any) -> HailuoClient:
    """A client tuned to the fake's time scale."""
    return HailuoClient(
        server.api_key,
        base_url=server.url,
        poll_policy=PollPolicy().scaled(SCALE),
        retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05, not_found_grace=0.2),
        limits=Limits(rate_window=60 * SCALE),
        **kwargs,
    )


def event_for(task_id: str, status: str = "TASK_STATUS_SUCCEED") -> dict[str, Any]:
    """A well-formed ASYNC_TASK_RESULT event claiming ``status`` for ``task_id``."""
    return {
        "event_type": WEBHOOK_EVENT_TYPE,
        "payload": {"task": {"task_id": task_id, "status": status}, "videos": []},
    }


async def wait_done(server: FakeHailuoServer, task_id: str) -> None:
    """Sleep until the fake's schedule has ended the task."""
    finished = server.tasks[task_id].finished_at
    await anyio.sleep(max(0.0, finished - time.monotonic()) + 0.01)


async def eventually(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 30 service seconds (0.3 s)."""
    async with FakeHailuoServer(time_scale=SCALE, seed=5, job_duration=Fixed(30)) as fake:
        yield fake


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'"text"', "body"),
        (b"{}", "event_type"),
        (b'{"event_type": 7}', "event_type"),
        (b'{"event_type": ""}', "event_type"),
        (b'{"event_type": "ASYNC_TASK_RESULT"}', "payload"),
        (b'{"event_type": "ASYNC_TASK_RESULT", "payload": []}', "payload"),
        (b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": 1}}', "payload.task"),
        (
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": ""}}}',
            "payload.task.task_id",
        ),
        (
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": 5}}}',
            "payload.task.task_id",
        ),
        (
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "a\\nb"}}}',
            "payload.task.task_id",
        ),
        (
            b'{"event_type": "ASYNC_TASK_RESULT",'
            b' "payload": {"task": {"task_id": "t", "status": 3}}}',
            "payload.task.status",
        ),
        (b"[" * 100_000, "body"),
        (b"\xff\xfe", "body"),
    ],
)
def test_garbage_raises_webhook_error_naming_the_field(body: bytes, field: str) -> None:
    """Each kind of malformed body is a WebhookError that names where it is wrong."""
    with pytest.raises(WebhookError) as caught:
        parse_webhook(body)
    assert caught.value.field == field
    assert isinstance(caught.value, HailuoError)
    assert isinstance(caught.value, ValueError)


def test_oversized_body_is_refused_unread() -> None:
    """A body over MAX_WEBHOOK_BYTES is refused before it is parsed."""
    with pytest.raises(WebhookError, match="larger than"):
        parse_webhook(b" " * (MAX_WEBHOOK_BYTES + 1))


def test_well_formed_event_is_read() -> None:
    """Bytes, text and mappings give the same event, with the claimed id and status."""
    data = event_for("task-1")
    events = [
        parse_webhook(json.dumps(data).encode()),
        parse_webhook(json.dumps(data)),
        parse_webhook(data),
    ]
    for event in events:
        assert event.task_id == "task-1"
        assert event.status is TaskStatus.SUCCEED
        assert event.is_task_result
        assert event.claims_done


def test_other_event_types_are_read_not_acted_on() -> None:
    """An unknown event type parses, without a task, and claims nothing."""
    event = parse_webhook({"event_type": "SOMETHING_NEW", "payload": 42})
    assert not event.is_task_result
    assert event.task_id is None
    assert not event.claims_done


def test_wrong_body_type_is_a_webhook_error() -> None:
    """Something that is not bytes, text or a mapping is refused with a typed error."""
    with pytest.raises(WebhookError):
        parse_webhook(42)  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bytes_never_crash(body: bytes) -> None:
    """Arbitrary bytes either parse or raise WebhookError, nothing else."""
    with contextlib.suppress(WebhookError):
        parse_webhook(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_type": st.sampled_from([WEBHOOK_EVENT_TYPE, "OTHER"]) | json_values,
            "payload": st.fixed_dictionaries(
                {},
                optional={
                    "task": st.dictionaries(st.sampled_from(["task_id", "status"]), json_values)
                },
            )
            | json_values,
        },
    )
)
def test_fuzzed_shapes_never_crash(data: dict[str, Any]) -> None:
    """Near-miss event shapes either parse or raise WebhookError, nothing else."""
    try:
        event = parse_webhook(data)
    except WebhookError:
        return
    if event.is_task_result:
        assert isinstance(event.task_id, str)


# -- handle_webhook ----------------------------------------------------------------------


async def test_garbage_raises_from_handle_webhook(server: FakeHailuoServer) -> None:
    """handle_webhook raises WebhookError for garbage and sends nothing."""
    async with make_client(server) as client:
        with pytest.raises(WebhookError):
            await client.handle_webhook(b"{not json")
    assert server.stats.polls_total == 0


async def test_unwatched_task_is_ignored_without_a_request(server: FakeHailuoServer) -> None:
    """An event for an id no open watcher watches is ignored, and not confirmed."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        await wait_done(server, task_id)
        assert await client.handle_webhook(event_for(task_id)) is None
        async with client.watch() as watcher:
            assert await client.handle_webhook(event_for("unknown-id")) is None
            assert watcher.pending == 0
    assert server.stats.polls_total == 0


async def test_other_event_types_and_running_claims_are_ignored(server: FakeHailuoServer) -> None:
    """Unknown event types and events claiming a running task cost no request."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            assert await client.handle_webhook({"event_type": "PING"}) is None
            claim = event_for(task_id, "TASK_STATUS_PROCESSING")
            assert await client.handle_webhook(claim) is None
            assert task_id in watcher
    assert server.stats.polls_total == 0


async def test_confirmed_event_ends_the_watch(server: FakeHailuoServer) -> None:
    """A pushed task's event is confirmed by one GET and yielded by the watcher."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            await wait_done(server, task_id)
            delivered = await client.handle_webhook(event_for(task_id))
            assert delivered is not None
            assert delivered.ok
            assert delivered.video is not None
            results = [result async for result in watcher]
    assert results == [delivered]
    assert server.stats.polls_by_task == {task_id: 1}
    assert watcher.polls == 0


async def test_body_is_never_trusted(server: FakeHailuoServer) -> None:
    """A forged 'succeeded' event for a running task is checked, found false, and ignored."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            forged = event_for(task_id)
            forged["payload"]["videos"] = [{"video_url": "https://evil.example/x.mp4"}]
            assert await client.handle_webhook(forged) is None
            assert task_id in watcher
            # Replayed at once, it is not even checked again (the cool-down).
            assert await client.handle_webhook(forged) is None
            assert server.stats.polls_total == 1
            await wait_done(server, task_id)
            result = await client.handle_webhook(event_for(task_id))
            assert result is not None
            assert all("evil" not in video.url for video in result.videos)
            watcher.finish()


async def test_concurrent_duplicates_confirm_once(server: FakeHailuoServer) -> None:
    """Two copies of one event arriving together cost one GET and deliver once."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        answers: list[object] = []
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            await wait_done(server, task_id)

            async def push() -> None:
                answers.append(await client.handle_webhook(event_for(task_id)))

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(push)
            # A late copy, after the end was delivered: ignored without a request.
            assert await client.handle_webhook(event_for(task_id)) is None
            results = [result async for result in watcher]
    assert len(results) == 1
    assert sum(answer is not None for answer in answers) == 1
    assert server.stats.polls_total == 1


async def test_every_open_watcher_gets_the_result(server: FakeHailuoServer) -> None:
    """Two watchers watching one id both yield the confirmed result."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch() as first, client.watch() as second:
            first.add(task_id, submitted_at=time.monotonic(), pushed=True)
            second.add(task_id, submitted_at=time.monotonic(), pushed=True)
            await wait_done(server, task_id)
            assert await client.handle_webhook(event_for(task_id)) is not None
            assert [r.task_id async for r in first] == [task_id]
            assert [r.task_id async for r in second] == [task_id]
    assert server.stats.polls_total == 1


class Subscriber:
    """A push subscriber that takes every result once and counts them."""

    def __init__(self) -> None:
        self.results: list[str] = []

    def deliver(self, result: TaskResult) -> bool:
        """Take ``result``; True the first time its task id is seen."""
        if result.task_id in self.results:
            return False
        self.results.append(result.task_id)
        return True


def done(task_id: str) -> TaskResult:
    """An ended task's result."""
    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED)


def test_registry_with_one_subscriber_per_id() -> None:
    """A lone subscriber gets its id's result; registering it twice is one interest."""
    registry = InMemoryPushRegistry()
    watcher = Subscriber()
    registry.register("t", watcher)
    registry.register("t", watcher)
    registry.unregister("t", Subscriber())  # not registered: nothing changes
    registry.unregister("other", watcher)
    assert registry.wanted_ids() == ["t"]
    assert registry.deliver(done("t")) == 1
    assert registry.deliver(done("t")) == 0  # it declined the second copy
    assert registry.deliver(done("other")) == 0
    registry.unregister("t", watcher)
    assert not registry.is_wanted("t")
    assert registry.deliver(done("t")) == 0
    assert watcher.results == ["t"]


def test_registry_with_several_subscribers_per_id() -> None:
    """Every subscriber of an id gets its result, until each one unregisters."""
    registry = InMemoryPushRegistry()
    first, second, third = Subscriber(), Subscriber(), Subscriber()
    for subscriber in (first, second, third, second):
        registry.register("t", subscriber)
    assert registry.deliver(done("t")) == 3
    registry.unregister("t", second)
    registry.unregister("t", third)
    registry.unregister("t", third)
    assert registry.is_wanted("t")
    assert registry.deliver(done("u")) == 0
    registry.register("t", second)  # back to two, after it shrank to one
    assert registry.deliver(TaskResult(task_id="t", status=TaskStatus.FAILED)) == 0
    assert second.results == ["t"]
    registry.unregister("t", first)
    registry.unregister("t", second)
    assert registry.wanted_ids() == []
    assert (first.results, third.results) == (["t"], ["t"])


def test_registry_delivers_to_subscribers_that_unregister_while_taking_it() -> None:
    """A subscriber unregistering as it takes the result does not hide it from the others."""
    registry = InMemoryPushRegistry()
    taken: list[Subscriber] = []

    class Leaving(Subscriber):
        def deliver(self, result: TaskResult) -> bool:
            """Leave the registry, then take ``result``."""
            registry.unregister(result.task_id, self)
            taken.append(self)
            return True

    leaving = [Leaving(), Leaving()]
    for subscriber in leaving:
        registry.register("t", subscriber)
    assert registry.deliver(done("t")) == 2
    assert sorted(map(id, taken)) == sorted(map(id, leaving))
    assert not registry.is_wanted("t")


async def test_failed_confirmation_is_logged_not_raised(
    server: FakeHailuoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A confirmation GET that fails (here a 404) is logged; the event is ignored."""
    async with make_client(server, max_retries=0) as client:
        async with client.watch() as watcher:
            watcher.add("no-such-task", submitted_at=time.monotonic(), pushed=True)
            with caplog.at_level(logging.WARNING, logger="hailuo_async.webhooks"):
                assert await client.handle_webhook(event_for("no-such-task")) is None
            assert "could not confirm" in caplog.text
            assert "no-such-task" in watcher
            watcher.finish()


async def test_closed_watchers_leave_the_registry(server: FakeHailuoServer) -> None:
    """A watcher takes pushed results only while it is open."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a registry"))
        watcher = client.watch(keep_open=True)
        watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
        assert not client._state.push.is_wanted(task_id)
        async with watcher:
            assert client._state.push.is_wanted(task_id)
            watcher.finish()
        assert not client._state.push.is_wanted(task_id)


# -- the watcher's side ------------------------------------------------------------------


async def test_delivered_results_are_events_too(server: FakeHailuoServer) -> None:
    """A pushed result reaches events() subscribers and on_event as a 'done' event."""
    seen: list[TaskEvent] = []
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch(on_event=seen.append) as watcher:
            with watcher.events() as events:
                watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
                await wait_done(server, task_id)
                assert await client.handle_webhook(event_for(task_id)) is not None
                event = await events.receive()
                [_ async for _ in watcher]
                await anyio.sleep(0.01)
    assert event.kind == "done"
    assert event.result is not None
    assert event.result.task_id == task_id
    assert [e.kind for e in seen] == ["done"]


async def test_lost_push_is_caught_by_the_backstop(server: FakeHailuoServer) -> None:
    """A pushed task whose event never comes is still found, by a late backstop poll."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        submitted = time.monotonic()
        watcher = client.watch(backstop_interval=0.6)
        async with watcher:
            watcher.add(task_id, submitted_at=submitted, pushed=True)
            results = [result async for result in watcher]
        waited = time.monotonic() - submitted
    assert [r.task_id for r in results] == [task_id]
    assert watcher.polls == 1
    assert 0.5 < waited < 1.5  # the backstop, not the job's 0.3 s, decided when


async def test_backstop_polls_sparsely_while_running() -> None:
    """A long pushed job is polled at the backstop interval, not the policy's pace."""
    async with FakeHailuoServer(time_scale=SCALE, seed=2, job_duration=Fixed(150)) as server:
        async with make_client(server) as client:
            task_id = await client.submit(VideoRequest(prompt="a long take"))
            async with client.watch() as pushed, client.watch() as polled:
                pushed.add(task_id, submitted_at=time.monotonic(), pushed=True)
                polled.add(task_id, submitted_at=time.monotonic())
                async for _ in polled:
                    pass
                pushed_polls = pushed.polls
                pushed.finish()
    # 1.5 s of job: the polled watcher asks several times, the backstop (1.2 s) once.
    assert pushed_polls <= 1
    assert polled.polls >= 3


async def test_pushed_without_submission_time_is_polled_at_once(server: FakeHailuoServer) -> None:
    """A pushed id of unknown age gets one poll at once, in case it ended already."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        await wait_done(server, task_id)
        async with client.watch() as watcher:
            watcher.add(task_id, pushed=True)
            with anyio.fail_after(1):
                results = [result async for result in watcher]
    assert [r.task_id for r in results] == [task_id]


def test_backstop_interval_must_be_positive() -> None:
    """A zero or negative backstop interval is refused."""
    client = HailuoClient("k", base_url="http://127.0.0.1:1")
    with pytest.raises(InvalidRequestError, match="backstop_interval"):
        client.watch(backstop_interval=0)


# -- end to end: the fake pushes, an aiohttp receiver takes it ------------------------------


@asynccontextmanager
async def receiver(client: HailuoClient) -> AsyncIterator[str]:
    """Serve client's aiohttp webhook handler on loopback; yield the webhook URL."""
    hook = aiohttp_handler(client)
    app = web.Application()
    app.router.add_post(HOOK_PATH, hook)
    app.cleanup_ctx.append(hook.cleanup_ctx)
    async with serve_app(app, shutdown_timeout=0.1) as url:
        yield f"{url}{HOOK_PATH}"
    assert hook.receiver.pending == 0


async def run_batch(
    server: FakeHailuoServer, jobs: int, *, webhooks: bool
) -> tuple[list[bool], int]:
    """generate_many over ``jobs`` requests; the outcomes' ok flags and the watcher's polls."""
    async with make_client(server) as client, receiver(client) as url:
        hook = url if webhooks else None
        requests = [VideoRequest(prompt=f"shot {i}", webhook_url=hook) for i in range(jobs)]
        async with client.generate_many(requests) as outcomes:
            oks = [outcome.ok async for outcome in outcomes]
            polls = outcomes.counts.polls
    return oks, polls


async def test_generate_many_with_webhooks_polls_once_per_job() -> None:
    """With webhooks a batch ends by push: about one GET (the confirmation) per job."""
    async with FakeHailuoServer(time_scale=SCALE, seed=4, job_duration=Uniform(30, 60)) as server:
        oks, watcher_polls = await run_batch(server, 12, webhooks=True)
        stats = server.stats
    assert oks == [True] * 12
    assert stats.webhooks_sent == 12
    assert watcher_polls == 0
    assert stats.polls_total == 12


async def test_generate_many_survives_dropped_and_duplicated_events() -> None:
    """Dropped events are caught by the backstop and duplicates are harmless."""
    async with FakeHailuoServer(
        time_scale=SCALE,
        seed=6,
        job_duration=Uniform(30, 60),
        webhook_drop=0.3,
        webhook_duplicate=0.3,
    ) as server:
        oks, _ = await run_batch(server, 16, webhooks=True)
        stats = server.stats
    assert oks == [True] * 16
    assert stats.webhooks_dropped > 0
    assert stats.webhooks_duplicated > 0
    assert len(set(stats.task_ids)) == 16


async def test_aiohttp_handler_answers_at_once() -> None:
    """The handler answers 202 for events (even unknown ones), 400 and 413 for garbage."""
    async with FakeHailuoServer(time_scale=SCALE, seed=1) as server:
        async with (
            make_client(server) as client,
            receiver(client) as url,
            aiohttp.ClientSession() as session,
        ):

            async def post(data: bytes) -> tuple[int, dict[str, Any]]:
                # A file-like body: aiohttp warns about large raw bytes.
                async with session.post(
                    url, data=io.BytesIO(data), headers={"Content-Type": "application/json"}
                ) as reply:
                    return reply.status, await reply.json()

            assert (await post(json.dumps(event_for("t")).encode()))[0] == 202
            assert (await post(b'{"event_type": "PING"}'))[0] == 202
            status, body = await post(b"nonsense")
            assert status == 400
            assert body["field"] == "body"
            status, body = await post(json.dumps({"event_type": WEBHOOK_EVENT_TYPE}).encode())
            assert (status, body["field"]) == (400, "payload")
            status, _ = await post(b" " * (MAX_WEBHOOK_BYTES + 10))
            assert status == 413
    assert server.stats.polls_total == 0


async def test_aiohttp_shutdown_cancels_pending_confirmations() -> None:
    """Closing the receiver cancels a confirmation stuck on a slow service."""
    async with FakeHailuoServer(time_scale=SCALE, seed=1) as server:
        async with make_client(server) as client, client.watch(keep_open=True) as watcher:
            watched = await client.submit(VideoRequest(prompt="a slow confirmation"))
            watcher.add(watched, submitted_at=time.monotonic(), pushed=True)
            started = anyio.Event()

            async def slow_handle(body: object) -> None:
                started.set()
                await anyio.sleep(30)

            client.handle_webhook = slow_handle  # type: ignore[method-assign]
            hook = aiohttp_handler(client)
            app = web.Application()
            app.router.add_post(HOOK_PATH, hook)
            app.cleanup_ctx.append(hook.cleanup_ctx)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}{HOOK_PATH}"
            async with aiohttp.ClientSession() as session:
                async with session.post(url, json=event_for(watched)) as reply:
                    assert reply.status == 202
            with anyio.fail_after(30):
                await started.wait()
            assert hook.receiver.pending == 1
            began = time.monotonic()
            await runner.cleanup()
            assert time.monotonic() - began < 10  # the stuck confirmation would take 30 s
            assert hook.receiver.pending == 0


async def test_handle_webhook_accepts_a_parsed_event(server: FakeHailuoServer) -> None:
    """A WebhookEvent parsed earlier (by a front end) is handled like the raw body."""
    async with make_client(server) as client:
        task_id = await client.submit(VideoRequest(prompt="a quiet pond"))
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
            await wait_done(server, task_id)
            event = parse_webhook(event_for(task_id))
            assert isinstance(event, WebhookEvent)
            assert await client.handle_webhook(event) is not None
            assert watcher.pending == 0
