"""Hostile input: every VideoRequest built is one the service takes; every answer, a typed error."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hailuo_async import (
    APITimeoutError,
    BadRequestError,
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    PollPolicy,
    RetryPolicy,
    SubmissionUnknownError,
    Timeouts,
    VideoRequest,
)
from hailuo_async.providers._gateway import gateway_body
from hailuo_async.testing import FakeHailuoServer, Fixed

from .support import Figures, canary, count_in, error_texts, scaled, serve

pytestmark = pytest.mark.anyio

HOSTILE = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
REQUEST_EXAMPLES = scaled(fast=150, soak=2000)
RESPONSE_EXAMPLES = scaled(fast=120, soak=1500)
KEY = canary()
REQUEST = VideoRequest(prompt="a heron standing in shallow water")
AUTH = "{AUTH}"
"""Replaced by the Authorization header the server got: an answer that echoes the key."""

# -- VideoRequest fields ------------------------------------------------------------------------

SPECIALS = [
    "\x00", "\u202e", "\u200f", "\u061c", "\u2066", "\ud800", "\udfff", "\ufeff", "\U0001f30a",
    "\u0301", "\n", "\r", "\t", "\\", '"', "\u2028", "\x7f", "\uffff", "\U0010ffff", "\x1f",
]  # fmt: skip
characters = st.characters(exclude_categories=()) | st.sampled_from(SPECIALS)
short_text = st.text(characters, max_size=30)


def of_length(length: int, fill: str, tail: str) -> str:
    """``length`` code points of ``fill`` ending in ``tail`` (a prompt near the 2000 limit)."""
    body = fill * length + tail
    return body[len(body) - length :] if length else ""


long_prompts = st.builds(
    of_length,
    st.integers(1990, 2010),
    st.sampled_from(["a", "\u00e9", "\U0001f30a", "\u202e", "\x00", " ", "\u0301"]),
    st.text(characters, max_size=4),
)
prompts = short_text | long_prompts | st.sampled_from([None, 0, b"bytes", ["a list"], "", " "])


@attrs.frozen
class FileRef:
    """A file made by the test's ``files`` fixture, passed to VideoRequest as a Path."""

    name: str


