"""The fake's MiniMax dialect over real sockets: answers, rules, limits, faults, callbacks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import anyio
import pytest
from aiohttp import web
from fakeutil import MINIMAX_BODY, MiniMaxApi, open_api, running, running_minimax, serving

from hailuo_async.testing import FakeHailuoConfig, FakeHailuoServer, Faults, Fixed, sample_video
from hailuo_async.testing.__main__ import build_parser, config_from_args

pytestmark = pytest.mark.anyio

M02 = "MiniMax-Hailuo-02"
IMAGE = "https://images.example/first.png"
OK = {"status_code": 0, "status_msg": "success"}


async def _finished(api: MiniMaxApi, body: Any = MINIMAX_BODY) -> dict[str, Any]:
    """Submit ``body`` and return the task's final query answer."""
    return await api.wait_terminal(await api.create(body))


async def _retrieve_url(api: MiniMaxApi, file_id: str) -> str:
    reply = await api.retrieve(file_id)
    assert reply.status == 200, reply
    assert reply.json()["base_resp"] == OK, reply
    url: str = reply.json()["file"]["download_url"]
    return url


async def test_three_steps_make_a_downloadable_video() -> None:
    """Submit, query until Success, retrieve the file, download it from the storage host."""
    async with running_minimax() as api:
        submitted = await api.submit()
        assert submitted.status == 200
        answer = submitted.json()
        assert answer["base_resp"] == OK
        task_id = answer["task_id"]
        assert task_id.isdigit()
        assert len(task_id) == 15
        done = await api.wait_terminal(task_id)
        assert done["status"] == "Success"
        assert done["base_resp"] == OK
        assert done["task_id"] == task_id
        assert done["file_id"].isdigit()
        assert (done["video_width"], done["video_height"]) == (1366, 768)
        retrieved = (await api.retrieve(done["file_id"])).json()
        file = retrieved["file"]
        assert retrieved["base_resp"] == OK
        assert file["file_id"] == int(done["file_id"])
        assert file["purpose"] == "video_generation"
        assert file["bytes"] == len(sample_video())
        assert file["filename"].endswith(".mp4")
        assert isinstance(file["created_at"], int)
        assert file["download_url"].startswith(api.server.storage_url)
        video = await api.request("GET", file["download_url"])
        stats = api.server.stats
    assert video.status == 200
    assert video.body == sample_video()
    assert stats.submission_attempts == stats.submissions_accepted == 1
    assert stats.retrieves_total == 1
    assert stats.retrieves_by_task == {task_id: 1}
    assert stats.polls_by_task[task_id] == stats.polls_total
    assert stats.storage_downloads == 1
    assert stats.storage_authorization_headers == []
    assert stats.api_requests == 1 + stats.polls_total + 1
    assert sum(stats.requests_by_second.values()) == stats.api_requests
    assert stats.error_codes == {}


