"""Each provider's dialect, read and written without a socket: bodies, rules, answers, errors,
webhooks. What the calls do over the network is the contract suite's (test_provider_contract)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from hailuo_async import (
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    HailuoClient,
    InsufficientBalanceError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from hailuo_async._decoding import DecodeError
from hailuo_async._transport import Response
from hailuo_async.extend import Provider, Step
from hailuo_async.providers import (
    PROVIDERS,
    GatewayProvider,
    MiniMaxProvider,
    parse_webhook,
    provider_for,
)
from hailuo_async.providers._minimax import QUERY_PATH, RETRIEVE_PATH, minimax_body
from hailuo_async.webhooks import WebhookError

MINIMAX = MiniMaxProvider()
GATEWAY = GatewayProvider()
IMAGE = "https://example.com/first.png"


def answer(body: object, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An answer as the transport hands it over."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status=status, headers=CIMultiDictProxy(CIMultiDict(headers or {})), body=raw)


def ok(**fields: Any) -> dict[str, Any]:
    """A MiniMax answer with ``base_resp`` 0."""
    return {**fields, "base_resp": {"status_code": 0, "status_msg": "success"}}


def refused(code: int, message: str = "no", **fields: Any) -> dict[str, Any]:
    """A MiniMax answer with a non-zero ``base_resp``."""
    return {**fields, "base_resp": {"status_code": code, "status_msg": message}}


# -- choosing ------------------------------------------------------------------------------


def test_providers_are_chosen_by_name_object_or_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name (any case), a Provider object, or HAILUO_PROVIDER; the gateway by default."""
    monkeypatch.delenv("HAILUO_PROVIDER", raising=False)
    assert provider_for() is PROVIDERS["gateway"]
    assert provider_for("MiniMax") is PROVIDERS["minimax"]
    own = MiniMaxProvider()
    assert provider_for(own) is own
    assert isinstance(own, Provider)
    monkeypatch.setenv("HAILUO_PROVIDER", "minimax")
    assert provider_for() is PROVIDERS["minimax"]
    client = HailuoClient("k")
    assert client.provider.name == "minimax"
    assert client.base_url == "https://api.minimax.io"
    with pytest.raises(InvalidRequestError, match="provider"):
        provider_for("elsewhere")
    with pytest.raises(InvalidRequestError, match="provider"):
        HailuoClient("k", provider=object())  # type: ignore[arg-type]


def test_the_gateway_stays_the_default() -> None:
    """A client made as before talks to the gateway, at the gateway's host."""
    client = HailuoClient("k", provider="gateway")
    assert client.base_url == "https://api.highwayapi.ai"
    assert "gateway" in repr(client)


# -- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "MiniMax-Hailuo-2.3"}, "model"),
        ({"aigc_watermark": True}, "aigc_watermark"),
        ({"resolution": "512P", "image": IMAGE}, "resolution"),
    ],
)
def test_the_gateway_refuses_what_it_does_not_document(fields: dict[str, Any], field: str) -> None:
    """Another model, a watermark or 512P never reach the gateway: the field is named."""
    request = VideoRequest("p", **fields)
    with pytest.raises(InvalidRequestError) as caught:
        GATEWAY.submit_call(request)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "MiniMax-Hailuo-2.3-Fast"}, "image"),
        ({"model": "MiniMax-Hailuo-2.3", "image": IMAGE, "end_image": IMAGE}, "end_image"),
        ({"resolution": "512P"}, "resolution"),
    ],
)
def test_minimax_refuses_what_its_models_do_not_make(fields: dict[str, Any], field: str) -> None:
    """2.3-Fast and 512P need a first frame; a last frame is Hailuo-02's alone."""
    with pytest.raises(InvalidRequestError) as caught:
        MINIMAX.submit_call(VideoRequest("p", **fields))
    assert caught.value.field == field


def test_rules_every_model_shares_are_checked_when_the_request_is_made() -> None:
    """1080P is for 6-second videos on every provider; an unknown model is refused at once."""
    with pytest.raises(InvalidRequestError, match="resolution"):
        VideoRequest("p", duration=10, resolution="1080P")
    with pytest.raises(InvalidRequestError, match="model"):
        VideoRequest("p", model="T2V-01")  # type: ignore[arg-type]


# -- bodies ----------------------------------------------------------------------------------