MAGIC = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"GIF89a",
    b"",
    b"<svg",
]
image_bytes = st.builds(
    lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=40)
)
mimes = st.sampled_from(
    [
        "image/png", "image/jpeg", "image/webp", "image/PNG", "IMAGE/png", "image/.png",
        "image/+x", "image/-", "image/" + "x" * 70, "image/", "text/plain", "image/svg+xml",
        "image/png;charset=utf-8", "image/p\u00e9ng",
    ]
) | short_text.map(lambda text: "image/" + text)  # fmt: skip
b64_payloads = (
    st.binary(max_size=30).map(lambda raw: base64.b64encode(raw).decode())
    | st.sampled_from(
        [
            "",
            "=",
            "====",
            "!!!!",
            "aGVsbG8",
            "aGVs bG8=",
            "aGVs\nbG8=",
            "-_-_",
            "aGVsbG8=\n",
            "\u00e9\u00e9",
        ]
    )
    | short_text
)
data_uris = (
    st.builds(lambda mime, data: f"data:{mime};base64,{data}", mimes, b64_payloads)
    | st.builds(lambda data: f"data:image/png,{data}", b64_payloads)
    | st.sampled_from(["data:", "data:image/png;base64", "DATA:image/png;base64,aGVsbG8="])
)
url_hosts = st.sampled_from(
    [
        "example.com", "", "[::1]", "[::1", "[fe80::1%25eth0]", "127.0.0.1", "exa mple.com",
        "ex\u00e4mple.com", "xn--exmple-cua.com", "a" * 300, "user:pw@example.com", "example.com.",
        "-", "ex\x00ample.com", "[v1.fe]", "999.999.999.999", "\u202eexample.com", "example.com#",
    ]
)  # fmt: skip
url_ports = st.sampled_from(
    ["", "", ":80", ":0", ":65535", ":65536", ":99999", ":abc", ":-1", ":", ": 80", ":\uff18\uff10"]
)
urls = (
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "HTTP", "Https", "ftp", "file", "javascript", ""]),
        url_hosts,
        url_ports,
        short_text,
    )
    | short_text
)
images = (
    st.none()
    | image_bytes
    | image_bytes.map(bytearray)
    | data_uris
    | urls
    | st.sampled_from(["empty", "garbage", "png", "jpeg", "missing", "folder", "oversized"]).map(
        FileRef
    )
    | st.sampled_from([0, 1.5, ["https://example.com/a.png"], {"url": "x"}])
)
durations = (
    st.sampled_from([6, 10])
    | st.integers(-3, 20)
    | st.sampled_from([True, False, 6.0, "6", None, 10**30, -0.0])
)
resolutions = (
    st.sampled_from(["768P", "1080P"])
    | st.sampled_from(
        ["768p", "1080p", "720P", "", " 768P", "768P ", None, 768, "\uff17\uff16\uff18P"]
    )
    | st.text(max_size=6)
)
flags = st.booleans() | st.sampled_from([0, 1, "true", "", None, 1.0])
webhooks = st.none() | urls | st.sampled_from(["https://hooks.example/h", 5, b"https://x.example"])
hostile_kwargs = st.fixed_dictionaries(
    {"prompt": prompts},
    optional={
        "image": images,
        "end_image": images,
        "duration": durations,
        "resolution": resolutions,
        "enable_prompt_expansion": flags,
        "fast_pretreatment": flags,
        "webhook_url": webhooks,
    },
)
"""Every field hostile: most of these are refused, each by the rule it breaks."""
plausible_urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["example.com", "127.0.0.1", "[::1]", "cdn.example.org", "xn--exmple-cua.com"]),
    url_ports,
    st.text(st.characters(codec="ascii", exclude_characters=" \t\n\r\x0b\x0c"), max_size=12),
)
plausible_images = (
    plausible_urls
    | st.builds(
        lambda mime, raw: f"data:{mime};base64,{base64.b64encode(raw).decode()}",
        mimes,
        st.binary(min_size=1, max_size=30),
    )
    | st.builds(
        lambda magic, tail: magic + tail, st.sampled_from(MAGIC[:3]), st.binary(max_size=40)
    )
    | st.sampled_from(["png", "jpeg"]).map(FileRef)
)
plausible_kwargs = st.fixed_dictionaries(
    {"prompt": st.text(characters, min_size=1, max_size=30) | long_prompts},
    optional={
        "image": plausible_images,
        "end_image": plausible_images,
        "duration": st.sampled_from([6, 10]),
        "resolution": st.sampled_from(["768P", "1080P"]),
        "enable_prompt_expansion": st.booleans(),
        "fast_pretreatment": st.booleans(),
        "webhook_url": st.none() | plausible_urls,
    },
)
"""Mostly valid fields with tricky images and URLs: these reach the fake."""
request_kwargs = hostile_kwargs | plausible_kwargs


def resolve(kwargs: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The kwargs with each FileRef turned into a Path to the file of that name."""
    return {
        name: folder / value.name if isinstance(value, FileRef) else value
        for name, value in kwargs.items()
    }


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Image files of every sort, good and bad."""
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "garbage").write_bytes(os.urandom(64))
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(32))
    (tmp_path / "jpeg").write_bytes(b"\xff\xd8\xff" + os.urandom(32))
    (tmp_path / "folder").mkdir()
    with (tmp_path / "oversized").open("wb") as sparse:
        sparse.truncate(20 * 1024 * 1024 + 1)
    return tmp_path


@pytest.fixture
async def fake_client() -> AsyncIterator[HailuoClient]:
    """A client on a fake whose jobs never end during the test (so no webhook is sent)."""
    async with FakeHailuoServer(api_key=KEY, job_duration=Fixed(3600), seed=2) as server:
        async with HailuoClient(KEY, base_url=server.url, max_retries=0) as client:
            yield client


REQUEST_TALLY: Counter[str] = Counter()


@settings(HOSTILE, max_examples=REQUEST_EXAMPLES)
@given(kwargs=request_kwargs)
@example(kwargs={"prompt": "p", "image": "https://example.com:65536/a.png"})
async def test_hostile_requests_are_refused_or_accepted(
    kwargs: dict[str, Any], files: Path, fake_client: HailuoClient, figures: Figures
) -> None:
    """VideoRequest raises only InvalidRequestError, and the fake takes any request it builds."""
    try:
        await build_and_submit(resolve(kwargs, files), fake_client)
    finally:
        figures.record(
            "3a. hostile VideoRequest fields (hypothesis)",
            {"max_examples": REQUEST_EXAMPLES, **dict(sorted(REQUEST_TALLY.items()))},
            quiet=True,
        )