async def test_statuses_follow_the_schedule_in_minimax_words() -> None:
    """Preparing (first half of the queue), Queueing, Processing, then Success or Fail."""
    async with running_minimax(job_duration=Fixed(10_000)) as api:
        task = api.server.tasks[await api.create()]
        failing = api.server.tasks[
            await api.create({**MINIMAX_BODY, "prompt": "#output-sensitive"})
        ]
        dialect = api.server._service.dialect
    queue_middle = (task.created_at + task.started_at) / 2
    assert dialect.status_of(task, task.created_at) == "Preparing"
    assert dialect.status_of(task, queue_middle - 1e-6) == "Preparing"
    assert dialect.status_of(task, queue_middle) == "Queueing"
    assert dialect.status_of(task, task.started_at) == "Processing"
    assert dialect.status_of(task, task.finished_at) == "Success"
    assert dialect.status_of(failing, failing.finished_at) == "Fail"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        pytest.param(None, 1004, id="missing"),
        pytest.param("Basic ZmFrZQ==", 1004, id="other-scheme"),
        pytest.param("Bearer ", 1004, id="empty-key"),
        pytest.param("Bearer wrong-key", 2049, id="wrong-key"),
    ],
)
async def test_bad_credentials_are_answered_in_base_resp(
    authorization: str | None, code: int
) -> None:
    """A missing key is 1004, a wrong one 2049, in HTTP 200 answers; nothing is done."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with running_minimax() as api:
        done = await _finished(api)
        replies = [
            await api.request(
                "POST",
                api.server.url + "/v1/video_generation",
                headers={"Content-Type": "application/json", **headers},
                data=json.dumps(MINIMAX_BODY).encode(),
            ),
            await api.query(done["task_id"], headers=headers),
            await api.retrieve(done["file_id"], headers=headers),
        ]
        stats = api.server.stats
    for reply in replies:
        assert reply.status == 200
        assert reply.json()["base_resp"]["status_code"] == code
        assert reply.headers["Trace-Id"]
    assert replies[0].json()["task_id"] == ""
    assert replies[1].json()["status"] == ""
    assert replies[2].json()["file"] is None
    assert stats.submissions_accepted == 1
    assert stats.error_codes == {code: 3}
    assert stats.retrieves_by_task == {}


INVALID = [
    pytest.param({"prompt": "x"}, "model", id="no-model"),
    pytest.param({"model": "T2V-01", "prompt": "x"}, "model", id="unserved-model"),
    pytest.param(
        {"model": "MiniMax-Hailuo-2.3-Fast", "prompt": "x"}, "first_frame_image", id="fast-t2v"
    ),
    pytest.param(
        {
            "model": "MiniMax-Hailuo-2.3",
            "prompt": "x",
            "first_frame_image": IMAGE,
            "last_frame_image": IMAGE,
        },
        "last_frame_image",
        id="last-frame-on-2.3",
    ),
    pytest.param({"model": M02, "prompt": "x", "resolution": "512P"}, "resolution", id="512p-t2v"),
    pytest.param(
        {"model": M02, "prompt": "x", "duration": 10, "resolution": "1080P"},
        "resolution",
        id="1080p-10s",
    ),
    pytest.param({"model": M02, "prompt": "x", "resolution": "720P"}, "resolution", id="720p"),
    pytest.param({"model": M02, "prompt": "x", "duration": 7}, "duration", id="7s"),
    pytest.param({"model": M02, "prompt": "x", "duration": True}, "duration", id="bool-duration"),
    pytest.param({"model": M02}, "prompt", id="t2v-no-prompt"),
    pytest.param({"model": M02, "prompt": ""}, "prompt", id="t2v-empty-prompt"),
    pytest.param({"model": M02, "prompt": "x" * 2001}, "prompt", id="long-prompt"),
    pytest.param({"model": M02, "prompt": 3}, "prompt", id="number-prompt"),
    pytest.param(
        {"model": M02, "prompt": "x", "callback_url": "ftp://h/cb"}, "callback_url", id="ftp-cb"
    ),
    pytest.param(
        {"model": M02, "prompt": "x", "subject_reference": []},
        "subject_reference",
        id="subject-reference",
    ),
    pytest.param({"model": M02, "prompt": "x", "image": IMAGE}, "image", id="gateway-field"),
    pytest.param(
        {"model": M02, "prompt": "x", "prompt_optimizer": "yes"},
        "prompt_optimizer",
        id="string-optimizer",
    ),
    pytest.param(
        {"model": M02, "prompt": "x", "fast_pretreatment": 1},
        "fast_pretreatment",
        id="number-pretreatment",
    ),
    pytest.param(
        {"model": M02, "prompt": "x", "aigc_watermark": "no"}, "aigc_watermark", id="watermark"
    ),
    pytest.param(
        {"model": M02, "prompt": "x", "first_frame_image": "not a url"},
        "first_frame_image",
        id="bad-image",
    ),
    pytest.param([MINIMAX_BODY], "body", id="array"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
async def test_invalid_bodies_get_2013_naming_the_field(body: Any, field: str) -> None:
    """Each of MiniMax's request rules refuses with 2013, its message naming the field."""
    async with running_minimax() as api:
        reply = await api.submit(body)
        stats = api.server.stats
    answer = reply.json()
    assert reply.status == 200
    assert answer["task_id"] == ""
    assert answer["base_resp"]["status_code"] == 2013
    assert answer["base_resp"]["status_msg"].startswith(f"invalid params, {field}: ")
    assert stats.rejected_by_field == {field: 1}
    assert stats.submissions_accepted == 0


async def test_bodies_that_are_not_json_get_2013() -> None:
    """A body that is not JSON, or not sent as JSON, is refused with 2013."""
    async with running_minimax() as api:
        garbled = await api.submit(raw=b"{not json")
        plain = await api.submit(headers={"Content-Type": "text/plain"})
    assert garbled.json()["base_resp"]["status_msg"].startswith("invalid params, body: ")
    assert plain.json()["base_resp"]["status_msg"].startswith("invalid params, Content-Type: ")


