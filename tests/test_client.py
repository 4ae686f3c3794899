"""HailuoClient against the fake service (in-process) and tiny aiohttp apps (on loopback ports)."""

from __future__ import annotations

import json
import random
import struct
import time
import zlib
from functools import partial
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from clientutil import FAST_POLL, FAST_RETRY, answered_by, fake_client, serve
from clientutil import client_for as base_client_for

from hailuo_async import (
    DEFAULT_BASE_URL,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    HailuoClient,
    InternalServerError,
    InvalidRequestError,
    PollPolicy,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    Timeouts,
    VideoRequest,
    WaitTimeoutError,
)
from hailuo_async._polling import DurationStats, PollSchedule
from hailuo_async.providers._gateway import gateway_body
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed
from hailuo_async.testing.pytest_plugin import FakeHailuoFactory

pytestmark = pytest.mark.anyio

KEY = "test-key-123"
REQUEST = VideoRequest(prompt="a red fox trotting through fresh snow")

client_for = partial(base_client_for, api_key=KEY, poll_policy=FAST_POLL)


def task_answer(task_id: str, status: str, **task: Any) -> dict[str, Any]:
    """A task-result body for ``task_id`` with ``status`` and any other task fields."""
    return {"task": {"task_id": task_id, "status": status, **task}, "videos": [], "extra": {}}


def big_png(size: int) -> bytes:
    """A PNG of about ``size`` bytes (a valid header, then padding the sniffer ignores)."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + header) & 0xFFFFFFFF
    start = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", crc)
    return start + random.Random(1).randbytes(size - len(start))


# -- construction ------------------------------------------------------------------------------


async def test_key_and_base_url_come_from_the_environment(
    fake_hailuo: FakeHailuoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HAILUO_API_KEY and HAILUO_BASE_URL configure a client made without arguments."""
    monkeypatch.setenv("HAILUO_API_KEY", fake_hailuo.api_key)
    monkeypatch.setenv("HAILUO_BASE_URL", fake_hailuo.url + "/")
    transport = fake_hailuo.transport()
    async with HailuoClient(retry_policy=FAST_RETRY, transport=transport) as client:
        assert client.base_url == fake_hailuo.url
        task_id = await client.submit(REQUEST)
    assert fake_hailuo.task_ids == [task_id]


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit key and base URL win over the variables."""
    monkeypatch.setenv("HAILUO_API_KEY", "from-env")
    monkeypatch.setenv("HAILUO_BASE_URL", "https://env.example.com")
    client = HailuoClient("explicit", base_url="https://arg.example.com/")
    assert client.base_url == "https://arg.example.com"
    assert client._api._api_key == "explicit"


def test_default_base_url_is_the_public_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without argument or variable the base URL is https://api.highwayapi.ai."""
    monkeypatch.delenv("HAILUO_BASE_URL", raising=False)
    assert DEFAULT_BASE_URL == "https://api.highwayapi.ai"
    assert HailuoClient("k").base_url == DEFAULT_BASE_URL


def test_a_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key argument or HAILUO_API_KEY the client refuses to start."""
    monkeypatch.delenv("HAILUO_API_KEY", raising=False)
    with pytest.raises(InvalidRequestError) as info:
        HailuoClient()
    assert info.value.field == "api_key"
    assert "HAILUO_API_KEY" in str(info.value)


async def test_the_client_owns_one_session_and_closes_it(fake_hailuo: FakeHailuoServer) -> None:
    """Requests share one aiohttp session, closed on exit; a closed client can open a new one."""
    client = fake_client(fake_hailuo)
    async with client:
        task_id = await client.submit(REQUEST)
        session = open_session(client)
        assert session is not None
        await client.get_task(task_id)
        assert open_session(client) is session
    assert session.closed
    assert open_session(client) is None
    await client.get_task(task_id)
    await client.aclose()
    await client.aclose()


def open_session(client: HailuoClient) -> aiohttp.ClientSession | None:
    """The client's current aiohttp session, if it has one."""
    return client._transport._session


# -- submit, get_task, wait, generate ----------------------------------------------------------


