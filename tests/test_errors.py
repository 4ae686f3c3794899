"""The error hierarchy, and how every answer the API can give becomes one of its errors."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from clientutil import Handler, answered_by, serve
from clientutil import client_for as base_client_for
from clientutil import fake_client as base_fake_client

import hailuo_async
from hailuo_async import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    HailuoError,
    InternalServerError,
    InvalidRequestError,
    Limits,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SubmissionUnknownError,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    VideoRequest,
    WaitTimeoutError,
)
from hailuo_async.testing import FakeHailuoServer, Faults
from hailuo_async.testing.pytest_plugin import FakeHailuoFactory

pytestmark = pytest.mark.anyio

KEY = "errors-test-key"
REQUEST = VideoRequest(prompt="an owl blinking slowly")

# Clients that do not retry unless asked (see test_retry for retries).
client_for = partial(base_client_for, api_key=KEY, max_retries=0, limits=Limits(rate_window=0.05))
fake_client = partial(base_fake_client, max_retries=0)


def always(
    code: int, body: Any = None, *, headers: dict[str, str] | None = None, text: str | None = None
) -> Handler:
    """A handler that answers every request with ``code`` and a JSON (or text) body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if text is not None:
            return web.Response(status=code, text=text, headers=headers)
        return web.json_response(body, status=code, headers=headers)

    return handler


# -- the hierarchy -----------------------------------------------------------------------------

HIERARCHY: list[tuple[type[BaseException], tuple[type[BaseException], ...]]] = [
    (HailuoError, (Exception,)),
    (InvalidRequestError, (HailuoError, ValueError)),
    (APIError, (HailuoError,)),
    (APIStatusError, (APIError,)),
    (BadRequestError, (APIStatusError,)),
    (AuthenticationError, (APIStatusError,)),
    (PermissionDeniedError, (APIStatusError,)),
    (NotFoundError, (APIStatusError,)),
    (RateLimitError, (APIStatusError,)),
    (InternalServerError, (APIStatusError,)),
    (APIConnectionError, (APIError,)),
    (APITimeoutError, (APIConnectionError,)),
    (APIResponseValidationError, (APIError,)),
    (SubmissionUnknownError, (HailuoError,)),
    (TaskFailedError, (HailuoError,)),
    (WaitTimeoutError, (HailuoError, TimeoutError)),
    (DownloadError, (HailuoError,)),
]


@pytest.mark.parametrize(("error", "parents"), HIERARCHY)
def test_the_hierarchy_is_as_documented(
    error: type[BaseException], parents: tuple[type[BaseException], ...]
) -> None:
    """Each error has the parents the exceptions module's docstring draws."""
    for parent in parents:
        assert issubclass(error, parent)
    assert error.__name__ in hailuo_async.__all__
    assert error.__name__ in (hailuo_async._exceptions.__doc__ or "")


def _public_modules() -> list[str]:
    """The package and every module of it whose dotted path has no private part."""
    found = ["hailuo_async"]
    for module in pkgutil.walk_packages(hailuo_async.__path__, "hailuo_async."):
        if not any(part.startswith("_") for part in module.name.split(".")[1:]):
            found.append(module.name)
    return found


def _exported_errors() -> dict[str, type[BaseException]]:
    """Every exception class a public module lists in its ``__all__``, by name."""
    errors: dict[str, type[BaseException]] = {}
    for name in _public_modules():
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", ()):
            value = getattr(module, exported)
            if isinstance(value, type) and issubclass(value, BaseException):
                errors[value.__name__] = value
    return errors


def _drawn_parents() -> dict[str, str]:
    """Each class in the diagram of ``_exceptions``'s docstring, with the class drawn above it."""
    parents: dict[str, str] = {}
    chain: list[str] = []
    for line in (hailuo_async._exceptions.__doc__ or "").splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+Error)\b", line)
        if match is None:
            continue
        depth = len(match[1]) // 4 + (1 if "──" in line else 0)
        del chain[depth:]
        if chain:
            parents[match[2]] = chain[-1]
        chain.append(match[2])
    return parents


def test_every_exported_error_is_in_the_one_tree() -> None:
    """Every exception a public module exports is a HailuoError drawn under its real parent."""
    errors = _exported_errors()
    assert {"JournalError", "CoordinationError", "LeaseLostError", "WebhookError"} <= set(errors)
    drawn = _drawn_parents()
    for name, error in errors.items():
        assert issubclass(error, HailuoError), name
        if error is HailuoError:
            continue
        assert name in drawn, f"{name} is not in the diagram of hailuo_async._exceptions"
        assert errors[drawn[name]] in error.__mro__[1:], name