def test_minimax_body_maps_each_field() -> None:
    """image, end_image, prompt expansion and the webhook take MiniMax's names; what is off
    by default is left out."""
    request = VideoRequest(
        "p",
        image=IMAGE,
        end_image="https://example.com/last.png",
        duration=10,
        resolution="512P",
        enable_prompt_expansion=False,
        fast_pretreatment=True,
        webhook_url="https://my.host/hook/secret-secret-secret",
        aigc_watermark=True,
    )
    assert minimax_body(request) == {
        "model": "MiniMax-Hailuo-02",
        "prompt": "p",
        "prompt_optimizer": False,
        "duration": 10,
        "resolution": "512P",
        "first_frame_image": IMAGE,
        "last_frame_image": "https://example.com/last.png",
        "fast_pretreatment": True,
        "callback_url": "https://my.host/hook/secret-secret-secret",
        "aigc_watermark": True,
    }
    assert minimax_body(VideoRequest("p", model="MiniMax-Hailuo-2.3")) == {
        "model": "MiniMax-Hailuo-2.3",
        "prompt": "p",
        "prompt_optimizer": True,
        "duration": 6,
        "resolution": "768P",
    }
    call = MINIMAX.submit_call(VideoRequest("p"))
    assert (call.method, call.path, call.kind) == ("POST", "/v1/video_generation", "submit")
    assert call.body is not None
    assert json.loads(call.body)["model"] == "MiniMax-Hailuo-02"


# -- answers ---------------------------------------------------------------------------------


def run(step: Step, *answers: Response) -> TaskResult | Step:
    """Read ``answers`` through a poll's steps; the result, or the step still to run."""
    outcome: TaskResult | Step = step
    for given in answers:
        assert isinstance(outcome, Step)
        assert MINIMAX.answer_error(outcome.call, given, base_url="u") is None
        outcome = outcome.read(given)
    return outcome


def test_a_minimax_poll_is_a_query_then_one_retrieve() -> None:
    """Running statuses are one query; a success is a query, then the file's URL."""
    for raw, status in [
        ("Preparing", TaskStatus.QUEUED),
        ("Queueing", TaskStatus.QUEUED),
        ("Processing", TaskStatus.PROCESSING),
        ("Suspended", TaskStatus.UNKNOWN),
    ]:
        result = run(MINIMAX.poll("7"), answer(ok(task_id="7", status=raw, file_id="")))
        assert isinstance(result, TaskResult)
        assert (result.status, result.raw_status) == (status, raw)
    first = MINIMAX.poll("7")
    assert (first.call.path, first.call.query) == (QUERY_PATH, "task_id=7")
    step = run(first, answer(ok(task_id="7", status="Success", file_id="99", video_width=1366)))
    assert isinstance(step, Step)
    assert (step.call.path, step.call.query, step.call.kind) == (
        RETRIEVE_PATH,
        "file_id=99",
        "poll",
    )
    url = "http://storage.example/v.mp4?Expires=4102444800"
    file = {"file_id": 99, "bytes": 5, "filename": "output.mp4", "download_url": url}
    result = run(step, answer(ok(file=file)))
    assert isinstance(result, TaskResult)
    assert result.ok
    assert result.progress_percent == 100
    assert result.video is not None
    assert (result.video.url, result.video.video_type) == (url, "mp4")
    assert result.extra["file_id"] == "99"
    assert result.extra["video_width"] == 1366
    refreshed = MINIMAX.refresh(result)
    assert refreshed.call.path == RETRIEVE_PATH  # a fresh URL costs one retrieve, no query


def test_a_failed_minimax_task_keeps_its_reason() -> None:
    """Fail with 1027 (the video refused) or any other code is the task's failure, not an
    error of the call: its reason says why."""
    for code in (1027, 1000, 0):
        body = refused(code, "output new_sensitive", task_id="7", status="Fail", file_id="")
        result = run(MINIMAX.poll("7"), answer(body))
        assert isinstance(result, TaskResult)
        assert result.status is TaskStatus.FAILED
        assert "output new_sensitive" in result.reason


def test_wrong_minimax_answers_name_the_field() -> None:
    """Another task's answer, a success without a file, a file without a URL."""
    with pytest.raises(DecodeError, match="task_id"):
        run(MINIMAX.poll("7"), answer(ok(task_id="8", status="Processing")))
    with pytest.raises(DecodeError, match="file_id"):
        run(MINIMAX.poll("7"), answer(ok(task_id="7", status="Success", file_id="")))
    step = run(MINIMAX.poll("7"), answer(ok(task_id="7", status="Success", file_id="9")))
    assert isinstance(step, Step)
    with pytest.raises(DecodeError, match="download_url"):
        step.read(answer(ok(file={"file_id": "9", "download_url": ""})))
    with pytest.raises(DecodeError, match=r"\$\.file"):
        step.read(answer(ok(file=None)))


