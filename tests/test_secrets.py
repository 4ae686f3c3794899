"""The API key goes to the API host only, over TLS or loopback, and nowhere into text."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator

import pytest
from aiohttp import web
from clientutil import FAST_RETRY, fake_client, serve

from hailuo_async import (
    APIStatusError,
    AuthenticationError,
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    SubmissionUnknownError,
    TaskFailedError,
    Timeouts,
    VideoRequest,
    WaitTimeoutError,
)
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed
from hailuo_async.testing.pytest_plugin import FakeHailuoFactory
from hailuo_async.webhooks import WebhookSecret, aiohttp_handler

pytestmark = pytest.mark.anyio

REQUEST = VideoRequest(prompt="a kite over the dunes")
LOG_LINE = re.compile(
    r"^(GET|POST) (/v3/async/task-result|/v3/async/minimax-hailuo-02) -> (\d{3}|error) "
    r"\(attempt \d+, \d+\.\d{3} s\)$"
)


def canary() -> str:
    """A fresh key that must never show up anywhere it should not."""
    return f"sk-canary-{secrets.token_hex(12)}"


def texts_of(error: BaseException) -> Iterator[str]:
    """Every text an error exposes: str, repr, attributes, and the same for its causes."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(vars(current))
        current = current.__cause__ or current.__context__


