"""Which failures are retried, after how long, and that a paid POST is never resent blindly."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial

import anyio
import pytest
from aiohttp import web
from clientutil import Handler, answered_by, fake_client, serve
from clientutil import client_for as base_client_for
from hypothesis import given, settings
from hypothesis import strategies as st

from hailuo_async import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    HailuoClient,
    InternalServerError,
    Limits,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    SubmissionUnknownError,
    Timeouts,
    VideoRequest,
)
from hailuo_async._retry import parse_retry_after
from hailuo_async.testing import Faults
from hailuo_async.testing._faults import drop_connection
from hailuo_async.testing.pytest_plugin import FakeHailuoFactory

pytestmark = pytest.mark.anyio

KEY = "retry-test-key"
REQUEST = VideoRequest(prompt="a paper boat on a rain-soaked street")

Step = Handler


class Script:
    """A tiny API whose answers follow a script: one step per request, then ``then`` forever."""

    def __init__(self, *steps: Step, then: Step) -> None:
        self.steps = list(steps)
        self.then = then
        self.methods: list[str] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.methods.append(request.method)
        await request.read()
        step = self.steps.pop(0) if self.steps else self.then
        return await step(request)

    def count(self, method: str) -> int:
        """Requests of ``method`` that reached the app."""
        return self.methods.count(method)


def status(code: int, headers: dict[str, str] | None = None) -> Step:
    """A step answering ``code`` with a gateway-style JSON error."""

    async def step(request: web.Request) -> web.StreamResponse:
        body = {"code": code, "reason": "SCRIPTED", "message": f"scripted {code}"}
        return web.json_response(body, status=code, headers=headers)

    return step


def answer(task_id: str = "t-1") -> Step:
    """A step answering a submit with ``task_id``, or a poll with that task queued."""

    async def step(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return web.json_response({"task_id": task_id})
        body = {"task": {"task_id": task_id, "status": "TASK_STATUS_QUEUED", "eta": 30}}
        return web.json_response(body)

    return step


async def reset(request: web.Request) -> web.StreamResponse:
    """A step that resets the connection without answering."""
    return drop_connection(request)


def slow(seconds: float, then: Step) -> Step:
    """A step that holds the answer back ``seconds`` before ``then`` answers."""

    async def step(request: web.Request) -> web.StreamResponse:
        await anyio.sleep(seconds)
        return await then(request)

    return step


# Clients with fast retries whose rate-limit "minute" is 50 ms: a 429 makes the client
# discover a request rate, and pacing at a real per-minute rate would stall these tests
# (see the xfail below).
client_for = partial(base_client_for, api_key=KEY, limits=Limits(rate_window=0.05))


# -- the policy itself -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=100),
    attempt=st.integers(min_value=1, max_value=10_000),
)
def test_backoff_is_full_jitter_under_a_cap(initial: float, cap: float, attempt: int) -> None:
    """Every wait lies in [0, min(cap, initial * 2**(attempt-1))], however many attempts."""
    policy = RetryPolicy(initial_delay=initial, max_delay=cap)
    wait = policy.backoff(attempt)
    assert 0 <= wait <= cap
    if attempt < 60:
        assert wait <= initial * 2 ** (attempt - 1)


def test_backoff_is_spread_over_its_whole_range() -> None:
    """Full jitter: waits for one attempt spread from near 0 to near the ceiling."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=100.0)
    waits = [policy.backoff(4) for _ in range(2000)]
    assert min(waits) < 0.5
    assert max(waits) > 7.5
    assert len(set(waits)) > 1900


def test_retry_after_wins_over_backoff_up_to_its_cap() -> None:
    """A 429's Retry-After sets the wait, capped at max_retry_after; other errors back off."""
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.02, max_retry_after=5.0)

    def limited(seconds: float | None) -> RateLimitError:
        return RateLimitError("429", retry_after=seconds, status_code=429)

    assert policy.wait_for(limited(3.0), 1) == 3.0
    assert policy.wait_for(limited(3600.0), 1) == 5.0
    assert policy.wait_for(limited(None), 1) <= 0.01
    assert policy.wait_for(InternalServerError("503", status_code=503), 3) <= 0.02


NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sun, 01 Jun 2025 12:00:30 GMT", 30.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    """Retry-After holds delta-seconds or an HTTP date; nonsense is ignored."""
    assert parse_retry_after({"Retry-After": value}, now=NOW) == seconds


def test_missing_retry_after_is_none() -> None:
    """No header, no Retry-After."""
    assert parse_retry_after({}, now=NOW) is None


# -- polls -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
async def test_a_poll_retries_transient_statuses(code: int) -> None:
    """429 and 5xx on a GET are retried until an answer comes."""
    script = Script(status(code), status(code), then=answer())
    async with answered_by(script, client_for) as client:
        result = await client.get_task("t-1")
    assert result.task_id == "t-1"
    assert script.count("GET") == 3


async def test_a_poll_retries_resets() -> None:
    """Connections reset without an answer are retried on a GET."""
    script = Script(reset, reset, reset, then=answer())
    async with serve(script) as url, client_for(url) as client:
        result = await client.get_task("t-1")
    assert result.task_id == "t-1"
    assert script.count("GET") == 4


async def test_a_poll_retries_timeouts() -> None:
    """A GET that times out is tried again."""
    script = Script(slow(10.0, answer()), then=answer())
    async with serve(script) as url, client_for(url, timeout=Timeouts(total=0.2)) as client:
        started = time.monotonic()
        result = await client.get_task("t-1")
    assert result.task_id == "t-1"
    assert script.count("GET") == 2
    assert time.monotonic() - started < 10.0  # did not wait for the slow answer


async def test_a_poll_retries_unreadable_answers() -> None:
    """A 200 whose JSON is cut short is retried on a GET."""

    async def truncated(request: web.Request) -> web.StreamResponse:
        return web.Response(text='{"task": {', content_type="application/json")

    script = Script(truncated, then=answer())
    async with answered_by(script, client_for) as client:
        assert (await client.get_task("t-1")).task_id == "t-1"
    assert script.count("GET") == 2


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_a_poll_gives_up_after_max_retries(max_retries: int) -> None:
    """A GET is tried 1 + max_retries times, then the last error is raised."""
    script = Script(then=status(503))
    async with answered_by(script, client_for, max_retries=max_retries) as client:
        with pytest.raises(InternalServerError):
            await client.get_task("t-1")
    assert script.count("GET") == max_retries + 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, APIStatusError),
    ],
)
async def test_a_poll_never_retries_client_errors(code: int, error: type[Exception]) -> None:
    """400, 401, 403 and a 404 for a task this client did not just submit are not retried."""
    script = Script(then=status(code))
    async with answered_by(script, client_for) as client:
        with pytest.raises(error):
            await client.get_task("t-1")
    assert script.count("GET") == 1


async def test_a_poll_rides_out_the_fakes_faults(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """5xx, 429, resets and truncated answers from the fake never reach the caller of wait."""
    faults = Faults(server_error=0.15, rate_limit=0.1, reset=0.1, malformed_json=0.1)
    async with fake_hailuo_factory(faults=faults, seed=11, retry_after=True) as server:
        async with fake_client(server, max_retries=12, on_unknown_submission="resubmit") as client:
            results = [await client.generate(REQUEST, timeout=20) for _ in range(4)]
    assert all(result.ok for result in results)
    injected = server.stats.faults_injected
    assert {"server_error", "rate_limit", "reset", "malformed_json"} <= set(injected)


# -- the 404 grace after a submit --------------------------------------------------------------


async def test_a_404_right_after_submit_is_retried() -> None:
    """A task the service does not know yet, just after its submission, is polled again."""
    script = Script(answer("t-new"), status(404), status(404), then=answer("t-new"))
    async with answered_by(script, client_for) as client:
        task_id = await client.submit(REQUEST)
        result = await client.get_task(task_id)
    assert result.task_id == "t-new"
    assert script.count("GET") == 3


async def test_the_404_grace_is_short() -> None:
    """A 404 outside the grace period is final; inside it, retries stop once it ends."""
    # A grace of 1 s: long enough for several polls even on a busy machine.
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.02, not_found_grace=1.0)
    script = Script(answer("t-new"), then=status(404))
    async with (
        answered_by(script, client_for, retry_policy=policy, max_retries=200) as client,
    ):
        task_id = await client.submit(REQUEST)
        started = time.monotonic()
        with pytest.raises(NotFoundError):
            await client.get_task(task_id)
        elapsed = time.monotonic() - started
        polls_in_grace = script.count("GET")
        with pytest.raises(NotFoundError):
            await client.get_task(task_id)
    assert elapsed >= 0.5
    # Fewer than max_retries: the retries stopped when the grace ended, not when they ran out.
    assert 1 < polls_in_grace < 200
    assert script.count("GET") == polls_in_grace + 1


# -- Retry-After -------------------------------------------------------------------------------


async def test_retry_after_seconds_are_honoured() -> None:
    """A 429 with Retry-After: 0.3 delays the retry by 0.3 s, not the 0.01 s backoff."""
    script = Script(
        status(429, {"Retry-After": "0.3"}),
        answer("t-new"),
        status(429, {"Retry-After": "0.3"}),
        then=answer("t-new"),
    )
    async with answered_by(script, client_for) as client:
        started = time.monotonic()
        await client.submit(REQUEST)
        submitted = time.monotonic()
        await client.get_task("t-new")
        polled = time.monotonic()
    assert 0.3 <= submitted - started < 5.0
    assert 0.3 <= polled - submitted < 5.0
    assert script.count("POST") == 2


async def test_retry_after_http_dates_are_honoured() -> None:
    """A Retry-After HTTP date two seconds ahead delays the retry by about that much."""
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    script = Script(status(429, {"Retry-After": when}), then=answer())
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_retry_after=5)
    async with answered_by(script, client_for, retry_policy=policy) as client:
        started = time.monotonic()
        await client.get_task("t-1")
    assert 0.9 <= time.monotonic() - started < 5.0  # under max_retry_after: the date was read


async def test_a_rate_limit_error_carries_its_retry_after() -> None:
    """The final RateLimitError holds the parsed Retry-After in seconds."""
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    script = Script(status(429, {"Retry-After": "7"}), then=status(429, {"Retry-After": when}))
    async with serve(script) as url:
        async with client_for(url, max_retries=0) as client:
            with pytest.raises(RateLimitError) as seconds:
                await client.get_task("t-1")
        async with client_for(url, max_retries=0) as client:
            with pytest.raises(RateLimitError) as date:
                await client.get_task("t-1")
    assert seconds.value.retry_after == 7
    assert date.value.retry_after is not None
    assert 28 <= date.value.retry_after <= 30


async def test_retry_after_is_capped() -> None:
    """An absurd Retry-After is cut to max_retry_after, for the retry and the client's pause."""
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_retry_after=0.2)
    script = Script(status(429, {"Retry-After": "3600"}), then=answer())
    async with answered_by(script, client_for, retry_policy=policy) as client:
        started = time.monotonic()
        with anyio.fail_after(60):
            await client.get_task("t-1")
    assert 0.2 <= time.monotonic() - started < 60  # not the hour asked for