async def build_and_submit(kwargs: dict[str, Any], client: HailuoClient) -> None:
    """Build a VideoRequest from ``kwargs``; if that works, the fake must take it."""
    try:
        request = VideoRequest(**kwargs)
    except InvalidRequestError as exc:
        REQUEST_TALLY[f"refused by VideoRequest ({exc.field})"] += 1
        return
    try:
        await client.submit(request)
    except BadRequestError as exc:
        REQUEST_TALLY["built by VideoRequest, refused by the fake (400)"] += 1
        payload = {
            name: value if len(str(value)) < 200 else f"{str(value)[:200]}..."
            for name, value in gateway_body(request).items()
        }
        raise AssertionError(f"the fake refused a request we built: {exc}\n{payload}") from exc
    REQUEST_TALLY["built by VideoRequest and accepted by the fake"] += 1


@pytest.mark.parametrize(
    "image",
    [
        "https://example.com/a.png",
        "https://example.com:443/a.png",
        "https://example.com:65536/a.png",
        "https://example.com:99999/a.png",
        "https://example.com:abc/a.png",
        "data:image/png;base64,aGVsbG8=",
        "data:image/.png;base64,aGVsbG8=",
        "data:image/-;base64,aGVsbG8=",
        "data:image/" + "x" * 70 + ";base64,aGVsbG8=",
    ],
)
async def test_the_library_and_the_service_agree_on_images(
    image: str, fake_client: HailuoClient
) -> None:
    """An image string is refused by VideoRequest, or accepted by the service: never a 400."""
    await build_and_submit({"prompt": "a heron", "image": image}, fake_client)
    await build_and_submit({"prompt": "a heron", "end_image": image}, fake_client)


async def test_an_image_at_the_size_limit_is_accepted(
    tmp_path: Path, fake_client: HailuoClient
) -> None:
    """A 20 MB image is built and accepted; one byte more is refused before sending."""
    limit = 20 * 1024 * 1024
    image = b"\x89PNG\r\n\x1a\n" + bytes(limit - 8)
    await fake_client.submit(VideoRequest(prompt="p", image=image))
    with pytest.raises(InvalidRequestError):
        VideoRequest(prompt="p", image=image + b"\x00")


# -- answers of the service -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(characters, max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
numbers = st.sampled_from(["", "12", "1e400", "nan", "inf", "-1", "abc", True, None, 2**70]) | (
    st.floats() | st.integers()
)
statuses = st.sampled_from(
    [
        "TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED",
        "TASK_STATUS_FAILED", "TASK_STATUS_CANCELED", "succeed", "", " ", "\u0000",
    ]
)  # fmt: skip
tasks = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.sampled_from(["t-1", "t-2", "", None, 7]),
        "status": statuses | json_values,
        "reason": json_values,
        "eta": numbers,
        "progress_percent": numbers,
    },
)
videos = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "video_url": st.sampled_from(["https://s.example/v.mp4?sig=1", "", "nope", None, 5]),
            "video_url_ttl": numbers,
            "video_type": json_values,
        },
    )
    | json_values,
    max_size=3,
)
results = st.fixed_dictionaries(
    {},
    optional={
        "task": tasks | json_values,
        "videos": videos | json_values,
        "extra": json_values,
        "task_id": st.sampled_from(["t-1", "", None, 0, ["t-1"], AUTH]),
    },
)