def test_outcome_errors_are_not_api_errors() -> None:
    """Unknown submissions, failed tasks and timeouts of a wait are not transport errors."""
    for error in (SubmissionUnknownError, TaskFailedError, WaitTimeoutError, DownloadError):
        assert not issubclass(error, APIError)
    assert not issubclass(APIResponseValidationError, APIStatusError)
    assert not issubclass(APIConnectionError, APIStatusError)


# -- every status ------------------------------------------------------------------------------

STATUSES: list[tuple[int, type[APIStatusError]]] = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
    (504, InternalServerError),
    (501, InternalServerError),
    (409, APIStatusError),
    (413, APIStatusError),
    (422, APIStatusError),
]


@pytest.mark.parametrize(("code", "error"), STATUSES)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_every_status_is_mapped(code: int, error: type[APIStatusError], method: str) -> None:
    """Each status becomes its error class, with status, body, method, URL and message."""
    body = {"code": code, "reason": "SOME_REASON", "message": f"service says {code}"}
    async with serve(always(code, body)) as url, client_for(url) as client:
        with pytest.raises(error) as info:
            if method == "GET":
                await client.get_task("t-1")
            else:
                await client.submit(REQUEST)
    exc = info.value
    assert type(exc) is error
    assert exc.status_code == code
    assert exc.body == body
    assert exc.method == method
    path = "/v3/async/task-result" if method == "GET" else "/v3/async/minimax-hailuo-02"
    assert exc.url == url + path
    assert str(exc) == f"{code} from {method} {path}: service says {code}"
    assert exc.message == str(exc)


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_redirects_are_errors_not_followed(code: int) -> None:
    """A redirect is reported as an APIStatusError, for a poll and for a submit alike."""
    headers = {"Location": "https://elsewhere.example.com/"}
    async with answered_by(always(code, {}, headers=headers), client_for) as client:
        with pytest.raises(APIStatusError) as polled:
            await client.get_task("t-1")
        with pytest.raises(APIStatusError) as submitted:
            await client.submit(REQUEST)
    assert polled.value.status_code == submitted.value.status_code == code
    assert polled.value.headers["Location"] == "https://elsewhere.example.com/"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reason": "INVALID_ARGUMENT"}, "INVALID_ARGUMENT"),
        ({"error": "bad thing"}, "bad thing"),
        ({"detail": "details"}, "details"),
        ({"msg": "short"}, "short"),
        ({"message": "", "reason": "FALLBACK"}, "FALLBACK"),
        ({"message": 42}, None),
        ([1, 2, 3], None),
        ("just a string", None),
    ],
)
async def test_error_bodies_of_any_shape(body: Any, message: str | None) -> None:
    """The service's message is found in the shapes gateways use; other shapes do no harm."""
    async with answered_by(always(400, body), client_for) as client:
        with pytest.raises(BadRequestError) as info:
            await client.get_task("t-1")
    assert info.value.body == body
    expected = "400 from GET /v3/async/task-result"
    assert str(info.value) == (f"{expected}: {message}" if message else expected)


async def test_a_plain_text_error_is_kept_as_text() -> None:
    """An HTML page from a proxy becomes the body as a string."""
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    async with answered_by(always(502, text=page), client_for) as client:
        with pytest.raises(InternalServerError) as info:
            await client.get_task("t-1")
    assert info.value.body == page
    assert str(info.value) == "502 from GET /v3/async/task-result"


async def test_a_long_error_body_and_message_are_cut() -> None:
    """Bodies over 2000 characters are cut; the message quotes at most 500."""
    async with answered_by(always(400, {"message": "m" * 10_000}), client_for) as client:
        with pytest.raises(BadRequestError) as info:
            await client.get_task("t-1")
    assert len(str(info.value)) < 600
    async with answered_by(always(500, text="x" * 50_000), client_for) as client:
        with pytest.raises(InternalServerError) as failed:
            await client.get_task("t-1")
    assert isinstance(failed.value.body, str)
    assert len(failed.value.body) == 2001
    assert failed.value.body.endswith("…")


async def test_headers_are_kept_without_secrets() -> None:
    """Response headers are kept on the error, less cookies and credentials."""
    headers = {
        "X-Request-Id": "req-123",
        "Retry-After": "5",
        "Set-Cookie": "session=abc",
        "Authorization": "Bearer leaked",
        "Proxy-Authorization": "Basic leaked",
    }
    async with answered_by(always(429, {}, headers=headers), client_for) as client:
        with pytest.raises(RateLimitError) as info:
            await client.get_task("t-1")
    kept = {name.lower(): value for name, value in info.value.headers.items()}
    assert kept["x-request-id"] == "req-123"
    assert kept["retry-after"] == "5"
    assert info.value.retry_after == 5
    for secret in ("set-cookie", "authorization", "proxy-authorization", "cookie"):
        assert secret not in kept
    assert "leaked" not in repr(vars(info.value))