VALID = [
    pytest.param(
        {"model": "MiniMax-Hailuo-2.3-Fast", "first_frame_image": IMAGE}, (1366, 768), id="fast"
    ),
    pytest.param(
        {"model": M02, "first_frame_image": IMAGE, "duration": 10, "resolution": "512P"},
        (912, 512),
        id="512p-10s-i2v",
    ),
    pytest.param(
        {"model": M02, "prompt": "x", "first_frame_image": IMAGE, "last_frame_image": IMAGE},
        (1366, 768),
        id="first-and-last",
    ),
    pytest.param(
        {"model": "MiniMax-Hailuo-2.3", "prompt": "x", "resolution": "1080P", "duration": 6},
        (1920, 1080),
        id="2.3-1080p",
    ),
    pytest.param(
        {
            "model": M02,
            "prompt": "[Pan left] a harbour",
            "prompt_optimizer": False,
            "fast_pretreatment": True,
            "aigc_watermark": True,
        },
        (1366, 768),
        id="switches",
    ),
]


@pytest.mark.parametrize(("body", "frame"), VALID)
async def test_valid_bodies_make_tasks(body: dict[str, Any], frame: tuple[int, int]) -> None:
    """Bodies within the rules make a task whose video has the resolution asked for."""
    async with running_minimax() as api:
        done = await _finished(api, body)
        task = api.server.tasks[done["task_id"]]
    assert done["status"] == "Success"
    assert (done["video_width"], done["video_height"]) == frame
    assert task.request.model == body["model"]
    assert task.request.image == body.get("first_frame_image")


async def test_queries_and_retrieves_name_what_is_missing() -> None:
    """No or an unknown task_id or file_id is 2013 naming it; unknown paths are plain 404s."""
    async with running_minimax() as api:
        no_task = await api.request(
            "GET", api.server.url + "/v1/query/video_generation", headers=api.auth()
        )
        unknown_task = await api.query("123456789012345")
        no_file = await api.request(
            "GET", api.server.url + "/v1/files/retrieve", headers=api.auth()
        )
        unknown_file = await api.retrieve("42")
        missing = await api.request("GET", api.server.url + "/v1/nothing", headers=api.auth())
        wrong_method = await api.request(
            "GET", api.server.url + "/v1/video_generation", headers=api.auth()
        )
    messages = [
        reply.json()["base_resp"]["status_msg"]
        for reply in (no_task, unknown_task, no_file, unknown_file)
    ]
    assert messages == [
        "invalid params, task_id: is required",
        "invalid params, task_id: task not found",
        "invalid params, file_id: is required",
        "invalid params, file_id: file not found",
    ]
    assert missing.status == 404
    assert missing.body == b"404 Not Found"
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"


async def test_request_window_counts_every_endpoint_and_answers_1002() -> None:
    """Submits, queries and retrieves share requests_per_minute; past it: 1002, no task."""
    async with running_minimax(
        requests_per_minute=3, time_scale=1.0, job_duration=Fixed(0.05)
    ) as api:
        task_id = await api.create()
        await anyio.sleep(0.1)
        done = (await api.query(task_id)).json()
        assert done["status"] == "Success"
        await _retrieve_url(api, done["file_id"])
        refused = [await api.submit(), await api.query(task_id), await api.retrieve("1")]
        stats = api.server.stats
    for reply in refused:
        assert reply.status == 200
        assert reply.json()["base_resp"] == {
            "status_code": 1002,
            "status_msg": "rate limit exceeded(RPM)",
        }
        assert "Retry-After" not in reply.headers
    assert refused[0].json()["task_id"] == ""
    assert stats.submissions_accepted == 1
    assert stats.rate_limited == {"rate_window": 3}
    assert stats.error_codes == {1002: 3}


async def test_active_cap_answers_2056() -> None:
    """Past max_active_tasks a submission is refused with 2056 and makes no task."""
    async with running_minimax(max_active_tasks=1, job_duration=Fixed(100_000)) as api:
        await api.create()
        refused = (await api.submit()).json()
        stats = api.server.stats
    assert refused["base_resp"]["status_code"] == 2056
    assert stats.submissions_accepted == 1
    assert stats.rate_limited == {"active_cap": 1}