async def test_a_429_without_retry_after_backs_off_by_the_policy() -> None:
    """With no Retry-After, the waits follow the retry policy's short backoff."""
    script = Script(status(429), status(429), status(429), then=answer())
    async with answered_by(script, client_for) as client:
        started = time.monotonic()
        with anyio.fail_after(5):
            await client.get_task("t-1")
    assert script.count("GET") == 4
    # Pauses from the policy's 0.01 s, doubling, are 0.07 s in all; from 1 s they would be 7 s.
    assert time.monotonic() - started < 3.0


async def test_one_early_429_does_not_throttle_the_client_to_a_crawl() -> None:
    """After one 429 (Retry-After 0.1 s) on a fresh client, the next polls flow normally."""
    script = Script(status(429, {"Retry-After": "0.1"}), then=answer())
    async with serve(script) as url, HailuoClient(KEY, base_url=url) as client:
        await client.get_task("t-1")
        with anyio.fail_after(1):
            for _ in range(3):
                await client.get_task("t-1")


# -- submits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
async def test_a_submit_retries_statuses_that_started_nothing(code: int) -> None:
    """429 and 5xx on a POST mean no job started: it is sent again."""
    script = Script(status(code), status(code), then=answer("t-new"))
    async with answered_by(script, client_for) as client:
        assert await client.submit(REQUEST) == "t-new"
    assert script.count("POST") == 3


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, APIStatusError),
    ],
)
async def test_a_submit_never_retries_client_errors(code: int, error: type[Exception]) -> None:
    """400, 401, 403 (and other 4xx) on a POST raise at once."""
    script = Script(then=status(code))
    async with answered_by(script, client_for, on_unknown_submission="resubmit") as client:
        with pytest.raises(error):
            await client.submit(REQUEST)
    assert script.count("POST") == 1