async def test_submit_sends_the_request(fake_hailuo: FakeHailuoServer) -> None:
    """submit returns the fake's task id, and the fake got every field as given."""
    request = VideoRequest(
        prompt="a lighthouse at dusk",
        image="https://example.com/first.png",
        duration=10,
        enable_prompt_expansion=False,
        fast_pretreatment=True,
        webhook_url="https://hooks.example.com/done",
    )
    async with fake_client(fake_hailuo) as client:
        task_id = await client.submit(request)
    sent = fake_hailuo.tasks[task_id].request
    assert (sent.prompt, sent.image, sent.duration, sent.resolution) == (
        "a lighthouse at dusk",
        "https://example.com/first.png",
        10,
        "768P",
    )
    assert (sent.enable_prompt_expansion, sent.fast_pretreatment) == (False, True)
    assert sent.extra == {"webhook": {"url": "https://hooks.example.com/done"}}
    assert fake_hailuo.stats.submission_attempts == 1


async def test_submit_sends_a_large_inline_image(fake_hailuo: FakeHailuoServer) -> None:
    """A request with a multi-megabyte image is sent whole (and without a warning)."""
    image = big_png(3 * 1024 * 1024)
    async with fake_client(fake_hailuo) as client:
        task_id = await client.submit(VideoRequest(prompt="p", image=image, end_image=image))
    sent = fake_hailuo.tasks[task_id].request
    assert sent.image == VideoRequest(prompt="p", image=image).image


async def test_submit_takes_only_a_video_request(fake_hailuo: FakeHailuoServer) -> None:
    """Passing a dict to submit is a TypeError, and nothing is sent."""
    async with fake_client(fake_hailuo) as client:
        with pytest.raises(TypeError):
            await client.submit({"prompt": "p"})  # type: ignore[arg-type]
    assert fake_hailuo.stats.submission_attempts == 0


@pytest.mark.parametrize("task_id", ["", "   ", "a\nb", "x" * 300])
async def test_bad_task_ids_are_refused_before_sending(
    fake_hailuo: FakeHailuoServer, task_id: str
) -> None:
    """get_task and wait refuse an empty, multi-line or overlong task id locally."""
    async with fake_client(fake_hailuo) as client:
        with pytest.raises(InvalidRequestError):
            await client.get_task(task_id)
        with pytest.raises(InvalidRequestError):
            await client.wait(task_id, timeout=1)
    assert fake_hailuo.stats.polls_total == 0