@pytest.mark.parametrize("provider", ["gateway", "minimax"])
async def test_a_rate_limit_burst_refuses_every_request_for_its_span(provider: str) -> None:
    """After an injected rate-limit answer, every request in the burst is refused too."""
    knobs: dict[str, Any] = {
        "faults": Faults(rate_limit=0.5, rate_limit_burst=3000.0),  # 3 real seconds
        "time_scale": 0.001,
    }
    opener = running_minimax if provider == "minimax" else running
    async with opener(**knobs) as api:
        outcomes: list[str] = []
        for _ in range(20):
            reply = await api.submit()
            outcomes.append(_rate_answer(reply.status, reply.json()))
            if outcomes[-1] != "ok":
                break
        follow_up = await api.submit()
        stats = api.server.stats
    first, then = (1002, 2045) if provider == "minimax" else (429, 429)
    assert outcomes[-1] == str(first)
    assert _rate_answer(follow_up.status, follow_up.json()) == str(then)
    assert stats.rate_limited == {"injected": 1, "burst": 1}
    assert stats.submissions_accepted == len(outcomes) - 1


def _rate_answer(status: int, body: dict[str, Any]) -> str:
    if status != 200:
        return str(status)
    code = body["base_resp"]["status_code"] if "base_resp" in body else 0
    return "ok" if code == 0 else str(code)


async def test_insufficient_balance_after_n_tasks() -> None:
    """With insufficient_balance_after=2 the third submission is 1008 and makes no task."""
    async with running_minimax(insufficient_balance_after=2) as api:
        await api.create()
        await api.create()
        refused = (await api.submit()).json()
        stats = api.server.stats
    assert refused == {
        "task_id": "",
        "base_resp": {"status_code": 1008, "status_msg": "insufficient balance"},
    }
    assert stats.submissions_accepted == 2
    assert stats.submission_attempts == 3
    assert stats.error_codes == {1008: 1}


async def test_input_sensitive_marker_refuses_without_a_task() -> None:
    """A prompt with the input marker is 1026: no task, nothing paid."""
    async with running_minimax() as api:
        refused = (await api.submit({**MINIMAX_BODY, "prompt": "a fox #input-sensitive"})).json()
        stats = api.server.stats
    assert refused["task_id"] == ""
    assert refused["base_resp"]["status_code"] == 1026
    assert stats.submissions_accepted == 0


async def test_output_sensitive_marker_ends_the_task_fail_with_1027() -> None:
    """A prompt with the output marker makes a task that ends Fail, base_resp 1027."""
    async with running_minimax(output_sensitive_marker="[refuse me]") as api:
        done = await _finished(api, {**MINIMAX_BODY, "prompt": "a fox [refuse me]"})
        stats = api.server.stats
    assert done["status"] == "Fail"
    assert done["file_id"] == ""
    assert (done["video_width"], done["video_height"]) == (0, 0)
    assert done["base_resp"]["status_code"] == 1027
    assert stats.submissions_accepted == 1
    assert stats.error_codes == {1027: 1}


async def test_other_failures_end_fail_with_a_reason() -> None:
    """Tasks failed by failure_rate end Fail with 1000 and the reason in status_msg."""
    async with running_minimax(failure_rate=1.0) as api:
        done = await _finished(api)
    assert done["status"] == "Fail"
    assert done["base_resp"]["status_code"] == 1000
    assert done["base_resp"]["status_msg"]


async def test_each_retrieve_gives_a_fresh_url_and_expired_ones_are_refused() -> None:
    """A retrieve mints a new URL; expire_urls() kills the old ones; a fresh retrieve works."""
    async with running_minimax() as api:
        done = await _finished(api)
        first = await _retrieve_url(api, done["file_id"])
        second = await _retrieve_url(api, done["file_id"])
        assert first != second
        assert (await api.request("GET", first)).status == 200
        assert api.server.expire_urls() == 2
        expired = await api.request("GET", second)
        third = await _retrieve_url(api, done["file_id"])
        fresh = await api.request("GET", third)
        stats = api.server.stats
    assert expired.status == 403
    assert b"expired" in expired.body
    assert fresh.status == 200
    assert stats.retrieves_by_task == {done["task_id"]: 3}
    assert stats.storage_denied == 1