def encode(value: object) -> bytes:
    """JSON as a lenient gateway writes it (NaN and Infinity included)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def cut(data: bytes, at: float) -> bytes:
    """``data`` cut short at fraction ``at``."""
    return data[: int(len(data) * at)]


def nested(depth: int, as_objects: bool) -> bytes:
    """JSON nested ``depth`` levels deep."""
    if as_objects:
        return b'{"task":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


HTML = (
    "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
bodies = st.one_of(
    results.map(encode),
    json_values.map(encode),
    st.builds(cut, results.map(encode), st.floats(0, 1)),
    st.builds(nested, st.integers(10, 200_000), st.booleans()),
    st.integers(1, 4).map(
        lambda k: (
            b'{"task": {"status": "TASK_STATUS_QUEUED"}, "pad": "' + b"x" * k * 100_000 + b'"}'
        )
    ),
    st.text(characters, max_size=40).map(lambda t: HTML.format(t).encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.just(f'{{"message": "bad key {AUTH}", "metadata": {{"k": "{AUTH}"}}}}'.encode()),
)
content_types = st.sampled_from(
    ["application/json", "text/html", "text/plain", "application/json; charset=latin-1", ""]
)
retry_afters = st.none() | st.sampled_from(
    ["0", "1e308", "nan", "inf", "-1", "0.001", "Wed, 21 Oct 2015 07:28:00 GMT",
     "Fri, 31 Dec 9999 23:59:59 GMT", "soon", AUTH]
)  # fmt: skip
http_statuses = st.sampled_from(
    [200, 200, 200, 200, 201, 202, 204, 301, 302, 307, 400, 401, 403, 404, 409, 410, 413, 418,
     422, 429, 429, 500, 501, 502, 503, 504, 520, 599]
)  # fmt: skip


@attrs.frozen
class Answer:
    """One answer the tiny server gives to every request."""

    status: int
    body: bytes
    content_type: str
    retry_after: str | None
    short_by: int
    """Bytes the body falls short of its Content-Length (0: a complete body)."""
    gzip: bool
    """Claim a gzip encoding the body does not have."""


plausible_results = st.fixed_dictionaries(
    {
        "task": st.fixed_dictionaries(
            {"task_id": st.just("t-1"), "status": statuses},
            optional={"reason": json_values, "eta": numbers, "progress_percent": numbers},
        )
    },
    optional={"videos": videos, "extra": json_values, "images": json_values},
) | st.fixed_dictionaries({"task_id": st.sampled_from(["t-1", "x" * 300, "\u202et-1"])})
"""A 200 with the documented shape, its values hostile: these reach the decoder."""
plausible_answers = st.builds(
    Answer,
    status=st.just(200),
    body=plausible_results.map(encode),
    content_type=st.just("application/json"),
    retry_after=st.none(),
    short_by=st.just(0),
    gzip=st.just(False),
)
answers = plausible_answers | st.builds(
    Answer,
    status=http_statuses,
    body=bodies,
    content_type=content_types,
    retry_after=retry_afters,
    short_by=st.sampled_from([0, 0, 0, 1, 100]),
    gzip=st.sampled_from([False, False, False, True]),
)


@attrs.define
class Scripted:
    """A server whose every answer is the current ``answer``."""

    answer: Answer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        answer = self.answer
        assert answer is not None
        auth = request.headers.get("Authorization", "")
        body = answer.body.replace(AUTH.encode(), auth.encode())
        headers = {"X-Echo": auth}
        if answer.content_type:
            headers["Content-Type"] = answer.content_type
        if answer.retry_after is not None:
            headers["Retry-After"] = answer.retry_after.replace(AUTH, auth)
        if answer.gzip:
            headers["Content-Encoding"] = "gzip"
        if answer.status == 204:
            return web.Response(status=204, headers=headers)
        if not answer.short_by:
            return web.Response(status=answer.status, body=body, headers=headers)
        response = web.StreamResponse(status=answer.status, headers=headers)
        response.content_length = len(body) + answer.short_by
        await response.prepare(request)
        await response.write(body)
        if request.transport is not None:
            request.transport.close()
        return response


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    """One scripted server for all of a test's examples."""
    server = Scripted()
    async with serve(server.handle) as url:
        yield server, url


def hostile_client(url: str, *, timeout: float = 1.0) -> HailuoClient:
    """A client that gives up fast: every call below must end well within its deadline."""
    return HailuoClient(
        KEY,
        base_url=url,
        max_retries=1,
        timeout=Timeouts(total=timeout, connect=timeout),
        retry_policy=RetryPolicy(
            initial_delay=0.001, max_delay=0.002, max_retry_after=0.01, not_found_grace=0.05
        ),
        poll_policy=PollPolicy(first_poll_delay=0.01, min_interval=0.01, max_interval=0.02),
        max_response_bytes=200_000,
    )


RESPONSE_TALLY: Counter[str] = Counter()
CALL_DEADLINE = 5.0


async def call_each(client: HailuoClient) -> list[str]:
    """get_task, submit and wait once each; what each returned or raised."""
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("get_task", lambda: client.get_task("t-1")),
        ("submit", lambda: client.submit(REQUEST)),
        ("wait", lambda: client.wait("t-1", timeout=0.3)),
    ]
    seen = []
    for name, call in calls:
        try:
            with anyio.fail_after(CALL_DEADLINE):
                await call()
        except HailuoError as exc:
            leaked = count_in(KEY, error_texts(exc))
            RESPONSE_TALLY["canary key appearances in errors"] += leaked
            seen.append(f"{name}: {type(exc).__name__}")
        else:
            leaked = 0
            seen.append(f"{name}: returned")
        assert leaked == 0, f"{name}: the key leaked through its error"
    return seen


