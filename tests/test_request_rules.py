"""VideoRequest's rules, stated once: the positional prompt, local files, the FastAPI model
derived from the same constants, and a client paced to the fake it talks to."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailuo_async import InvalidRequestError, VideoRequest
from hailuo_async._images import IMAGE_REFERENCE_PATTERN, image_reference
from hailuo_async._models import DURATIONS, RESOLUTIONS_BY_DURATION
from hailuo_async.fastapi import VideoRequestBody
from hailuo_async.providers._gateway import RESOLUTIONS
from hailuo_async.testing import FakeHailuoServer, Fixed

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_prompt_may_be_positional() -> None:
    """VideoRequest("...") is the prompt; every other field stays keyword-only."""
    assert VideoRequest("a fox") == VideoRequest(prompt="a fox")
    with pytest.raises(TypeError):
        VideoRequest("a fox", None)  # type: ignore[call-arg]


def test_a_string_is_never_read_as_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing file named by a string is refused, naming pathlib.Path; a Path is read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.png").write_bytes(PNG)
    with pytest.raises(InvalidRequestError, match=r"pathlib\.Path") as refused:
        VideoRequest("a cat", image="cat.png")
    assert refused.value.field == "image"
    read = VideoRequest("a cat", image=Path("cat.png"))
    assert read.image is not None
    assert read.image.startswith("data:image/png;base64,")


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.from_regex(IMAGE_REFERENCE_PATTERN, fullmatch=True))
def test_every_string_the_schema_allows_is_accepted(value: str) -> None:
    """The pattern the request model advertises is a promise: each match is a valid image."""
    assert image_reference(value, "image") == value


def test_request_model_has_videorequests_fields_and_defaults() -> None:
    """The FastAPI model's fields and defaults are VideoRequest's that every provider takes
    (the gateway's: not the app's webhook, nor MiniMax's model and watermark)."""
    fields = {field.name: field.default for field in attrs.fields(VideoRequest)}
    for name in ("webhook_url", "model", "aigc_watermark"):
        del fields[name]
    model = VideoRequestBody.model_fields
    assert list(model) == list(fields)
    for name, default in fields.items():
        if name != "prompt":
            assert model[name].default == default, name


def test_request_model_schema_states_the_rules() -> None:
    """Lengths, choices and the duration-resolution pairs come from the library's constants
    (the resolutions every provider makes: the gateway's)."""
    schema = VideoRequestBody.model_json_schema()
    properties = schema["properties"]
    assert properties["duration"]["enum"] == list(DURATIONS)
    assert properties["resolution"]["enum"] == list(RESOLUTIONS)
    assert properties["prompt"]["maxLength"] == 2000
    assert schema["additionalProperties"] is False
    refused = [
        (d, r) for d in DURATIONS for r in RESOLUTIONS if r not in RESOLUTIONS_BY_DURATION[d]
    ]
    assert len(schema["allOf"]) == len(refused) == 1
    for duration, resolution in refused:
        with pytest.raises(InvalidRequestError, match="resolution"):
            VideoRequest("x", duration=duration, resolution=resolution)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "a fox"},
        {"prompt": "a fox", "duration": 10, "image": "https://example.com/a.png"},
        {"prompt": "a fox", "resolution": "1080P", "end_image": "data:image/png;base64,AAAA"},
    ],
)
def test_request_model_makes_the_same_videorequest(body: dict[str, object]) -> None:
    """A body the model accepts makes the VideoRequest the same fields would."""
    assert VideoRequestBody.model_validate(body).to_request() == VideoRequest(**body)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_server_client_polls_at_the_fakes_pace() -> None:
    """server.client() polls a 3-minute job a handful of times, at the fake's time scale."""
    async with (
        FakeHailuoServer(time_scale=0.01, job_duration=Fixed(180), seed=1) as server,
        server.client() as client,
    ):
        result = await client.generate(VideoRequest("a fox"))
        assert result.ok
        polls = server.stats.polls_total
    assert 1 <= polls <= 10
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", client.base_url)