async def test_download_urls_live_nine_hours_scaled() -> None:
    """The URL's lifetime defaults to 32,400 service seconds; past it the URL answers 403."""
    assert FakeHailuoConfig(provider="minimax").url_ttl == 32_400.0
    assert FakeHailuoConfig().url_ttl == 3600.0
    scale = 0.001
    async with running_minimax(time_scale=scale) as api:
        done = await _finished(api)
        before = time.time()
        url = await _retrieve_url(api, done["file_id"])
        expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
    assert before + 32_400 * scale - 1 <= expires <= time.time() + 32_400 * scale + 1
    async with running_minimax(time_scale=0.01, video_url_ttl=100) as api:
        done = await _finished(api)
        url = await _retrieve_url(api, done["file_id"])
        await anyio.sleep(1.1)
        assert (await api.request("GET", url)).status == 403
        assert (await api.request("GET", await _retrieve_url(api, done["file_id"]))).status == 200


@pytest.mark.parametrize(
    ("fault", "task_made"),
    [
        ("reset", False),
        ("server_error", False),
        ("malformed_json", True),
        ("accepted_but_lost", True),
    ],
)
async def test_transport_faults_strike_minimax_submissions(fault: str, task_made: bool) -> None:
    """The gateway's transport faults apply to MiniMax's endpoints too; lost ids are counted."""
    async with running_minimax(faults=Faults(**{fault: 1.0})) as api:
        try:
            reply = await api.submit()
        except aiohttp.ClientError:
            reply = None
        stats = api.server.stats
    assert stats.faults_injected == {fault: 1}
    assert stats.submissions_accepted == int(task_made)
    assert stats.lost_task_ids == stats.task_ids  # made and lost, or neither
    if fault == "server_error":
        assert reply is not None
        assert reply.status >= 500
    if fault == "malformed_json":
        assert reply is not None
        assert reply.status == 200
        with pytest.raises(json.JSONDecodeError):
            reply.json()


# -- callbacks -------------------------------------------------------------------------------

ChallengeAnswer = Callable[[str], Awaitable[web.Response]]


async def _echo(value: str) -> web.Response:
    return web.json_response({"challenge": value})


class CallbackReceiver:
    """A loopback callback_url: answers the challenge as told and records the state pushes."""

    def __init__(self, answer: ChallengeAnswer = _echo) -> None:
        self.answer = answer
        self.challenges: list[str] = []
        self.pushes: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        """Answer a challenge with ``answer``; record anything else."""
        data = await request.json()
        if set(data) == {"challenge"}:
            self.challenges.append(data["challenge"])
            return await self.answer(data["challenge"])
        self.pushes.append(data)
        return web.json_response({})


@asynccontextmanager
async def receiving(answer: ChallengeAnswer = _echo) -> AsyncIterator[CallbackReceiver]:
    """Serve a CallbackReceiver on a free loopback port."""
    receiver = CallbackReceiver(answer)
    async with serving("/callback", receiver.handle) as receiver.url:
        yield receiver


async def _settled(server: FakeHailuoServer, task_id: str) -> None:
    """Wait until the task ended and its callbacks were all delivered or given up."""
    with anyio.fail_after(30):
        while server.finished_at(task_id) is None or server._service.webhook_tasks:  # noqa: ASYNC110
            await anyio.sleep(0.01)


CALLBACK_KNOBS: dict[str, Any] = {
    "time_scale": 0.01,
    "job_duration": Fixed(5.0),
    "webhook_timeout": 1000.0,  # 10 real seconds: a busy machine's receiver is not retried
}


@pytest.mark.parametrize(
    ("case", "statuses"),
    [
        ("lower", ["queueing", "processing", "success"]),
        ("capitalised", ["Queueing", "Processing", "Success"]),
    ],
)
async def test_callbacks_follow_an_echoed_challenge(case: str, statuses: list[str]) -> None:
    """The challenge comes first; then one push per status change, in the query's shape."""
    async with (
        receiving() as receiver,
        running_minimax(**CALLBACK_KNOBS, callback_status_case=case) as api,
    ):
        task_id = await api.create({**MINIMAX_BODY, "callback_url": receiver.url})
        await _settled(api.server, task_id)
        done = (await api.query(task_id)).json()
        stats = api.server.stats
    assert len(receiver.challenges) == 1
    assert [push["status"] for push in receiver.pushes] == statuses
    assert all(push["task_id"] == task_id for push in receiver.pushes)
    last = receiver.pushes[-1]
    assert {**last, "status": done["status"]} == done
    assert stats.challenges_sent == 1
    assert stats.challenges_failed == 0
    assert stats.webhooks_sent == 3