@pytest.mark.parametrize(
    ("code", "error", "retried_for_submits"),
    [
        (1002, RateLimitError, True),
        (2045, RateLimitError, True),
        (2056, RateLimitError, True),
        (1004, AuthenticationError, False),
        (2049, AuthenticationError, False),
        (1008, InsufficientBalanceError, False),
        (1026, ContentPolicyError, False),
        (2013, BadRequestError, False),
        (1000, InternalServerError, True),
        (1001, InternalServerError, True),
        (1024, InternalServerError, True),
        (1033, InternalServerError, True),
        (4242, APIStatusError, False),
    ],
)
def test_minimax_codes_are_the_library_errors(
    code: int, error: type[APIStatusError], retried_for_submits: bool
) -> None:
    """Each documented code is its error class, carrying the code; an unknown code is an
    APIStatusError, never a crash."""
    call = MINIMAX.submit_call(VideoRequest("p"))
    found = MINIMAX.answer_error(call, answer(refused(code, "msg", task_id="")), base_url="u")
    assert type(found) is error
    assert isinstance(found, APIStatusError)
    assert (found.code, found.status_code) == (code, 200)
    assert "msg" in str(found)
    assert RetryPolicy().retries("submit", found) is retried_for_submits


def test_a_server_fault_with_a_task_id_is_never_resent() -> None:
    """A 1000 that comes with a task id does not prove no task was made: the submission's
    outcome is unknown (never resent unless the caller chose to)."""
    call = MINIMAX.submit_call(VideoRequest("p"))
    found = MINIMAX.answer_error(call, answer(refused(1000, task_id="55")), base_url="u")
    assert isinstance(found, APIResponseValidationError)


def test_an_unknown_id_is_not_found_for_queries() -> None:
    """2013 to a query or a retrieve (their one parameter is the id) is NotFoundError."""
    step = MINIMAX.poll("7")
    found = MINIMAX.answer_error(step.call, answer(refused(2013, "task not found")), base_url="u")
    assert isinstance(found, NotFoundError)


def test_minimax_http_errors_are_read_as_the_gateways() -> None:
    """An error status (a proxy's 502, a 429) is the same error on both providers."""
    for provider in (GATEWAY, MINIMAX):
        call = provider.poll("7").call
        found = provider.answer_error(call, answer(b"bad gateway", status=502), base_url="u")
        assert isinstance(found, InternalServerError)
        limited = answer({"message": "slow"}, status=429, headers={"Retry-After": "3"})
        found = provider.answer_error(call, limited, base_url="u")
        assert isinstance(found, RateLimitError)
        assert found.retry_after == 3


# -- webhooks --------------------------------------------------------------------------------


def test_minimax_callbacks_are_a_challenge_then_task_states() -> None:
    """The challenge is read as such; state pushes (lower-case or capitalised) as claims."""
    event = parse_webhook(b'{"challenge": "abc"}', "minimax")
    assert event.challenge == "abc"
    assert not event.is_task_result
    for status in ("success", "Success", "SUCCESS"):
        event = parse_webhook({"task_id": "7", "status": status, "file_id": "9"}, "minimax")
        assert (event.task_id, event.status, event.claims_done) == ("7", TaskStatus.SUCCEED, True)
    event = parse_webhook({"task_id": "7", "status": "processing"}, "minimax")
    assert event.status is TaskStatus.PROCESSING
    assert not event.claims_done
    event = parse_webhook({"task_id": "7", "status": "failed"}, "minimax")
    assert event.status is TaskStatus.FAILED
    for bad in ({"challenge": 5}, {"status": "success"}, {"task_id": "7", "status": 3}):
        with pytest.raises(WebhookError):
            parse_webhook(bad, "minimax")


def test_the_gateway_reads_only_its_own_events() -> None:
    """A challenge is no gateway event; a gateway event is read as before."""
    with pytest.raises(WebhookError, match="event_type"):
        parse_webhook({"challenge": "abc"})
    event = parse_webhook(
        {
            "event_type": "ASYNC_TASK_RESULT",
            "payload": {"task": {"task_id": "7", "status": "TASK_STATUS_SUCCEED"}},
        }
    )
    assert (event.task_id, event.status, event.challenge) == ("7", TaskStatus.SUCCEED, None)
