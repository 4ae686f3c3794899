"""The FastAPI integration and the example service, served by uvicorn on loopback."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn
from fastapi import Depends, FastAPI

from hailuo_async import HailuoClient, Limits, PollPolicy, RetryPolicy, VideoRequest
from hailuo_async.fastapi import (
    Hailuo,
    HailuoState,
    get_client,
    hailuo_lifespan,
    open_hailuo,
    result_json,
    webhook_router,
)
from hailuo_async.testing import FakeHailuoServer, Fixed
from hailuo_async.webhooks import WEBHOOK_EVENT_TYPE, aiohttp_handler

pytestmark = pytest.mark.anyio

SCALE = 0.01
HOOK_SECRET = "test-webhook-secret-0123456789"
APP_TOKEN = "test-app-token"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
VALID = {"prompt": "a paper lantern drifting over a dark lake"}


def scaled_client() -> HailuoClient:
    """A client for the fake's time scale; key and base URL come from the environment."""
    return HailuoClient(
        poll_policy=PollPolicy().scaled(SCALE),
        retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05, not_found_grace=0.2),
        limits=Limits(rate_window=60 * SCALE),
    )


def load_example() -> ModuleType:
    """A fresh import of examples/fastapi_app.py (a new ``app`` each time)."""
    spec = importlib.util.spec_from_file_location("fastapi_app_under_test", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (known before the app starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server in a task; yield its base URL."""
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        log_level="warning",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            with anyio.fail_after(5):
                while True:
                    if server.started:
                        break
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 30 service seconds (0.3 s)."""
    async with FakeHailuoServer(time_scale=SCALE, seed=11, job_duration=Fixed(30)) as server:
        yield server


@pytest.fixture
def example(fake: FakeHailuoServer, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example service, configured through its environment variables for the fake."""
    monkeypatch.setenv("HAILUO_API_KEY", fake.api_key)
    monkeypatch.setenv("HAILUO_BASE_URL", fake.url)
    monkeypatch.setenv("VIDEO_APP_TOKEN", APP_TOKEN)
    monkeypatch.delenv("HAILUO_WEBHOOK_URL", raising=False)
    module = load_example()
    monkeypatch.setattr(module, "make_client", scaled_client)
    return module


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, sending the example's bearer token (other apps ignore it)."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10),
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    ) as session:
        yield session


async def read_sse(http: aiohttp.ClientSession, url: str) -> list[tuple[str, dict[str, Any]]]:
    """Read a server-sent event stream to its end: (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind = "message"
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


# -- the example service -------------------------------------------------------------------


async def test_post_videos_submits_and_answers_202(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """A valid request is submitted once and answered 202 with its task id."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            assert response.status == 202
            body = await response.json()
    assert fake.task_ids == [body["task_id"]]
    assert fake.tasks[body["task_id"]].request.prompt == VALID["prompt"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "duration": 7}, "duration"),
        ({"prompt": "x", "resolution": "4K"}, "resolution"),
        ({"prompt": "x", "duration": 10, "resolution": "1080P"}, "resolution"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"duration": 6}, "prompt"),
        ({"prompt": "x", "image": "/etc/passwd"}, "image"),
        ({"prompt": "x", "end_image": "data:image/png;base64,???"}, "end_image"),
        ({"prompt": "x", "fast_pretreatment": "yes"}, "fast_pretreatment"),
        ({"prompt": "x", "webhook_url": "http://elsewhere.example/"}, "webhook_url"),
        ({"prompt": "x", "seed": 1}, "seed"),
    ],
)
async def test_invalid_request_names_the_field_and_submits_nothing(
    example: ModuleType,
    fake: FakeHailuoServer,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    field: str,
) -> None:
    """A request breaking the library's rules answers 422 naming the field; nothing is sent."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=body) as response:
            assert response.status == 422
            detail = (await response.json())["detail"]
    assert detail[0]["loc"] == ["body", field]
    assert fake.stats.submission_attempts == 0


@pytest.mark.parametrize("raw", [b"[1, 2]", b"{not json", b'"prompt"'])
async def test_body_that_is_not_an_object_is_422(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession, raw: bytes
) -> None:
    """Bodies that are not a JSON object are refused before anything is submitted."""
    async with serving(example.app) as base:
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{base}/videos", data=raw, headers=headers) as response:
            assert response.status == 422
    assert fake.stats.submission_attempts == 0


async def test_get_status_and_unknown_task(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """GET /videos/{id} answers the status; an unknown id is 404."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        async with http.get(f"{base}/videos/{task_id}") as response:
            assert response.status == 200
            status = await response.json()
        async with http.get(f"{base}/videos/nope") as response:
            assert response.status == 404
    assert status["task_id"] == task_id
    assert status["status"] in ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING")
    assert status["done"] is False


async def test_events_stream_progress_until_done(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """The SSE stream starts with the current status and ends with 'done' and the video."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        with anyio.fail_after(5):
            events = await read_sse(http, f"{base}/videos/{task_id}/events")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status"
    assert kinds[-1] == "done"
    assert kinds.count("done") == 1
    final = events[-1][1]
    assert final["ok"] is True
    assert final["video_url"].startswith(fake.storage_url)
    assert all(data["task_id"] == task_id for _, data in events)


async def test_events_of_ended_and_unknown_tasks(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """An ended task streams one 'done' event; an unknown one is 404 before any stream."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        await anyio.sleep(fake.tasks[task_id].finished_at - time.monotonic() + 0.02)
        events = await read_sse(http, f"{base}/videos/{task_id}/events")
        async with http.get(f"{base}/videos/nope/events") as response:
            assert response.status == 404
    assert [kind for kind, _ in events] == ["done"]


async def test_a_task_submitted_elsewhere_is_unknown_here_and_costs_nothing(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """A task the app did not submit: 404 for its status and its events, and no GET."""
    async with scaled_client() as client:
        task_id = await client.submit(VideoRequest(prompt="made elsewhere"))
    async with serving(example.app) as base:
        async with http.get(f"{base}/videos/{task_id}") as response:
            assert response.status == 404
        async with http.get(f"{base}/videos/{task_id}/events") as response:
            assert response.status == 404
    assert fake.stats.polls_total == 0


async def test_reads_cost_the_account_nothing(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """100 reads of an ended task, 50 of unknown ids, 30 event streams: 0 API requests."""
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        with anyio.fail_after(10):
            while True:  # the app's own watch, to the end: the polls it needs anyway
                async with http.get(f"{base}/videos/{task_id}") as response:
                    if (await response.json())["done"]:
                        break
                await anyio.sleep(0.05)
        polls = fake.stats.polls_total
        for _ in range(100):
            async with http.get(f"{base}/videos/{task_id}") as response:
                assert response.status == 200
                assert (await response.json())["ok"] is True
        for n in range(50):
            async with http.get(f"{base}/videos/unknown-{n}") as response:
                assert response.status == 404
        streams = [await read_sse(http, f"{base}/videos/{task_id}/events") for _ in range(30)]
        assert fake.stats.polls_total == polls
    assert all([kind for kind, _ in events] == ["done"] for events in streams)


async def test_a_running_task_is_answered_from_what_the_watcher_holds(
    example: ModuleType,
    fake: FakeHailuoServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the watcher's first poll, reads answer "queued" from memory: no GET at all."""
    client = scaled_client()
    # The first poll comes long after the test: every read here is the app's memory.
    client.poll_policy = attrs.evolve(
        client.poll_policy, first_poll_delay=3000.0, max_interval=3000.0
    )
    monkeypatch.setattr(example, "make_client", lambda: client)
    async with serving(example.app) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        for _ in range(20):
            async with http.get(f"{base}/videos/{task_id}") as response:
                status = await response.json()
        assert fake.stats.polls_total == 0
    assert status["task_id"] == task_id
    assert status["done"] is False
    assert status["status"] == "TASK_STATUS_QUEUED"


async def test_the_example_s_routes_need_its_token(
    example: ModuleType, fake: FakeHailuoServer
) -> None:
    """Without the bearer token (or with a wrong one) the /videos routes answer 401."""
    async with serving(example.app) as base, aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            async with anonymous.post(f"{base}/videos", json=VALID, headers=headers) as answer:
                assert answer.status == 401
                assert answer.headers["WWW-Authenticate"] == "Bearer"
            async with anonymous.get(f"{base}/videos/x", headers=headers) as answer:
                assert answer.status == 401
            async with anonymous.get(f"{base}/videos/x/events", headers=headers) as answer:
                assert answer.status == 401
    assert fake.stats.submission_attempts == 0


async def test_webhooks_end_jobs_without_polling(
    example: ModuleType,
    fake: FakeHailuoServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HAILUO_WEBHOOK_URL set, a job ends by push: its only GET is the confirmation of
    the event (the stream answers from the app's watcher)."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    monkeypatch.setenv("HAILUO_WEBHOOK_URL", f"http://127.0.0.1:{port}/hailuo/webhook")
    monkeypatch.setenv("HAILUO_WEBHOOK_SECRET", HOOK_SECRET)
    # However slow a loaded machine is: the gateway waits for the 202 (no retried delivery)
    # and the watcher's backstop poll (4 max_interval) comes long after the test is over.
    monkeypatch.setattr(fake, "config", attrs.evolve(fake.config, webhook_timeout=3000.0))
    client = scaled_client()
    client.poll_policy = attrs.evolve(client.poll_policy, max_interval=60.0)
    monkeypatch.setattr(example, "make_client", lambda: client)
    async with serving(example.app, sock) as base:
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        with anyio.fail_after(30):
            events = await read_sse(http, f"{base}/videos/{task_id}/events")
            # The stream may have seen the end before the app's watch did: wait for that.
            while client._state.push.is_wanted(task_id):  # noqa: ASYNC110 - no event tells
                await anyio.sleep(0.01)
    assert fake.tasks[task_id].request.extra == {
        "webhook": {"url": f"http://127.0.0.1:{port}/hailuo/webhook/{HOOK_SECRET}"}
    }
    assert events[-1][0] == "done"
    assert events[-1][1]["ok"] is True
    assert client._webhooks.confirmed == 1  # the watch was ended by the push
    assert fake.stats.webhooks_sent == 1
    assert fake.stats.polls_by_task[task_id] == 1


async def test_webhook_route_is_fast_strict_and_idempotent(
    example: ModuleType,
    fake: FakeHailuoServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Garbage gets 400 naming the field; replays of one event all get 202 and cost one GET."""
    # The gateway cannot reach this hook (nothing listens there): the test pushes by hand.
    monkeypatch.setenv("HAILUO_WEBHOOK_URL", "http://127.0.0.1:9/hailuo/webhook")
    monkeypatch.setenv("HAILUO_WEBHOOK_SECRET", HOOK_SECRET)
    # The watcher's backstop poll (4 max_interval) comes long after the test is over.
    client = scaled_client()
    client.poll_policy = attrs.evolve(client.poll_policy, max_interval=60.0)
    monkeypatch.setattr(example, "make_client", lambda: client)
    async with serving(example.app) as base:
        hook = f"{base}/hailuo/webhook/{HOOK_SECRET}"
        async with http.post(f"{base}/videos", json=VALID) as response:
            task_id = (await response.json())["task_id"]
        async with http.post(hook, data=b"{oops") as response:
            assert response.status == 400
            assert (await response.json())["field"] == "body"
        async with http.post(hook, json={"event_type": WEBHOOK_EVENT_TYPE}) as response:
            assert response.status == 400
            assert (await response.json())["field"] == "payload"
        await anyio.sleep(fake.tasks[task_id].finished_at - time.monotonic() + 0.02)
        event = {
            "event_type": WEBHOOK_EVENT_TYPE,
            "payload": {"task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}},
        }
        for _ in range(3):
            started = time.monotonic()
            async with http.post(hook, json=event) as response:
                assert response.status == 202
            assert time.monotonic() - started < 5.0
        with anyio.fail_after(30):
            events = await read_sse(http, f"{base}/videos/{task_id}/events")
            # The confirmation runs after the 202: wait for it to end the watch.
            while client._state.push.is_wanted(task_id):  # noqa: ASYNC110 - no event tells
                await anyio.sleep(0.01)
    assert events == [("done", events[0][1])]
    assert client._webhooks.confirmed == 1
    # One confirmation for three deliveries, and the stream's own first look.
    assert fake.stats.polls_by_task[task_id] == 1


# -- the library's pieces in an app of one's own -------------------------------------------


async def test_lifespan_opens_one_client_and_closes_it(
    fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """Routes share the lifespan's client; on shutdown it and its watcher are closed."""
    seen: list[HailuoState] = []
    app = FastAPI(
        lifespan=hailuo_lifespan(
            lambda: HailuoClient(
                fake.api_key, base_url=fake.url, limits=Limits(rate_window=60 * SCALE)
            )
        )
    )
    app.include_router(webhook_router(path="/hook"))

    @app.get("/which")
    async def which(hailuo: Hailuo, client: HailuoClient = Depends(get_client)) -> dict[str, int]:  # noqa: B008
        seen.append(hailuo)
        assert client is hailuo.client
        return {"client": id(client)}

    async with serving(app) as base:
        answers = []
        for _ in range(3):
            async with http.get(f"{base}/which") as response:
                answers.append((await response.json())["client"])
        state = seen[0]
    assert len(set(answers)) == 1
    assert all(s is state for s in seen)
    assert state.client._transport._session is None


async def test_dependency_outside_the_lifespan_is_an_error(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A route asking for the client in an app without the lifespan fails clearly (500)."""
    app = FastAPI()

    @app.get("/client")
    async def client_route(client: HailuoClient = Depends(get_client)) -> str:  # noqa: B008
        return repr(client)

    with caplog.at_level(logging.ERROR):
        async with serving(app) as base, http.get(f"{base}/client") as response:
            assert response.status == 500
    assert "hailuo_lifespan" in caplog.text


async def test_open_hailuo_submit_adds_the_webhook(fake: FakeHailuoServer) -> None:
    """HailuoState.submit gives jobs the app's webhook and watches them as pushed."""
    hook = "http://127.0.0.1:9/hook"
    async with open_hailuo(
        lambda: HailuoClient(fake.api_key, base_url=fake.url),
        webhook_url=hook,
        webhook_secret=HOOK_SECRET,
    ) as state:
        task_id = await state.submit(VideoRequest(prompt="a kite"))
        assert task_id in state.watcher
        assert state.watcher._watched[task_id].pushed
    assert fake.tasks[task_id].request.extra == {"webhook": {"url": f"{hook}/{HOOK_SECRET}"}}


async def test_result_json_is_plain_data(fake: FakeHailuoServer) -> None:
    """result_json gives JSON-ready data for a finished task."""
    async with scaled_client_for(fake) as client:
        result = await client.generate(VideoRequest(prompt="a kite"))
    data = result_json(result)
    assert json.loads(json.dumps(data)) == data
    assert data["done"] is True
    assert data["video_url"] == result.videos[0].url


def scaled_client_for(fake: FakeHailuoServer) -> HailuoClient:
    """A scaled client pointed at ``fake`` explicitly."""
    return HailuoClient(
        fake.api_key,
        base_url=fake.url,
        poll_policy=PollPolicy().scaled(SCALE),
        limits=Limits(rate_window=60 * SCALE),
    )


async def test_webhook_errors_match_the_aiohttp_receiver(
    example: ModuleType, fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """The FastAPI route and the aiohttp handler answer bad bodies with the same status and JSON."""
    bad_bodies = [b"{oops", b"[]", json.dumps({"event_type": WEBHOOK_EVENT_TYPE}).encode()]
    answers: dict[str, list[tuple[int, Any]]] = {"fastapi": [], "aiohttp": []}
    async with serving(example.app) as base:
        for body in bad_bodies:
            async with http.post(f"{base}/hailuo/webhook", data=body) as response:
                answers["fastapi"].append((response.status, await response.json()))
    async with scaled_client_for(fake) as client:
        hook = aiohttp_handler(client)
        app = web.Application()
        app.router.add_post("/hailuo/webhook", hook)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/hailuo/webhook"
            for body in bad_bodies:
                async with http.post(url, data=body) as response:
                    answers["aiohttp"].append((response.status, await response.json()))
        finally:
            await runner.cleanup()
    assert answers["fastapi"] == answers["aiohttp"]
    assert [status for status, _ in answers["aiohttp"]] == [400, 400, 400]
    assert all(set(body) == {"detail", "field"} for _, body in answers["aiohttp"])


async def test_forged_deliveries_get_404_and_cost_no_get(
    fake: FakeHailuoServer, http: aiohttp.ClientSession
) -> None:
    """With the secret on (the default), a wrong or missing one gets 404 and no GET; the
    right one is confirmed with one."""
    app = FastAPI(
        lifespan=hailuo_lifespan(
            lambda: HailuoClient(fake.api_key, base_url=fake.url),
            webhook_url="http://127.0.0.1:9/hailuo/webhook",
            webhook_secret=HOOK_SECRET,
        )
    )
    app.include_router(webhook_router())
    watched = str(uuid.uuid4())

    @app.post("/watch")
    async def watch(hailuo: Hailuo) -> None:
        # Pushed: its first backstop poll is minutes away, so every GET is a confirmation.
        hailuo.watcher.add(watched, submitted_at=time.monotonic(), pushed=True)

    event = {
        "event_type": WEBHOOK_EVENT_TYPE,
        "payload": {"task": {"task_id": watched, "status": "TASK_STATUS_SUCCEED"}},
    }
    async with serving(app) as base:
        async with http.post(f"{base}/watch") as response:
            assert response.status == 200
        for path in ("", "/", "/wrong-secret-0123456789", f"/{HOOK_SECRET}x", "/a/b"):
            async with http.post(f"{base}/hailuo/webhook{path}", json=event) as response:
                assert response.status == 404, path
        await anyio.sleep(0.05)
        assert fake.stats.polls_total == 0, "no forged delivery cost a GET"
        async with http.post(f"{base}/hailuo/webhook/{HOOK_SECRET}", json=event) as response:
            assert response.status == 202
        with anyio.fail_after(5):
            while fake.stats.polls_total == 0:  # noqa: ASYNC110 - the fake has no event for it
                await anyio.sleep(0.005)
    assert fake.stats.polls_total == 1