async def test_a_failed_task_pushes_failed_with_its_code() -> None:
    """An output-sensitive task's last push is 'failed' with base_resp 1027."""
    async with receiving() as receiver, running_minimax(**CALLBACK_KNOBS) as api:
        body = {**MINIMAX_BODY, "prompt": "#output-sensitive", "callback_url": receiver.url}
        task_id = await api.create(body)
        await _settled(api.server, task_id)
    assert receiver.pushes[-1]["status"] == "failed"
    assert receiver.pushes[-1]["base_resp"]["status_code"] == 1027


async def _wrong_value(value: str) -> web.Response:
    return web.json_response({"challenge": value + "x"})


async def _not_json(value: str) -> web.Response:
    return web.Response(text=value)


async def _server_error(value: str) -> web.Response:
    return web.json_response({"challenge": value}, status=500)


async def _too_slow(value: str) -> web.Response:
    await anyio.sleep(1.5)  # past the challenge's floor of one real second
    return web.json_response({"challenge": value})


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(_wrong_value, id="wrong-value"),
        pytest.param(_not_json, id="not-json"),
        pytest.param(_server_error, id="500"),
        pytest.param(_too_slow, id="too-slow"),
    ],
)
async def test_no_callbacks_without_the_echo(answer: ChallengeAnswer) -> None:
    """A challenge not echoed in time is counted as failed, and the task pushes nothing."""
    async with receiving(answer) as receiver, running_minimax(**CALLBACK_KNOBS) as api:
        task_id = await api.create({**MINIMAX_BODY, "callback_url": receiver.url})
        await _settled(api.server, task_id)
        stats = api.server.stats
    assert len(receiver.challenges) == 1
    assert receiver.pushes == []
    assert stats.challenges_sent == stats.challenges_failed == 1
    assert stats.webhook_attempts == 0


# -- configuration, command line, fixtures ---------------------------------------------------


def test_knobs_that_belong_to_one_dialect_are_refused_on_the_other() -> None:
    """MiniMax has no 'captured' profile; the gateway no balance knob."""
    with pytest.raises(ValueError, match="captured"):
        FakeHailuoConfig(provider="minimax", profile="captured")
    with pytest.raises(ValueError, match="insufficient_balance_after"):
        FakeHailuoConfig(insufficient_balance_after=3)
    with pytest.raises(ValueError, match="provider"):
        FakeHailuoConfig(provider="novita")  # type: ignore[arg-type]


def test_command_line_flags_for_minimax() -> None:
    """--provider and the MiniMax knobs come from the config's fields."""
    args = build_parser().parse_args(
        [
            "--provider=minimax",
            "--insufficient-balance-after=5",
            "--input-sensitive-marker=BAD-IN",
            "--output-sensitive-marker=BAD-OUT",
            "--callback-status-case=capitalised",
            "--fault-rate-limit=0.1",
            "--rate-limit-burst=30",
        ]
    )
    assert config_from_args(args) == FakeHailuoConfig(
        provider="minimax",
        insufficient_balance_after=5,
        input_sensitive_marker="BAD-IN",
        output_sensitive_marker="BAD-OUT",
        callback_status_case="capitalised",
        faults=Faults(rate_limit=0.1, rate_limit_burst=30),
    )


def test_command_line_refuses_an_unknown_provider(capsys: pytest.CaptureFixture[str]) -> None:
    """--provider takes gateway or minimax only."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--provider=other"])
    assert exit_info.value.code == 2
    assert "provider must be one of gateway, minimax" in capsys.readouterr().err


async def test_fake_minimax_fixture(fake_minimax: FakeHailuoServer) -> None:
    """The fake_minimax fixture is a running MiniMax-speaking fake with the fast defaults."""
    assert fake_minimax.provider == "minimax"
    assert "minimax" in repr(fake_minimax)
    async with open_api(fake_minimax) as plain:
        api = MiniMaxApi(fake_minimax, plain.session)
        done = await _finished(api)
    assert done["status"] == "Success"
    assert fake_minimax.task_status(done["task_id"]) == "Success"