async def test_fake_5xx_and_429_on_submit_are_retried_then_raised(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """Against the fake, a POST that always meets 5xx or 429 is sent 1 + max_retries times."""
    for faults, error in [
        (Faults(server_error=1.0), InternalServerError),
        (Faults(rate_limit=1.0), RateLimitError),
    ]:
        async with fake_hailuo_factory(faults=faults, retry_after=True) as server:
            async with fake_client(server, max_retries=2) as client:
                with pytest.raises(error):
                    await client.submit(REQUEST)
        assert server.stats.submission_attempts == 3
        assert server.stats.submissions_accepted == 0


async def test_a_submit_retries_when_nothing_could_be_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused connection cannot have started a job: the POST is tried again, then raised."""

    async def nothing(request: web.Request) -> web.StreamResponse:
        raise AssertionError("unreachable")

    async with serve(nothing) as url:
        pass  # the port is free again once the app is gone
    caplog.set_level(logging.DEBUG, logger="hailuo_async")
    async with client_for(url, max_retries=2) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.submit(REQUEST)
    assert not isinstance(info.value, SubmissionUnknownError)
    assert info.value.request_sent is False
    attempts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("POST ")]
    assert [f"(attempt {n}," in line for n, line in enumerate(attempts, 1)] == [True] * 3


async def test_an_accepted_but_lost_submit_is_not_resent(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """The job was created but the answer was lost: SubmissionUnknownError, sent once only."""
    async with fake_hailuo_factory(faults=Faults(accepted_but_lost=1.0)) as server:
        async with fake_client(server, max_retries=5) as client:
            with pytest.raises(SubmissionUnknownError) as info:
                await client.submit(REQUEST)
    stats = server.stats
    assert stats.submission_attempts == 1
    assert stats.submissions_accepted == 1
    assert stats.lost_task_ids == stats.task_ids
    assert stats.duplicate_submissions == 0
    error = info.value
    assert error.request is REQUEST
    assert error.reason
    assert isinstance(error.__cause__, APIConnectionError)
    assert error.__cause__.request_sent is True


async def test_a_reset_after_sending_is_an_unknown_outcome(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """A reset after the body left cannot be told from a lost answer: not resent either."""
    async with fake_hailuo_factory(faults=Faults(reset=1.0)) as server:
        async with fake_client(server) as client:
            with pytest.raises(SubmissionUnknownError):
                await client.submit(REQUEST)
    assert server.stats.submission_attempts == 1
    assert server.stats.submissions_accepted == 0


async def test_an_unreadable_200_to_a_submit_is_an_unknown_outcome(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """A 200 with truncated JSON started a job whose id is lost: SubmissionUnknownError, once."""
    async with fake_hailuo_factory(faults=Faults(malformed_json=1.0)) as server:
        async with fake_client(server) as client:
            with pytest.raises(SubmissionUnknownError) as info:
                await client.submit(REQUEST)
    assert isinstance(info.value.__cause__, APIResponseValidationError)
    assert server.stats.submission_attempts == 1
    assert len(server.stats.lost_task_ids) == 1


async def test_a_submit_timeout_after_sending_is_an_unknown_outcome(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """A POST whose answer is too slow is not resent; the fake saw its task lost."""
    async with fake_hailuo_factory(faults=Faults(slow=1.0, slow_seconds=0.3)) as server:
        async with fake_client(server, timeout=Timeouts(total=0.1)) as client:
            with pytest.raises(SubmissionUnknownError) as info:
                await client.submit(REQUEST)
        assert isinstance(info.value.__cause__, APITimeoutError)
        assert server.stats.submission_attempts == 1
        assert server.stats.submissions_accepted == 1
        with anyio.fail_after(3):
            while not server.stats.lost_task_ids:  # noqa: ASYNC110 - the fake's own counter
                await anyio.sleep(0.02)
        assert server.stats.lost_task_ids == server.stats.task_ids


async def test_resubmit_sends_again_on_an_unknown_outcome(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """With on_unknown_submission="resubmit" a lost answer is retried, paying again."""
    async with fake_hailuo_factory(faults=Faults(accepted_but_lost=1.0)) as server:
        async with fake_client(server, max_retries=2, on_unknown_submission="resubmit") as client:
            with pytest.raises(SubmissionUnknownError) as info:
                await client.submit(REQUEST)
    assert server.stats.submission_attempts == 3
    assert server.stats.submissions_accepted == 3
    assert server.stats.duplicate_submissions == 2
    assert "not sent again" not in str(info.value)


async def test_resubmit_returns_the_id_that_got_through(
    fake_hailuo_factory: FakeHailuoFactory,
) -> None:
    """When some answers are lost, resubmitting returns a live id for every request."""
    async with fake_hailuo_factory(faults=Faults(accepted_but_lost=0.5), seed=5) as server:
        async with fake_client(server, max_retries=10, on_unknown_submission="resubmit") as client:
            task_ids = [await client.submit(VideoRequest(prompt=f"job {i}")) for i in range(6)]
    stats = server.stats
    assert stats.lost_task_ids
    assert set(task_ids).isdisjoint(stats.lost_task_ids)
    assert stats.submissions_accepted == len(task_ids) + len(stats.lost_task_ids)
    assert stats.duplicate_submissions == len(stats.lost_task_ids)


async def test_a_submit_reset_on_a_script_is_not_resent() -> None:
    """Against a bare app too, a reset POST is sent once and reported as unknown."""
    script = Script(reset, then=answer("t-new"))
    async with serve(script) as url, client_for(url, max_retries=4) as client:
        with pytest.raises(SubmissionUnknownError):
            await client.submit(REQUEST)
        assert script.count("POST") == 1
        assert await client.submit(REQUEST) == "t-new"


# -- the decision table, as the module's docstring draws it ---------------------------------------


def _never_opened() -> APIConnectionError:
    return APIConnectionError("refused", request_sent=False)


def _after_sending() -> APIConnectionError:
    return APIConnectionError("reset", request_sent=True)


def _timed_out() -> APITimeoutError:
    return APITimeoutError("no answer in time", request_sent=True)


def _unreadable() -> APIResponseValidationError:
    return APIResponseValidationError("bad body", status_code=200, body="{")


def _answered(error: type[APIStatusError], code: int) -> APIStatusError:
    return error(f"{code}", status_code=code)


TABLE: list[tuple[Callable[[], BaseException], tuple[bool, bool, bool]]] = [
    # failure: (submit, submit with "resubmit", poll)
    (_never_opened, (True, True, True)),
    (_after_sending, (False, True, True)),
    (_timed_out, (False, True, True)),
    (_unreadable, (False, True, True)),
    (partial(_answered, InternalServerError, 503), (True, True, True)),
    (partial(_answered, RateLimitError, 429), (True, True, True)),
    (partial(_answered, NotFoundError, 404), (False, False, False)),
    (partial(_answered, AuthenticationError, 401), (False, False, False)),
    (partial(_answered, PermissionDeniedError, 403), (False, False, False)),
    (partial(_answered, BadRequestError, 400), (False, False, False)),
    (partial(_answered, APIStatusError, 409), (False, False, False)),
]


@pytest.mark.parametrize(("failure", "expected"), TABLE)
def test_the_decision_table(
    failure: Callable[[], BaseException], expected: tuple[bool, bool, bool]
) -> None:
    """Which failures each kind of API request retries: a possibly paid POST only by choice."""
    policy = RetryPolicy()
    exc = failure()
    assert (
        policy.retries("submit", exc),
        policy.retries("submit", exc, resubmit=True),
        policy.retries("poll", exc),
    ) == expected
    # No API error is a storage failure: a download retries only its own.
    assert not policy.retries("download", exc)


def test_a_404_is_retried_only_in_its_grace_and_only_for_reads() -> None:
    """A 404 right after the submission is the service catching up; never for a POST."""
    policy, missing = RetryPolicy(), _answered(NotFoundError, 404)
    assert policy.retries("poll", missing, in_not_found_grace=True)
    assert not policy.retries("submit", missing, in_not_found_grace=True, resubmit=True)


def test_a_watch_backs_off_after_failed_polls_then_ends() -> None:
    """Failed polls in a row space the next poll out toward the cap, then end the watch."""
    policy = RetryPolicy(max_failed_polls=4)
    waits = [policy.after_failed_poll(n, floor=1.0, cap=5.0) for n in range(1, 5)]
    assert waits == [2.0, 4.0, 5.0, None]


def _after_script(*codes: int) -> Script:
    """An API whose POSTs meet 429s (Retry-After 0) with ``codes``, then an id; whose polls
    find the task succeeded."""

    async def succeeded(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return web.json_response({"task_id": "t-1"})
        task = {"task_id": "t-1", "status": "TASK_STATUS_SUCCEED"}
        video = {"video_url": "https://storage.example/v.mp4", "video_type": "mp4"}
        return web.json_response({"task": task, "videos": [video], "extra": {}})

    return Script(*(status(code, {"Retry-After": "0"}) for code in codes), then=succeeded)


async def test_a_batch_waits_for_a_place_after_each_429_not_a_retry() -> None:
    """In a batch a 429 gives the place back and waits for one: no retry of max_retries spent."""
    script = _after_script(429, 429, 429)
    policy = RetryPolicy(max_retries=0, rate_limited_waits=3)
    polls = PollPolicy(first_poll_delay=0, min_interval=0.01, max_interval=0.05)
    async with answered_by(script, client_for, retry_policy=policy, poll_policy=polls) as client:
        async with client.generate_many([REQUEST], max_active_jobs=1) as outcomes:
            (outcome,) = [outcome async for outcome in outcomes]
    assert outcome.ok, outcome.error
    assert script.count("POST") == 4


async def test_a_batch_gives_up_once_its_waits_and_retries_are_spent() -> None:
    """Past ``rate_limited_waits`` a 429 spends ``max_retries``, then the job fails with it."""
    script = _after_script(429, 429, 429, 429)
    policy = RetryPolicy(max_retries=1, rate_limited_waits=2, initial_delay=0, max_delay=0)
    async with answered_by(script, client_for, retry_policy=policy) as client:
        async with client.generate_many([REQUEST], max_active_jobs=1) as outcomes:
            (outcome,) = [outcome async for outcome in outcomes]
    assert isinstance(outcome.error, RateLimitError)
    assert script.count("POST") == 4
