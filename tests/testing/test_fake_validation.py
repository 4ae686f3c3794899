"""The submit endpoint's request rules, both sides of each, over real HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeutil import VALID_BODY, Api, running

from hailuo_async.testing._validation import RequestError, parse_submit_body

pytestmark = pytest.mark.anyio

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
JPEG_URI = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0" + b"1" * 30).decode()


def _with(**fields: Any) -> dict[str, Any]:
    return {**VALID_BODY, **fields}


ACCEPTED = [
    pytest.param(VALID_BODY, id="prompt-only"),
    pytest.param({"prompt": "x"}, id="one-char-prompt"),
    pytest.param({"prompt": "x" * 2000}, id="2000-char-prompt"),
    pytest.param({"prompt": "🎬" * 2000}, id="2000-chars-8000-bytes"),
    pytest.param({"prompt": "é" * 1999 + "e"}, id="2000-chars-accented"),
    pytest.param(_with(duration=6), id="duration-6"),
    pytest.param(_with(duration=10), id="duration-10"),
    pytest.param(_with(duration=6, resolution="1080P"), id="6s-1080P"),
    pytest.param(_with(duration=10, resolution="768P"), id="10s-768P"),
    pytest.param(_with(resolution="768P"), id="768P"),
    pytest.param(_with(image="https://example.com/first.jpg"), id="image-https"),
    pytest.param(_with(image="http://127.0.0.1:9/f.png?x=1"), id="image-http-ip"),
    pytest.param(_with(image=JPEG_URI), id="image-data-uri"),
    pytest.param(_with(image="data:image/png;base64," + PNG), id="image-png-uri"),
    pytest.param(_with(image="data:image/svg+xml;base64," + PNG), id="image-subtype-plus"),
    pytest.param(_with(end_image="https://example.com/last.jpg"), id="end-image-url"),
    pytest.param(_with(image=JPEG_URI, end_image=JPEG_URI), id="both-images"),
    pytest.param(_with(enable_prompt_expansion=False), id="expansion-false"),
    pytest.param(_with(enable_prompt_expansion=True), id="expansion-true"),
    pytest.param(_with(fast_pretreatment=True), id="fast-true"),
    pytest.param(_with(fast_pretreatment=False), id="fast-false"),
    pytest.param(_with(extra={}), id="extra-empty"),
    pytest.param(_with(extra={"webhook": {"url": "https://hooks.example/h"}}), id="webhook"),
    pytest.param(
        _with(
            extra={
                "webhook": {
                    "url": "http://127.0.0.1:1/h",
                    "test_mode": {"enabled": True, "return_task_status": "TASK_STATUS_SUCCEED"},
                }
            }
        ),
        id="webhook-test-mode",
    ),
    pytest.param(
        {
            "prompt": "all fields",
            "image": "https://example.com/a.png",
            "end_image": JPEG_URI,
            "duration": 6,
            "resolution": "1080P",
            "enable_prompt_expansion": False,
            "fast_pretreatment": True,
            "extra": {"webhook": {"url": "https://hooks.example/h"}},
        },
        id="every-field",
    ),
]

REJECTED = [
    pytest.param([], "body", id="array-body"),
    pytest.param("prompt", "body", id="string-body"),
    pytest.param(None, "body", id="null-body"),
    pytest.param(6, "body", id="number-body"),
    pytest.param({}, "prompt", id="prompt-missing"),
    pytest.param({"prompt": ""}, "prompt", id="prompt-empty"),
    pytest.param({"prompt": "x" * 2001}, "prompt", id="prompt-2001"),
    pytest.param({"prompt": "🎬" * 2001}, "prompt", id="prompt-2001-emoji"),
    pytest.param({"prompt": 5}, "prompt", id="prompt-number"),
    pytest.param({"prompt": None}, "prompt", id="prompt-null"),
    pytest.param({"prompt": ["a"]}, "prompt", id="prompt-array"),
    pytest.param(_with(duration=8), "duration", id="duration-8"),
    pytest.param(_with(duration=0), "duration", id="duration-0"),
    pytest.param(_with(duration=6.0), "duration", id="duration-float"),
    pytest.param(_with(duration="6"), "duration", id="duration-string"),
    pytest.param(_with(duration=True), "duration", id="duration-bool"),
    pytest.param(_with(duration=None), "duration", id="duration-null"),
    pytest.param(_with(resolution="720P"), "resolution", id="resolution-720P"),
    pytest.param(_with(resolution="768p"), "resolution", id="resolution-lowercase"),
    pytest.param(_with(resolution=768), "resolution", id="resolution-number"),
    pytest.param(_with(duration=10, resolution="1080P"), "resolution", id="10s-1080P"),
    pytest.param(_with(image=123), "image", id="image-number"),
    pytest.param(_with(image=None), "image", id="image-null"),
    pytest.param(_with(image=""), "image", id="image-empty"),
    pytest.param(_with(image="ftp://example.com/a.png"), "image", id="image-ftp"),
    pytest.param(_with(image="http://"), "image", id="image-no-host"),
    pytest.param(_with(image="https:///a.png"), "image", id="image-empty-host"),
    pytest.param(_with(image="example.com/a.png"), "image", id="image-no-scheme"),
    pytest.param(_with(image="https://exa mple.com/a.png"), "image", id="image-space"),
    pytest.param(_with(image="http://[::1/a.png"), "image", id="image-bad-ipv6"),
    pytest.param(_with(image="http://example.com:99999/a.png"), "image", id="image-bad-port"),
    pytest.param(_with(image="data:image/png;base64,@@@@"), "image", id="b64-alphabet"),
    pytest.param(_with(image="data:image/png;base64,aGVsbG8"), "image", id="b64-padding"),
    pytest.param(_with(image="data:image/png;base64,aGVs\nbG8="), "image", id="b64-newline"),
    pytest.param(_with(image="data:image/png;base64,"), "image", id="b64-empty"),
    pytest.param(_with(image="data:text/plain;base64,aGVsbG8="), "image", id="uri-not-image"),
    pytest.param(_with(image="data:image/png,aGVsbG8="), "image", id="uri-not-base64"),
    pytest.param(_with(image="data:;base64,aGVsbG8="), "image", id="uri-no-type"),
    pytest.param(_with(end_image=7), "end_image", id="end-image-number"),
    pytest.param(_with(end_image="file:///etc/passwd"), "end_image", id="end-image-file"),
    pytest.param(_with(end_image="data:image/png;base64,!!"), "end_image", id="end-image-b64"),
    pytest.param(_with(enable_prompt_expansion="true"), "enable_prompt_expansion", id="exp-str"),
    pytest.param(_with(enable_prompt_expansion=1), "enable_prompt_expansion", id="exp-int"),
    pytest.param(_with(enable_prompt_expansion=None), "enable_prompt_expansion", id="exp-null"),
    pytest.param(_with(fast_pretreatment=0), "fast_pretreatment", id="fast-int"),
    pytest.param(_with(fast_pretreatment="false"), "fast_pretreatment", id="fast-str"),
    pytest.param(_with(model="MiniMax-Hailuo-02"), "model", id="unknown-model"),
    pytest.param(_with(seed=1), "seed", id="unknown-seed"),
    pytest.param(_with(extra=[]), "extra", id="extra-array"),
    pytest.param(_with(extra="webhook"), "extra", id="extra-string"),
    pytest.param(_with(extra=None), "extra", id="extra-null"),
    pytest.param(_with(extra={"webhook": "https://x.example"}), "extra.webhook", id="wh-str"),
    pytest.param(_with(extra={"webhook": {}}), "extra.webhook.url", id="webhook-no-url"),
    pytest.param(_with(extra={"webhook": {"url": "ftp://x/h"}}), "extra.webhook.url", id="wh-ftp"),
]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """A fake with a small image limit, and a client onto it."""
    async with running(max_image_bytes=1000, max_body_bytes=10_000) as api:
        yield api


@pytest.mark.parametrize("body", ACCEPTED)
async def test_valid_bodies_are_accepted(api: Api, body: Any) -> None:
    """Every documented form of a field is accepted and starts a task."""
    reply = await api.submit(body)
    assert reply.status == 200, reply
    task_id = reply.json()["task_id"]
    assert api.server.task_ids == [task_id]


@pytest.mark.parametrize(("body", "field"), REJECTED)
async def test_invalid_bodies_name_the_field(api: Api, body: Any, field: str) -> None:
    """Each broken rule gives a gateway-style 400 naming the field, and no task."""
    reply = await api.submit(body)
    assert reply.status == 400, reply
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()
    assert error["code"] == 400
    assert error["reason"] == "INVALID_ARGUMENT"
    assert error["metadata"] == {"field": field}
    assert error["message"].startswith(f"{field}: ")
    assert api.server.task_ids == []
    assert api.server.stats.rejected_by_field == {field: 1}


async def test_duration_message_matches_the_gateway_example(api: Any) -> None:
    """The duration error reads exactly like the gateway's example."""
    reply = await api.submit(_with(duration=7))
    assert reply.json() == {
        "code": 400,
        "reason": "INVALID_ARGUMENT",
        "message": "duration: must be 6 or 10",
        "metadata": {"field": "duration"},
    }


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b'{"prompt": "x"', id="truncated"),
        pytest.param(b'{"prompt": "\xff\xfe"}', id="bad-utf8"),
        pytest.param(b'{"prompt": "x"} trailing', id="trailing-garbage"),
    ],
)
async def test_non_json_bodies_are_400(api: Api, raw: bytes) -> None:
    """Bytes that are not one JSON document are refused as the body."""
    reply = await api.submit(raw=raw)
    assert reply.status == 400
    assert reply.json()["metadata"] == {"field": "body"}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_content_type_must_be_json(api: Api, content_type: str) -> None:
    """A JSON body under another Content-Type is refused."""
    reply = await api.submit(headers={"Content-Type": content_type})
    assert reply.status == 400
    assert reply.json()["metadata"] == {"field": "Content-Type"}