async def test_get_task_reads_a_running_task(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """A poll right after submission sees a queued task with an eta and no video."""
    async with fake_hailuo_factory(time_scale=0.01, job_duration=Fixed(100)) as server:
        async with fake_client(server) as client:
            task_id = await client.submit(REQUEST)
            result = await client.get_task(task_id)
    assert result.task_id == task_id
    assert result.status is TaskStatus.QUEUED
    assert result.raw_status == "TASK_STATUS_QUEUED"
    assert not result.is_done
    assert not result.ok
    assert result.eta is not None
    assert 0 < result.eta <= 1.5
    assert result.progress_percent == 0
    assert result.videos == ()
    assert result.extra["seed"].isdigit()


async def test_wait_returns_the_finished_result(fake_hailuo: FakeHailuoServer) -> None:
    """wait polls until SUCCEED and returns the result with its video."""
    async with fake_client(fake_hailuo) as client:
        task_id = await client.submit(REQUEST)
        result = await client.wait(task_id, timeout=10)
    assert result.ok
    assert result.is_done
    assert result.status is TaskStatus.SUCCEED
    assert result.progress_percent == 100
    (video,) = result.videos
    assert video.url.startswith(fake_hailuo.storage_url)
    assert video.video_type == "mp4"
    assert video.ttl == pytest.approx(3600 * 0.001)
    assert video.expires_at is not None


async def test_generate_submits_waits_and_reports_progress(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """generate returns the finished result; sync and async callbacks see each move once."""
    seen: list[TaskResult] = []
    seen_async: list[TaskResult] = []

    async def on_progress_async(result: TaskResult) -> None:
        await anyio.lowlevel.checkpoint()
        seen_async.append(result)

    async with fake_hailuo_factory(time_scale=0.005, job_duration=Fixed(100)) as server:
        async with fake_client(server) as client:
            result = await client.generate(REQUEST, timeout=10, on_progress=seen.append)
            again = await client.generate(REQUEST, timeout=10, on_progress=on_progress_async)
    assert result.ok
    assert again.ok
    for history in (seen, seen_async):
        assert history[-1].status is TaskStatus.SUCCEED
        moves = [(r.status, r.progress_percent) for r in history]
        assert len(moves) == len(set(moves))
        assert TaskStatus.PROCESSING in {r.status for r in history}
    assert server.stats.submissions_accepted == 2


async def test_a_failed_task_raises_task_failed_error(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """A task that ends FAILED raises TaskFailedError carrying its result and reason."""
    async with fake_hailuo_factory(failure_rate=1.0) as server:
        async with fake_client(server) as client:
            with pytest.raises(TaskFailedError) as info:
                await client.generate(REQUEST, timeout=10)
    error = info.value
    assert error.result.status is TaskStatus.FAILED
    assert error.result.reason
    assert error.task_id == error.result.task_id == server.task_ids[0]
    assert error.result.reason in str(error)


async def test_wait_timeout_carries_the_task_and_its_last_result(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """A wait that runs out raises WaitTimeoutError with the task id and the last answer."""
    async with fake_hailuo_factory(time_scale=0.01, job_duration=Fixed(1000)) as server:
        async with fake_client(server) as client:
            task_id = await client.submit(REQUEST)
            started = time.monotonic()
            with pytest.raises(WaitTimeoutError) as info:
                await client.wait(task_id, timeout=0.2)
            elapsed = time.monotonic() - started
            with pytest.raises(WaitTimeoutError) as generated:
                await client.generate(REQUEST, timeout=0.2)
    assert elapsed >= 0.2  # and the job (10 s) is still queued: see the last assertion
    error = info.value
    assert isinstance(error, TimeoutError)
    assert error.task_id == task_id
    assert error.timeout == 0.2
    assert error.last_result is not None
    assert error.last_result.task_id == task_id
    assert error.last_result.status is TaskStatus.QUEUED
    assert task_id in str(error)
    assert generated.value.task_id == server.task_ids[1]
    assert server.task_status(task_id) == "TASK_STATUS_QUEUED"


async def test_wait_polls_near_the_eta_not_on_a_short_beat(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """With an eta to go on, a one-second job is polled a handful of times, not fifty."""
    policy = PollPolicy(first_poll_delay=0.1, min_interval=0.02, max_interval=2.0)
    async with fake_hailuo_factory(
        time_scale=0.01, job_duration=Fixed(100), eta_error=0.0
    ) as server:
        async with fake_client(server, poll_policy=policy) as client:
            started = time.monotonic()
            result = await client.generate(REQUEST, timeout=10)
            elapsed = time.monotonic() - started
    assert result.ok
    assert elapsed > 0.95  # not before the job ended; how late depends on the machine's load
    assert server.stats.polls_total <= 8


def test_poll_schedule_backs_off_without_an_eta() -> None:
    """Without eta or progress the waits grow geometrically up to max_interval."""
    policy = PollPolicy(first_poll_delay=5, min_interval=1, max_interval=10, backoff=2, jitter=0)
    schedule = PollSchedule(policy)
    blind = TaskResult(task_id="t", status=TaskStatus.QUEUED)
    assert schedule.first_delay() == 5
    assert [schedule.next_delay(blind) for _ in range(6)] == [1, 2, 4, 8, 10, 10]


def test_poll_schedule_follows_the_eta_within_bounds() -> None:
    """An eta sets the next wait, clamped to [min_interval, max_interval] and jittered."""
    policy = PollPolicy(min_interval=1, max_interval=30, jitter=0.1, eta_fraction=1.0)
    schedule = PollSchedule(policy, rng=random.Random(0))
    for eta, low, high in [(12.0, 10.8, 13.2), (500.0, 27.0, 33.0)]:
        result = TaskResult(task_id="t", status=TaskStatus.PROCESSING, eta=eta)
        for _ in range(50):
            assert low <= schedule.next_delay(result) <= high
    # An eta under min_interval gives way to min_interval.
    soon = TaskResult(task_id="t", status=TaskStatus.PROCESSING, eta=0.2)
    assert 0.9 <= PollSchedule(policy).next_delay(soon) <= 1.1
    # Progress alone predicts the rest: 25 % done after 10 s leaves about 30 s.
    progressed = TaskResult(task_id="t", status=TaskStatus.PROCESSING, progress_percent=25)
    assert 27.0 <= schedule.next_delay(progressed, elapsed=10.0) <= 33.0


def test_poll_schedule_aims_short_of_the_eta() -> None:
    """With eta_fraction 0.7 the next poll comes at 70 % of the eta, so a long eta costs less."""
    policy = PollPolicy(min_interval=1, max_interval=300, jitter=0.0, eta_fraction=0.7)
    result = TaskResult(task_id="t", status=TaskStatus.PROCESSING, eta=100.0)
    assert PollSchedule(policy).next_delay(result) == pytest.approx(70.0)


def test_durations_are_learnt_from_the_service_estimate() -> None:
    """A job seen done is recorded at the end its last eta predicted, not when it was seen."""
    history = DurationStats()
    for _ in range(5):
        schedule = PollSchedule(PollPolicy(jitter=0.0), history=history)
        schedule.next_delay(
            TaskResult(task_id="t", status=TaskStatus.PROCESSING, eta=20.0), elapsed=10.0
        )
        schedule.ended(45.0)
    assert history.quantile(0.5) == pytest.approx(30.0)


def test_jobs_done_at_the_first_poll_pull_first_polls_earlier() -> None:
    """Jobs already ended at their first poll are recorded at half that time."""
    history = DurationStats()
    for _ in range(5):
        PollSchedule(PollPolicy(), history=history).ended(10.0)
    assert history.quantile(0.5) == pytest.approx(5.0)


# -- odd answers -------------------------------------------------------------------------------


async def test_unknown_statuses_are_tolerated() -> None:
    """TASK_STATUS_CANCELED reads as UNKNOWN with the raw value; wait times out calmly."""
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response(task_answer("t-1", "TASK_STATUS_CANCELED", eta=0))

    async with answered_by(handler, client_for) as client:
        result = await client.get_task("t-1")
        assert result.status is TaskStatus.UNKNOWN
        assert result.raw_status == "TASK_STATUS_CANCELED"
        assert not result.is_done
        hits = 0
        with pytest.raises(WaitTimeoutError) as info:
            await client.wait("t-1", timeout=0.3)
    last = info.value.last_result
    assert last is not None
    assert last.raw_status == "TASK_STATUS_CANCELED"
    assert hits <= 8


@pytest.mark.parametrize("task_id", ["plain-id_1.v~2", "an id&with=odd/chars?é%41"])
async def test_a_poll_names_its_task_exactly(task_id: str) -> None:
    """A plain id and one that needs quoting both reach the service as given, once each."""
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, request.query["task_id"]))
        return web.json_response(task_answer(request.query["task_id"], "TASK_STATUS_QUEUED"))

    async with answered_by(handler, client_for) as client:
        result = await client.get_task(task_id)
    assert result.task_id == task_id
    assert seen == [("/v3/async/task-result", task_id)]


async def test_numbers_as_strings_over_the_wire() -> None:
    """eta, progress and TTL sent as strings are parsed."""
    body = task_answer("t-1", "TASK_STATUS_SUCCEED", eta="0", progress_percent="100")
    body["videos"] = [{"video_url": "https://s.example.com/v.mp4", "video_url_ttl": "3600"}]
    body["extra"] = {"seed": "42", "debug_info": {"submit_time_ms": "1700000000000"}}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    async with answered_by(handler, client_for) as client:
        result = await client.get_task("t-1")
    assert result.ok
    assert result.eta == 0
    assert result.progress_percent == 100
    assert result.videos[0].ttl == 3600
    assert result.extra["seed"] == "42"


async def test_malformed_json_is_retried_then_reported() -> None:
    """A 200 with broken JSON is retried; if it stays broken, APIResponseValidationError."""
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(text='{"task": {"status": "TASK_ST', content_type="application/json")

    async with answered_by(handler, client_for, max_retries=2) as client:
        with pytest.raises(APIResponseValidationError) as info:
            await client.get_task("t-1")
    assert hits == 3
    assert info.value.status_code == 200
    assert "t-1" in str(info.value)
    assert info.value.body == '{"task": {"status": "TASK_ST'


async def test_malformed_json_faults_are_ridden_out(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """With a third of the answers truncated by the fake, resubmitting jobs still finish."""
    async with fake_hailuo_factory(faults=Faults(malformed_json=0.3), seed=3) as server:
        async with fake_client(server, max_retries=10, on_unknown_submission="resubmit") as client:
            results = [await client.generate(REQUEST, timeout=10) for _ in range(3)]
    assert all(result.ok for result in results)
    assert server.stats.faults_injected["malformed_json"] > 0
    assert server.stats.polls_total > len(server.stats.polls_by_task)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_answer_is_refused_with_a_typed_error(chunked: bool) -> None:
    """A body over max_response_bytes raises APIResponseValidationError, declared or streamed."""
    hits = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        if not chunked:
            return web.Response(body=b"x" * 300_000, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(30):
            await response.write(b"y" * 10_000)
        await response.write_eof()
        return response

    async with (
        answered_by(handler, client_for, max_retries=0, max_response_bytes=100_000) as client,
    ):
        with pytest.raises(APIResponseValidationError) as info:
            await client.get_task("t-1")
    assert hits == 1
    assert "100000" in str(info.value)


async def test_a_huge_error_body_keeps_its_status() -> None:
    """A 503 with a giant HTML page is still an InternalServerError, with the body cut short."""

    async def handler(request: web.Request) -> web.Response:
        page = "<html>" + "overloaded " * 100_000 + "</html>"
        return web.Response(status=503, text=page, content_type="text/html")

    async with (
        answered_by(handler, client_for, max_retries=0, max_response_bytes=100_000) as client,
    ):
        with pytest.raises(InternalServerError) as info:
            await client.get_task("t-1")
    assert info.value.status_code == 503
    assert isinstance(info.value.body, str)
    assert len(info.value.body) <= 2001


# -- timeouts and connections ------------------------------------------------------------------


async def test_a_slow_poll_times_out(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """Timeouts(total=...) bounds each attempt; a poll held back raises APITimeoutError."""
    async with fake_hailuo_factory(faults=Faults(slow=1.0, slow_seconds=2.0)) as server:
        async with fake_client(server) as patient:
            task_id = await patient.submit(REQUEST)
        async with fake_client(server, timeout=Timeouts(total=0.1), max_retries=1) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError) as info:
                await client.get_task(task_id)
            elapsed = time.monotonic() - started
    assert isinstance(info.value, APIConnectionError)
    assert info.value.method == "GET"
    assert server.stats.polls_by_task[task_id] == 2
    # Each attempt was cut at 0.1 s: had one waited the 2 s, its answer would have come.
    assert elapsed >= 0.2


async def test_a_plain_float_timeout_is_the_total() -> None:
    """timeout=0.2 bounds a request as Timeouts(total=0.2) does."""

    async def handler(request: web.Request) -> web.Response:
        await anyio.sleep(10)
        return web.json_response({})

    async with serve(handler) as url, client_for(url, timeout=0.2, max_retries=0) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.get_task("t-1")
    assert time.monotonic() - started < 10.0  # did not wait for the answer


async def test_a_refused_connection_is_an_api_connection_error() -> None:
    """Nothing listening: APIConnectionError with request_sent False, after the retries."""
    async with serve(_never) as url:
        pass  # the port is free again once the app is gone
    async with client_for(url, max_retries=2) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.get_task("t-1")
        with pytest.raises(APIConnectionError) as submitted:
            await client.submit(REQUEST)
    assert not isinstance(info.value, APITimeoutError)
    assert info.value.request_sent is False
    assert submitted.value.request_sent is False


async def _never(request: web.Request) -> web.Response:
    raise AssertionError("no request should arrive")


async def test_answers_of_other_tasks_are_refused() -> None:
    """An answer about another task id is not taken for this one."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(task_answer("someone-else", "TASK_STATUS_QUEUED"))

    async with answered_by(handler, client_for, max_retries=0) as client:
        with pytest.raises(APIResponseValidationError, match="someone-else"):
            await client.get_task("t-1")


async def test_submit_sends_json_with_bearer_auth() -> None:
    """A submission is a JSON POST to the submit path, with the key as a Bearer token."""
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.headers), await request.json()))
        return web.json_response({"task_id": "new-task"})

    async with answered_by(handler, client_for) as client:
        assert await client.submit(REQUEST) == "new-task"
    ((method, path, headers, body),) = seen
    assert (method, path) == ("POST", "/v3/async/minimax-hailuo-02")
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"].startswith("application/json")
    assert body == gateway_body(REQUEST)
    assert json.loads(json.dumps(body)) == body


async def test_wait_returns_a_result_that_ended_before_the_deadline() -> None:
    """A deadline that falls during on_progress does not hide a task that had ended."""

    async def handler(request: web.Request) -> web.Response:
        body = {"task": {"task_id": "t-1", "status": "TASK_STATUS_FAILED", "reason": "nsfw"}}
        return web.json_response(body)

    async def slow_progress(result: TaskResult) -> None:
        await anyio.sleep(1.0)

    async with answered_by(handler, client_for) as client:
        with pytest.raises(TaskFailedError) as info:
            await client.wait("t-1", timeout=0.1, on_progress=slow_progress)
    assert info.value.result.is_done