# -- where the key may go ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com",
        "http://10.0.0.1:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://[2001:db8::1]/",
    ],
)
def test_plain_http_is_refused_off_loopback(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An http base URL to another machine is refused (argument or variable), unless allowed."""
    with pytest.raises(InvalidRequestError) as info:
        HailuoClient("k", base_url=url)
    assert info.value.field == "base_url"
    assert "allow_insecure" in str(info.value)
    monkeypatch.setenv("HAILUO_BASE_URL", url)
    with pytest.raises(InvalidRequestError):
        HailuoClient("k")
    assert HailuoClient("k", base_url=url, allow_insecure=True).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080",
        "http://127.0.0.1",
        "http://127.8.9.10:1234/",
        "http://[::1]:9000",
        "https://api.example.com",
        "https://api.example.com/prefix/",
    ],
)
def test_tls_and_loopback_are_accepted(url: str) -> None:
    """https anywhere, and plain http to a loopback address, are fine."""
    assert HailuoClient("k", base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.example.com",
        "api.example.com",
        "https://",
        "https://user:hunter2@api.example.com",
        "https://api.example.com/?key=1",
        "https://api.example.com/#frag",
        "http://[::1",
        "https://api.example.com:99999",
    ],
)
def test_malformed_base_urls_are_refused(url: str) -> None:
    """Non-http(s), hostless, credential-carrying or malformed base URLs are refused."""
    with pytest.raises(InvalidRequestError) as info:
        HailuoClient("k", base_url=url)
    assert info.value.field == "base_url"
    assert "hunter2" not in str(info.value)


async def test_redirects_are_not_followed_with_the_key() -> None:
    """A redirect from the API host is not followed, so the key never reaches the target."""
    key = canary()
    target_hits: list[str] = []
    api_hits: list[str] = []

    async def target(request: web.Request) -> web.StreamResponse:
        target_hits.append(request.headers.get("Authorization", ""))
        return web.json_response({"task_id": "stolen"})

    async with serve(target) as elsewhere:

        async def api(request: web.Request) -> web.StreamResponse:
            api_hits.append(request.headers.get("Authorization", ""))
            raise web.HTTPTemporaryRedirect(elsewhere + request.path_qs)

        async with serve(api) as url, HailuoClient(key, base_url=url) as client:
            with pytest.raises(APIStatusError) as polled:
                await client.get_task("t-1")
            with pytest.raises(APIStatusError):
                await client.submit(REQUEST)
    assert polled.value.status_code == 307
    assert target_hits == []
    assert api_hits == [f"Bearer {key}"] * 2


async def test_the_session_itself_carries_no_key(fake_hailuo: FakeHailuoServer) -> None:
    """The key is attached per API request, not to the shared session's default headers."""
    async with fake_client(fake_hailuo) as client:
        await client.submit(REQUEST)
        session = client._transport.session
        assert "Authorization" not in session.headers
        assert all(fake_hailuo.api_key not in value for value in session.headers.values())


# -- where the key must never appear -----------------------------------------------------------


async def test_a_canary_key_never_reaches_logs_reprs_or_errors(
    fake_hailuo_factory: FakeHailuoFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Across successes, failures, timeouts and unknown outcomes, the key appears in no text."""
    key = canary()
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with fake_hailuo_factory(api_key=key, failure_rate=0.5, seed=4) as server:
        async with fake_client(server) as client:
            assert key not in repr(client)
            assert key not in str(client)
            for _ in range(4):
                try:
                    await client.generate(REQUEST, timeout=5)
                except TaskFailedError as exc:
                    errors.append(exc)
            with pytest.raises(WaitTimeoutError) as timed_out:
                await client.generate(REQUEST, timeout=0.001)
            errors.append(timed_out.value)
            with pytest.raises(HailuoError) as not_found:
                await client.get_task("no-such-task")
            errors.append(not_found.value)
        async with fake_client(server, api_key=key + "x") as wrong:
            with pytest.raises(AuthenticationError) as denied:
                await wrong.submit(REQUEST)
            errors.append(denied.value)
    async with fake_hailuo_factory(
        api_key=key, faults=Faults(accepted_but_lost=0.5, slow=0.5, slow_seconds=0.5)
    ) as server:
        async with fake_client(server, timeout=Timeouts(total=0.1)) as client:
            for _ in range(4):
                with pytest.raises(SubmissionUnknownError) as unknown:
                    await client.submit(REQUEST)
                errors.append(unknown.value)
    assert any(isinstance(e, TaskFailedError) for e in errors)
    for error in errors:
        for text in texts_of(error):
            assert key not in text
    assert caplog.records
    assert key not in caplog.text
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in repr(record.args)


async def test_a_canary_webhook_secret_never_reaches_logs_reprs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch pushed through a receiver with a secret: the secret is in no log, repr or error."""
    secret = WebhookSecret(f"canary-{secrets.token_hex(12)}")
    value = secret.reveal()
    caplog.set_level(logging.DEBUG)
    texts: list[str] = [repr(secret), str(secret)]
    async with FakeHailuoServer(
        in_process=True,
        time_scale=0.01,
        job_duration=Fixed(5.0),
        faults=Faults(accepted_but_lost=0.3),
        seed=8,
    ) as server:
        async with fake_client(server) as client:
            hook = aiohttp_handler(client, secret=secret)
            texts.append(repr(hook.receiver))
            app = web.Application()
            app.router.add_post("/hailuo/webhook/{secret}", hook)
            app.cleanup_ctx.append(hook.cleanup_ctx)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}/hailuo/webhook"
            try:
                request = VideoRequest(prompt="a pushed kite", webhook_url=secret.url(base))
                texts.append(repr(request))
                async with client.generate_many([request] * 6) as outcomes:
                    async for outcome in outcomes:
                        texts.append(repr(outcome))
                        if outcome.error is not None:
                            texts.extend(texts_of(outcome.error))
            finally:
                await runner.cleanup()
        assert server.stats.webhooks_sent > 0, "the pushes went through the secret route"
    assert not any(value in text for text in texts)
    assert value not in caplog.text
    for record in caplog.records:
        assert value not in record.getMessage()
        assert value not in repr(record.args)


async def test_an_echoed_key_is_masked_in_errors() -> None:
    """A gateway that echoes the key in its error body or headers does not leak it through us."""
    key = canary()

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers["Authorization"]
        body = {"message": f"invalid key {auth}", "metadata": {"authorization": auth}}
        headers = {"X-Echo": auth, "Set-Cookie": f"k={key}"}
        return web.json_response(body, status=401, headers=headers)

    async with serve(echo) as url, HailuoClient(key, base_url=url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_task("t-1")
    for text in texts_of(info.value):
        assert key not in text
    assert "invalid key Bearer [redacted]" in str(info.value)


async def test_an_echoed_key_in_a_200_is_masked_too() -> None:
    """Even an unreadable 200 that repeats the key leaves no trace of it in the error."""
    key = canary()

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"<pre>{request.headers['Authorization']}", status=200)

    async with serve(echo) as url, HailuoClient(key, base_url=url, max_retries=0) as client:
        with pytest.raises(HailuoError) as polled:
            await client.get_task("t-1")
        with pytest.raises(SubmissionUnknownError) as submitted:
            await client.submit(REQUEST)
    for error in (polled.value, submitted.value):
        for text in texts_of(error):
            assert key not in text


def test_a_malformed_key_is_not_echoed() -> None:
    """A key with spaces or control characters is refused without quoting it."""
    key = canary()
    for bad in (key + "\n", f"Bearer {key}", key + "\x00"):
        with pytest.raises(InvalidRequestError) as info:
            HailuoClient(bad)
        assert info.value.field == "api_key"
        assert key not in str(info.value)
        assert key not in repr(info.value)


def test_the_key_comes_from_the_environment_unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key read from HAILUO_API_KEY is used but never shown."""
    key = canary()
    monkeypatch.setenv("HAILUO_API_KEY", key)
    client = HailuoClient()
    assert client._api._api_key == key
    assert key not in repr(client)


# -- the debug log -----------------------------------------------------------------------------


async def test_debug_log_has_one_line_per_request(
    fake_hailuo_factory: FakeHailuoFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """One DEBUG line per request on logger hailuo_async: method, path, status, attempt, time."""
    caplog.set_level(logging.DEBUG, logger="hailuo_async")
    async with fake_hailuo_factory(job_duration=Fixed(40)) as server:
        async with fake_client(server) as client:
            await client.generate(REQUEST, timeout=5)
            with pytest.raises(HailuoError):
                await client.get_task("missing-task")
    lines = [r for r in caplog.records if r.name == "hailuo_async"]
    assert all(record.levelno == logging.DEBUG for record in lines)
    messages = [record.getMessage() for record in lines]
    for message in messages:
        assert LOG_LINE.match(message), message
    assert len(messages) == server.stats.submission_attempts + server.stats.polls_total
    assert messages[0].startswith("POST /v3/async/minimax-hailuo-02 -> 200 (attempt 1, ")
    assert messages[-1].startswith("GET /v3/async/task-result -> 404 (attempt 1, ")
    assert not any("task_id=" in message for message in messages)


async def test_failed_requests_are_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    """A request that gets no answer is logged with status "error" and its attempt number."""
    caplog.set_level(logging.DEBUG, logger="hailuo_async")

    async def nothing(request: web.Request) -> web.StreamResponse:
        raise AssertionError("unreachable")

    async with serve(nothing) as url:
        pass  # the port is free again once the app is gone
    async with HailuoClient("k", base_url=url, retry_policy=FAST_RETRY, max_retries=1) as client:
        with pytest.raises(HailuoError):
            await client.get_task("t-1")
    messages = [r.getMessage() for r in caplog.records if r.name == "hailuo_async"]
    assert len(messages) == 2
    assert all(LOG_LINE.match(m) and " -> error " in m for m in messages)
    assert "(attempt 2," in messages[1]


@pytest.mark.parametrize(
    ("journal", "shown"),
    [
        (
            "postgresql://worker:hunter2@db.internal:5432/hailuo",
            "postgresql://worker:***@db.internal:5432/hailuo",
        ),
        (
            "postgresql://worker@db.internal/hailuo?password=hunter2&sslmode=require",
            "postgresql://worker@db.internal/hailuo?password=***&sslmode=require",
        ),
    ],
)
def test_a_printed_resume_command_hides_the_database_password(journal: str, shown: str) -> None:
    """The resume hint names a postgresql:// journal without its password, in either form."""
    from hailuo_async.cli._app import _resume_command, cli

    command = cli.commands["batch"]
    ctx = command.make_context("batch", ["prompts.txt", "--out", "out", "--journal", journal])
    with ctx:
        printed, masked = _resume_command(ctx)
    assert "hunter2" not in printed
    assert shown in printed
    assert masked