async def test_content_type_with_charset_is_json(api: Any) -> None:
    """Parameters on the media type do not matter."""
    reply = await api.submit(headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 200


async def test_body_over_the_limit_is_413(api: Any) -> None:
    """A body larger than max_body_bytes gets a JSON 413 and no task."""
    reply = await api.submit(_with(prompt="x" * 2000, extra={"pad": "y" * 10_000}))
    assert reply.status == 413
    assert reply.json()["code"] == 413
    assert api.server.task_ids == []


async def test_chunked_body_over_the_limit_is_413(api: Any) -> None:
    """The limit holds when no Content-Length announces the size."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "x", "extra": {"pad": "'
        for _ in range(11):
            yield b"y" * 1000
        yield b'"}}'

    reply = await api.request(
        "POST",
        api.server.url + "/v3/async/minimax-hailuo-02",
        headers={"Content-Type": "application/json", **api.auth()},
        data=chunks(),
    )
    assert reply.status == 413


async def test_body_at_the_limit_is_read(api: Any) -> None:
    """A body just under the limit is parsed, not refused for size."""
    body = _with(extra={"pad": ""})
    size = len(json.dumps(body).encode())
    body["extra"]["pad"] = "y" * (10_000 - size)
    reply = await api.submit(body)
    assert reply.status == 200


async def test_image_over_the_limit_is_400(api: Any) -> None:
    """A data-URI image that decodes past max_image_bytes is refused."""
    big = "data:image/png;base64," + base64.b64encode(b"\x00" * 1001).decode()
    reply = await api.submit(_with(image=big))
    assert reply.status == 400
    assert reply.json()["metadata"] == {"field": "image"}


async def test_large_legal_image_is_accepted() -> None:
    """A multi-megabyte base64 image fits under the default limits."""
    big = "data:image/jpeg;base64," + base64.b64encode(b"\xff" * (5 * 1024 * 1024)).decode()
    async with running() as api:
        reply = await api.submit(_with(image=big))
        assert reply.status == 200


def test_defaults_are_filled_in() -> None:
    """Omitted fields take the documented defaults."""
    request = parse_submit_body(b'{"prompt": "p"}', max_image_bytes=10)
    assert request.duration == 6
    assert request.resolution == "768P"
    assert request.enable_prompt_expansion is True
    assert request.fast_pretreatment is False
    assert request.image is None
    assert request.end_image is None
    assert request.extra is None


def test_canonical_form_ignores_key_order() -> None:
    """Two bodies with the same content in another order are the same submission."""
    first = parse_submit_body(b'{"prompt": "p", "duration": 6}', max_image_bytes=10)
    second = parse_submit_body(b'{"duration":6,"prompt":"p"}', max_image_bytes=10)
    assert first.canonical == second.canonical


def test_request_error_carries_its_field() -> None:
    """RequestError renders the gateway's error shape."""
    error = RequestError(400, "duration", "must be 6 or 10")
    assert str(error) == "duration: must be 6 or 10"
    assert error.body()["metadata"] == {"field": "duration"}