@settings(HOSTILE, max_examples=RESPONSE_EXAMPLES)
@given(answer=answers)
@example(
    answer=Answer(
        status=200,
        body=b'{"task": {"task_id": "t-1", "status": "TASK_STATUS_QUEUED"},'
        b' "videos": [{"video_url": "https://s.example/v.mp4", "video_url_ttl": 1e12}]}',
        content_type="application/json",
        retry_after=None,
        short_by=0,
        gzip=False,
    )
)
async def test_hostile_answers_raise_only_typed_errors(
    answer: Answer, scripted: tuple[Scripted, str], figures: Figures
) -> None:
    """Whatever the service answers, calls end in time, returning or raising a HailuoError."""
    server, url = scripted
    server.answer = answer
    async with hostile_client(url) as client:
        for outcome in await call_each(client):
            RESPONSE_TALLY[outcome] += 1
        assert KEY not in repr(client)
    RESPONSE_TALLY["examples"] += 1
    figures.record(
        "4. secrets: canary key appearances",
        quiet=True,
        values={
            "hostile answers (errors of every call, echoing servers)": RESPONSE_TALLY[
                "canary key appearances in errors"
            ]
        },
    )
    figures.record(
        "3b. hostile service answers (hypothesis)",
        {"max_examples": RESPONSE_EXAMPLES, **dict(sorted(RESPONSE_TALLY.items()))},
        quiet=True,
    )


@pytest.mark.parametrize("stall", ["before headers", "mid body", "trickle"])
async def test_stalled_answers_end_in_a_timeout(stall: str) -> None:
    """A server that stalls or trickles cannot hang a call: it ends in a typed timeout."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if stall == "before headers":
            await asyncio.sleep(30)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b" ")
            await asyncio.sleep(30 if stall == "mid body" else 0.05)
        return response

    async with serve(handler) as url, hostile_client(url, timeout=0.3) as client:
        with anyio.fail_after(CALL_DEADLINE):
            with pytest.raises(APITimeoutError):
                await client.get_task("t-1")
            with pytest.raises(SubmissionUnknownError) as unknown:
                await client.submit(REQUEST)
    assert isinstance(unknown.value.__cause__, APITimeoutError)


def task_answer(task_id: str, ttl: float) -> dict[str, Any]:
    """A succeeded task's answer whose video URL lives ``ttl`` seconds."""
    video = {"video_url": "https://s.example/v.mp4?sig=1", "video_url_ttl": ttl}
    return {"task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}, "videos": [video]}


@pytest.mark.parametrize("ttl", [1e12, -1e12, 1e20, 1e308])
async def test_an_absurd_video_ttl_is_no_crash(ttl: float) -> None:
    """A video_url_ttl beyond any date is read leniently or raised as a HailuoError."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(task_answer("t-1", ttl))

    async with serve(answer) as url, hostile_client(url) as client:
        with anyio.fail_after(CALL_DEADLINE):
            with contextlib.suppress(HailuoError):
                await client.get_task("t-1")
            with contextlib.suppress(HailuoError):
                await client.wait("t-1", timeout=0.3)


async def test_one_unreadable_answer_does_not_end_a_batch() -> None:
    """A task whose answer holds an absurd TTL does not take the other jobs of its batch down."""
    submitted: list[str] = []

    async def service(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            submitted.append(f"t-{len(submitted)}")
            return web.json_response({"task_id": submitted[-1]})
        task_id = request.query["task_id"]
        return web.json_response(task_answer(task_id, 1e12 if task_id == "t-0" else 3600))

    requests = [VideoRequest(prompt=f"job {i}") for i in range(4)]
    others: list[str] = []
    async with serve(service) as url, hostile_client(url) as client:
        with anyio.fail_after(CALL_DEADLINE):
            async with client.generate_many(requests, max_active_jobs=4) as outcomes:
                async for outcome in outcomes:
                    if outcome.task_id != "t-0":
                        others.append(str(outcome.task_id))
                    if len(others) == 3:
                        break
    assert sorted(others) == ["t-1", "t-2", "t-3"]


async def test_a_key_found_in_answers_does_not_corrupt_them() -> None:
    """A key that also occurs in ordinary answers is refused up front, or answers stay intact."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"task_id": "t-1"})

    async with serve(answer) as url:
        try:
            client = HailuoClient("task", base_url=url, max_retries=0)
        except InvalidRequestError:
            return
        async with client:
            assert await client.submit(REQUEST) == "t-1"


async def test_a_task_never_answered_readably_still_ends() -> None:
    """A task whose every answer is unreadable ends its batch job with a typed error, in time."""

    async def service(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return web.json_response({"task_id": "t-1"})
        return web.json_response({"task": "not an object"})

    async with serve(service) as url, hostile_client(url) as client:
        with anyio.fail_after(CALL_DEADLINE):
            async with client.generate_many([REQUEST]) as outcomes:
                ended = [outcome async for outcome in outcomes]
    assert len(ended) == 1
    assert isinstance(ended[0].error, HailuoError)