async def test_a_2xx_that_is_not_json_is_a_validation_error() -> None:
    """A 200 with an HTML body is an APIResponseValidationError on a poll."""
    async with answered_by(always(200, text="<html>hello</html>"), client_for) as client:
        with pytest.raises(APIResponseValidationError) as info:
            await client.get_task("t-1")
    assert info.value.status_code == 200
    assert info.value.body == "<html>hello</html>"
    assert info.value.method == "GET"


# -- errors from the fake ----------------------------------------------------------------------


async def test_a_wrong_key_is_an_authentication_error(fake_hailuo: FakeHailuoServer) -> None:
    """The fake's 401 for a wrong key is an AuthenticationError on submit and on poll."""
    async with base_fake_client(fake_hailuo, api_key="not-the-key", max_retries=3) as client:
        with pytest.raises(AuthenticationError) as submitted:
            await client.submit(REQUEST)
        with pytest.raises(AuthenticationError):
            await client.get_task("t-1")
    assert submitted.value.status_code == 401
    assert submitted.value.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(submitted.value.body, dict)
    assert submitted.value.body["reason"] == "UNAUTHENTICATED"
    assert fake_hailuo.stats.submission_attempts == 1
    assert fake_hailuo.stats.polls_total == 1


async def test_an_unknown_task_is_not_found(fake_hailuo: FakeHailuoServer) -> None:
    """Polling an id the fake never issued is a NotFoundError, not retried."""
    async with fake_client(fake_hailuo, max_retries=3) as client:
        with pytest.raises(NotFoundError) as info:
            await client.get_task("00000000-0000-4000-8000-000000000000")
    assert info.value.status_code == 404
    assert "task not found" in str(info.value)
    assert fake_hailuo.stats.polls_total == 1


async def test_the_fakes_5xx_and_429(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """The fake's injected 5xx (JSON or HTML) and 429 (with Retry-After) map to their errors."""
    async with fake_hailuo_factory(faults=Faults(server_error=1.0), seed=2) as server:
        async with fake_client(server) as client:
            codes = set()
            for _ in range(12):
                with pytest.raises(InternalServerError) as info:
                    await client.submit(REQUEST)
                codes.add(info.value.status_code)
                assert isinstance(info.value.body, (dict, str))
    assert codes <= {500, 502, 503, 504}
    assert len(codes) > 1
    async with fake_hailuo_factory(faults=Faults(rate_limit=1.0), retry_after=True) as server:
        async with fake_client(server) as client:
            with pytest.raises(RateLimitError) as limited:
                await client.submit(REQUEST)
    assert limited.value.retry_after is not None
    assert 0 < limited.value.retry_after <= 5 * 0.001 + 0.001


# -- the other errors --------------------------------------------------------------------------


def test_submission_unknown_error_carries_the_request() -> None:
    """SubmissionUnknownError holds the request and says a paid job may have started."""
    error = SubmissionUnknownError(REQUEST, reason="connection reset")
    assert error.request is REQUEST
    assert error.reason == "connection reset"
    assert "connection reset" in str(error)
    assert "paid job" in str(error)
    assert "not sent again" in str(error)
    resent = SubmissionUnknownError(REQUEST, reason="reset", resent=True)
    assert "not sent again" not in str(resent)


def test_task_failed_error_carries_the_result() -> None:
    """TaskFailedError holds the result and quotes the service's reason."""
    result = TaskResult(task_id="t-9", status=TaskStatus.FAILED, reason="content moderation")
    error = TaskFailedError(result)
    assert error.result is result
    assert error.task_id == "t-9"
    assert str(error) == "task t-9 failed: content moderation"
    assert "no reason given" in str(
        TaskFailedError(TaskResult(task_id="t", status=TaskStatus.FAILED))
    )


def test_wait_timeout_error_carries_the_task() -> None:
    """WaitTimeoutError names the task and the timeout, and keeps the last result."""
    last = TaskResult(task_id="t-3", status=TaskStatus.PROCESSING)
    error = WaitTimeoutError("t-3", last, 2.5)
    assert (error.task_id, error.last_result, error.timeout) == ("t-3", last, 2.5)
    assert str(error) == "task t-3 did not finish within 2.5 s; it is still running"


def test_invalid_request_error_names_the_field() -> None:
    """InvalidRequestError's message starts with the field."""
    error = InvalidRequestError("duration", "must be 6 or 10")
    assert (error.field, error.message, str(error)) == (
        "duration",
        "must be 6 or 10",
        "duration: must be 6 or 10",
    )


def test_status_error_bodies_round_trip_as_json() -> None:
    """An error's body, when the service sent JSON, is plain JSON data again."""
    error = BadRequestError("400", status_code=400, body={"a": [1, 2]}, headers={"X-A": "1"})
    assert json.loads(json.dumps(error.body)) == {"a": [1, 2]}
    assert error.headers == {"X-A": "1"}
