"""VideoRequest validation, image handling, TaskStatus, and how answers are decoded."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import hailuo_async._images as images_module
from hailuo_async import (
    HailuoError,
    InvalidRequestError,
    JobOutcome,
    TaskResult,
    TaskStatus,
    Video,
    VideoRequest,
)
from hailuo_async._decoding import DecodeError, decode_json
from hailuo_async._images import MAX_IMAGE_BYTES
from hailuo_async.providers._gateway import (
    gateway_body,
    gateway_status,
    read_submission,
    read_task_result,
)

# -- tiny real images, made here ---------------------------------------------------------------


def png_bytes() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """A valid 1x1 grey baseline JPEG (one block, DC 0, end of block)."""

    def segment(marker: int, data: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    quant = b"\x00" + bytes([1] * 64)
    frame = struct.pack(">BHHB", 8, 1, 1, 1) + b"\x01\x11\x00"
    # One-code Huffman tables: DC category 0 and AC end-of-block, each the 1-bit code "0".
    dc_table = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    ac_table = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    scan_header = b"\x01\x01\x00\x00\x3f\x00"
    return (
        b"\xff\xd8"
        + segment(0xE0, jfif)
        + segment(0xDB, quant)
        + segment(0xC0, frame)
        + segment(0xC4, dc_table)
        + segment(0xC4, ac_table)
        + segment(0xDA, scan_header)
        + b"\x3f"  # the bits "00" padded with ones
        + b"\xff\xd9"
    )


def webp_bytes() -> bytes:
    """A valid 1x1 lossless WebP: a RIFF container around a VP8L bitstream."""
    vp8l = bytes.fromhex("2f00000010071011118888fe07")
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\x00" * (len(vp8l) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def make(**fields: Any) -> VideoRequest:
    """A VideoRequest from keyword fields, with a prompt unless one is given."""
    values: dict[str, Any] = {"prompt": "a red fox in fresh snow", **fields}
    return VideoRequest(**values)


def refused(field: str, **fields: Any) -> InvalidRequestError:
    """Assert that building a request with ``fields`` raises for ``field``; return the error."""
    with pytest.raises(InvalidRequestError) as info:
        make(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


# -- VideoRequest ------------------------------------------------------------------------------


def test_defaults_are_the_apis() -> None:
    """A request with only a prompt has the documented defaults."""
    request = VideoRequest(prompt="hello")
    assert request.image is None
    assert request.end_image is None
    assert request.duration == 6
    assert request.resolution == "768P"
    assert request.enable_prompt_expansion is True
    assert request.fast_pretreatment is False
    assert request.webhook_url is None


def test_payload_has_every_field_and_no_extra_without_a_webhook() -> None:
    """The gateway's body has the documented fields, and `extra` only for a webhook."""
    assert gateway_body(make(prompt="p")) == {
        "prompt": "p",
        "duration": 6,
        "resolution": "768P",
        "enable_prompt_expansion": True,
        "fast_pretreatment": False,
    }
    payload = gateway_body(
        make(
            prompt="p",
            image="https://example.com/a.png",
            end_image="https://example.com/b.png",
            duration=10,
            enable_prompt_expansion=False,
            fast_pretreatment=True,
            webhook_url="https://hooks.example.com/h",
        )
    )
    assert payload["image"] == "https://example.com/a.png"
    assert payload["end_image"] == "https://example.com/b.png"
    assert payload["duration"] == 10
    assert payload["enable_prompt_expansion"] is False
    assert payload["fast_pretreatment"] is True
    assert payload["extra"] == {"webhook": {"url": "https://hooks.example.com/h"}}


def test_request_is_frozen_and_evolve_revalidates() -> None:
    """A request cannot be changed in place, and attrs.evolve checks the rules again."""
    request = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.prompt = "other"  # type: ignore[misc]
    with pytest.raises(InvalidRequestError):
        attrs.evolve(request, duration=10, resolution="1080P")
    assert attrs.evolve(request, duration=10).duration == 10


def test_invalid_request_error_is_a_hailuo_error_and_a_value_error() -> None:
    """InvalidRequestError can be caught as HailuoError or ValueError, and names the field."""
    error = refused("prompt", prompt="")
    assert isinstance(error, HailuoError)
    assert isinstance(error, ValueError)
    assert error.message


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(min_size=1, max_size=2000))
@example(prompt="x" * 2000)
@example(prompt=" ")
@example(prompt="日本語の🦊" * 400)
def test_any_prompt_of_1_to_2000_characters_is_accepted(prompt: str) -> None:
    """Every prompt of 1 to 2000 valid characters is taken and sent as it is."""
    request = VideoRequest(prompt=prompt)
    assert gateway_body(request)["prompt"] == prompt
    json.dumps(gateway_body(request), ensure_ascii=False).encode("utf-8")


@settings(max_examples=30, deadline=None)
@given(
    prompt=st.builds(
        lambda unit, size: (unit * size)[:size],
        st.text(min_size=1, max_size=10),
        st.integers(min_value=2001, max_value=6000),
    )
)
@example(prompt="x" * 2001)
def test_any_longer_prompt_is_refused(prompt: str) -> None:
    """Every prompt over 2000 characters is refused, naming the prompt."""
    refused("prompt", prompt=prompt)


@pytest.mark.parametrize("prompt", ["", None, 42, b"bytes", "\ud800 lone surrogate"])
def test_bad_prompts_are_refused(prompt: object) -> None:
    """An empty, non-string or unencodable prompt is refused."""
    refused("prompt", prompt=prompt)


@pytest.mark.parametrize(("duration", "resolution"), [(6, "768P"), (6, "1080P"), (10, "768P")])
def test_allowed_duration_and_resolution_pairs(duration: int, resolution: str) -> None:
    """6 s at 768P or 1080P and 10 s at 768P are accepted."""
    request = make(duration=duration, resolution=resolution)
    assert (request.duration, request.resolution) == (duration, resolution)


@pytest.mark.parametrize("duration", [0, 5, 7, 11, -6, 6.0, "6", True, None])
def test_bad_durations_are_refused(duration: object) -> None:
    """Only the integers 6 and 10 are durations (not 6.0, "6" or True)."""
    refused("duration", duration=duration)


@pytest.mark.parametrize("resolution", ["720P", "768p", "1080", 768, None, ""])
def test_bad_resolutions_are_refused(resolution: object) -> None:
    """Only "768P" and "1080P" are resolutions."""
    refused("resolution", resolution=resolution)


def test_ten_seconds_at_1080p_is_refused() -> None:
    """10-second videos are only made at 768P."""
    error = refused("resolution", duration=10, resolution="1080P")
    assert "768P" in error.message


@pytest.mark.parametrize("field", ["enable_prompt_expansion", "fast_pretreatment"])
@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_flags_must_be_booleans(field: str, value: object) -> None:
    """The two flags take True or False only."""
    refused(field, **{field: value})


@pytest.mark.parametrize("url", ["https://hooks.example.com/h", "http://127.0.0.1:8080/hook?x=1"])
def test_webhook_urls_are_accepted(url: str) -> None:
    """An http(s) webhook URL with a host is accepted."""
    assert make(webhook_url=url).webhook_url == url


@pytest.mark.parametrize(
    "url", ["ftp://example.com/h", "hooks.example.com", "https://", "http:///path", 5, ""]
)
def test_bad_webhook_urls_are_refused(url: object) -> None:
    """A webhook URL must be http(s) with a host, as the API checks."""
    refused("webhook_url", webhook_url=url)


# -- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["image", "end_image"])
@pytest.mark.parametrize(
    "url", ["https://example.com/a.png", "http://example.com/x?sig=1&t=2", "HTTPS://EXAMPLE.COM/a"]
)
def test_image_urls_are_kept_as_they_are(field: str, url: str) -> None:
    """An http(s) image URL is sent unchanged."""
    assert getattr(make(**{field: url}), field) == url


@pytest.mark.parametrize("field", ["image", "end_image"])
@pytest.mark.parametrize(
    "value",
    [
        "example.com/a.png",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "https://",
        "https://example.com/a b.png",
        "pictures/local.png",
        "",
        42,
        ["https://example.com/a.png"],
    ],
)
def test_bad_image_references_are_refused(field: str, value: object) -> None:
    """Anything but an http(s) URL with a host, a data URI, a Path or bytes is refused."""
    refused(field, **{field: value})


@pytest.mark.parametrize("field", ["image", "end_image"])
def test_valid_data_uri_is_kept(field: str) -> None:
    """A data:image/...;base64 URI with valid base64 is sent unchanged."""
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert getattr(make(**{field: uri}), field) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,",
        "data:image/png;base64,not base64!",
        "data:image/png;base64,AAA",
        "data:image/png;base64,AAAA\nAAAA",
        "data:text/plain;base64,AAAA",
        "data:image/png,AAAA",
        "data:;base64,AAAA",
    ],
)
def test_bad_data_uris_are_refused(uri: str) -> None:
    """A data URI with no, bad or non-base64 data, or not an image type, is refused."""
    refused("image", image=uri)


@pytest.mark.parametrize(
    ("make_image", "mime"),
    [(png_bytes, "image/png"), (jpeg_bytes, "image/jpeg"), (webp_bytes, "image/webp")],
)
def test_bytes_become_a_data_uri_with_the_sniffed_type(make_image: Any, mime: str) -> None:
    """Raw JPEG, PNG and WebP bytes become a base64 data URI of the right MIME type."""
    data: bytes = make_image()
    request = make(image=data, end_image=bytearray(data))
    expected = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    assert request.image == expected
    assert request.end_image == expected


@pytest.mark.parametrize(
    ("make_image", "mime"),
    [(png_bytes, "image/png"), (jpeg_bytes, "image/jpeg"), (webp_bytes, "image/webp")],
)
def test_paths_become_a_data_uri_with_the_sniffed_type(
    tmp_path: Path, make_image: Any, mime: str
) -> None:
    """A local file is read and sent as a data URI; its name does not decide the type."""
    data: bytes = make_image()
    path = tmp_path / "picture.bin"
    path.write_bytes(data)
    assert make(image=path).image == f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(
    "data",
    [GIF, b"", b"hello", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"RIFF\x00\x00\x00\x00AVI "],
)
def test_other_content_is_refused(tmp_path: Path, data: bytes) -> None:
    """GIF, SVG, text, empty or other RIFF content is refused, as bytes and as a file."""
    error = refused("image", image=data)
    assert "JPEG, PNG or WebP" in error.message
    path = tmp_path / "not-an-image.png"
    path.write_bytes(data)
    refused("end_image", end_image=path)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    """A path that cannot be read is refused with the field named, not an OSError."""
    refused("image", image=tmp_path / "missing.png")
    refused("image", image=tmp_path)


def test_a_file_over_20_mb_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A (sparse) file one byte over 20 MB is refused from its size alone."""
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.write(png_bytes())
        handle.truncate(MAX_IMAGE_BYTES + 1)
    assert MAX_IMAGE_BYTES == 20 * 1024 * 1024
    error = refused("image", image=path)
    assert str(MAX_IMAGE_BYTES) in error.message


def test_bytes_over_20_mb_are_refused() -> None:
    """Raw bytes one over the 20 MB limit are refused."""
    data = png_bytes() + bytes(MAX_IMAGE_BYTES + 1 - len(png_bytes()))
    refused("image", image=data)


def test_the_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the limit lowered, images of exactly the limit pass and one byte more does not."""
    monkeypatch.setattr(images_module, "MAX_IMAGE_BYTES", 1024)
    at_limit = png_bytes() + bytes(1024 - len(png_bytes()))
    over = at_limit + b"\x00"
    assert make(image=at_limit).image is not None
    refused("image", image=over)
    path = tmp_path / "a.png"
    path.write_bytes(at_limit)
    assert make(image=path).image is not None
    path.write_bytes(over)
    refused("image", image=path)
    as_uri = "data:image/png;base64,"
    assert make(image=as_uri + base64.b64encode(at_limit).decode()).image is not None
    refused("image", image=as_uri + base64.b64encode(over).decode())


def test_repr_is_short_even_with_an_inline_image() -> None:
    """A request's repr stays short: long prompts and data URIs are cut."""
    request = make(prompt="p" * 2000, image=png_bytes() + bytes(50_000))
    text = repr(request)
    assert len(text) < 400
    assert "data:image/png;base64," in text


def test_fingerprint_is_stable_and_tells_requests_apart() -> None:
    """Equal requests share a fingerprint; different ones do not."""
    assert make(prompt="a").fingerprint == make(prompt="a").fingerprint
    assert make(prompt="a").fingerprint != make(prompt="b").fingerprint
    assert make(prompt="a").fingerprint != make(prompt="a", duration=10).fingerprint


# -- TaskStatus, TaskResult, Video ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("TASK_STATUS_QUEUED", TaskStatus.QUEUED),
        ("TASK_STATUS_PROCESSING", TaskStatus.PROCESSING),
        ("TASK_STATUS_SUCCEED", TaskStatus.SUCCEED),
        ("TASK_STATUS_FAILED", TaskStatus.FAILED),
        ("task_status_succeed", TaskStatus.SUCCEED),
        (" QUEUED ", TaskStatus.QUEUED),
        ("TASK_STATUS_CANCELED", TaskStatus.UNKNOWN),
        ("SOMETHING_NEW", TaskStatus.UNKNOWN),
        ("", TaskStatus.UNKNOWN),
    ],
)
def test_status_parsing_tolerates_unknown_values(raw: str, status: TaskStatus) -> None:
    """The gateway's statuses map to members (any case, prefix or not), anything else to UNKNOWN;
    stored statuses of old releases (the gateway's strings) read as the same members."""
    assert gateway_status(raw) is status
    assert TaskStatus.parse(raw) is status


def test_only_succeed_and_failed_are_terminal() -> None:
    """is_terminal holds for SUCCEED and FAILED only."""
    assert {s for s in TaskStatus if s.is_terminal} == {TaskStatus.SUCCEED, TaskStatus.FAILED}
    assert isinstance(TaskStatus.SUCCEED, str)


def test_status_values_are_the_librarys_own() -> None:
    """The values are the library's words, whatever the provider says; parse reads them back."""
    values = {status.name: status.value for status in TaskStatus}
    assert values == {
        "QUEUED": "queued",
        "PROCESSING": "processing",
        "SUCCEED": "succeeded",
        "FAILED": "failed",
        "UNKNOWN": "unknown",
    }
    for status in TaskStatus:
        assert TaskStatus.parse(status.value) is status
        assert TaskStatus.parse(status.name) is status
    assert TaskStatus.parse("UNKNOWN") is TaskStatus.UNKNOWN  # as releases before 0.2 stored it


@pytest.mark.parametrize(
    ("status", "done", "ok"),
    [
        (TaskStatus.QUEUED, False, False),
        (TaskStatus.PROCESSING, False, False),
        (TaskStatus.UNKNOWN, False, False),
        (TaskStatus.FAILED, True, False),
        (TaskStatus.SUCCEED, True, True),
    ],
)
def test_task_result_is_done_and_ok(status: TaskStatus, done: bool, ok: bool) -> None:
    """is_done and ok follow the status."""
    result = TaskResult(task_id="t", status=status)
    assert (result.is_done, result.ok) == (done, ok)


def test_video_expiry() -> None:
    """A video expires at expires_at; one without it never does."""
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    video = Video(url="https://s/v.mp4", ttl=60, expires_at=now + timedelta(seconds=60))
    assert not video.is_expired(now=now)
    assert video.is_expired(now=now, margin=61)
    assert video.is_expired(now=now + timedelta(seconds=60))
    assert not Video(url="https://s/v.mp4").is_expired()


def test_video_repr_hides_the_presigned_query() -> None:
    """A video's repr leaves out the URL's signature."""
    video = Video(url="https://storage.example.com/v.mp4?signature=SECRETSIG")
    assert "SECRETSIG" not in repr(video)
    assert "v.mp4" in repr(video)


def test_job_outcome_ok() -> None:
    """A JobOutcome is ok only with a succeeded result and no error."""
    request = make()
    done = TaskResult(task_id="t", status=TaskStatus.SUCCEED)
    assert JobOutcome(index=0, request=request, task_id="t", result=done).ok
    assert not JobOutcome(index=0, request=request).ok
    failed = TaskResult(task_id="t", status=TaskStatus.FAILED)
    assert not JobOutcome(index=0, request=request, result=failed).ok


# -- decoding ----------------------------------------------------------------------------------

RECEIVED = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def documented_answer(**task: Any) -> dict[str, Any]:
    """A succeeded task-result answer shaped like API.md, with task fields overridden."""
    return {
        "task": {
            "task_id": "t-1",
            "task_type": "MINIMAX_HAILUO_02_T2V",
            "status": "TASK_STATUS_SUCCEED",
            "reason": "",
            "eta": 0,
            "progress_percent": 100,
            **task,
        },
        "videos": [
            {
                "video_url": "https://storage.example.com/v.mp4?sig=x",
                "video_url_ttl": 3600,
                "video_type": "mp4",
            }
        ],
        "images": [],
        "audios": [],
        "extra": {
            "seed": "12345",
            "debug_info": {"request_info": "", "submit_time_ms": "1700000000000"},
        },
    }


def test_documented_answer_is_decoded() -> None:
    """Every documented field reaches the TaskResult and its Video."""
    result = read_task_result(documented_answer(), task_id="t-1", received_at=RECEIVED)
    assert result.task_id == "t-1"
    assert result.status is TaskStatus.SUCCEED
    assert result.raw_status == "TASK_STATUS_SUCCEED"
    assert result.reason == ""
    assert result.eta == 0
    assert result.progress_percent == 100
    assert result.is_done
    assert result.ok
    assert result.extra["seed"] == "12345"
    (video,) = result.videos
    assert result.video is video
    assert video.url == "https://storage.example.com/v.mp4?sig=x"
    assert video.ttl == 3600
    assert video.video_type == "mp4"
    assert video.expires_at == RECEIVED + timedelta(hours=1)


def test_numbers_as_strings_are_parsed() -> None:
    """eta, progress and the TTL may come as strings, with spaces, or empty."""
    answer = documented_answer(status="TASK_STATUS_PROCESSING", eta=" 12.5 ", progress_percent="40")
    answer["videos"] = []
    result = read_task_result(answer, task_id="t-1", received_at=RECEIVED)
    assert result.eta == 12.5
    assert result.progress_percent == 40
    answer = documented_answer()
    answer["videos"][0]["video_url_ttl"] = "600"
    answer["task"]["eta"] = ""
    result = read_task_result(answer, task_id="t-1", received_at=RECEIVED)
    assert result.videos[0].ttl == 600
    assert result.videos[0].expires_at == RECEIVED + timedelta(minutes=10)
    assert result.eta is None


@settings(max_examples=50, deadline=None)
@given(
    eta=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    progress=st.integers(min_value=0, max_value=100),
)
def test_any_number_as_a_string_reads_as_the_number(eta: float, progress: int) -> None:
    """A number written as a string decodes to the same number."""
    answer = {
        "task": {
            "status": "TASK_STATUS_PROCESSING",
            "eta": repr(eta),
            "progress_percent": str(progress),
        }
    }
    result = read_task_result(answer, task_id="t", received_at=RECEIVED)
    assert result.eta == eta
    assert result.progress_percent == progress


def test_missing_fields_have_defaults_and_extra_fields_are_ignored() -> None:
    """A minimal answer decodes; unknown fields anywhere are ignored; nulls are empty."""
    result = read_task_result(
        {"task": {"status": "TASK_STATUS_QUEUED"}}, task_id="t", received_at=RECEIVED
    )
    assert (result.reason, result.eta, result.progress_percent) == ("", None, None)
    assert result.videos == ()
    assert dict(result.extra) == {}
    result = read_task_result(
        {
            "task": {"status": "TASK_STATUS_QUEUED", "reason": None, "new": {"x": 1}},
            "videos": None,
            "extra": None,
            "brand_new_field": [1, 2, 3],
        },
        task_id="t",
        received_at=RECEIVED,
    )
    assert result.reason == ""
    assert result.videos == ()


def test_unknown_status_keeps_the_raw_value() -> None:
    """An unknown status decodes to UNKNOWN, with the service's string kept."""
    result = read_task_result(
        {"task": {"status": "TASK_STATUS_CANCELED"}}, task_id="t", received_at=RECEIVED
    )
    assert result.status is TaskStatus.UNKNOWN
    assert result.raw_status == "TASK_STATUS_CANCELED"
    assert not result.is_done


def test_out_of_range_numbers_are_tamed() -> None:
    """A negative eta reads as unknown; progress is clipped to 0..100."""
    answer = {"task": {"status": "TASK_STATUS_PROCESSING", "eta": -3, "progress_percent": 250}}
    result = read_task_result(answer, task_id="t", received_at=RECEIVED)
    assert result.eta is None
    assert result.progress_percent == 100


@pytest.mark.parametrize(
    ("answer", "where"),
    [
        ([], "JSON object"),
        ("text", "JSON object"),
        ({}, "task"),
        ({"task": None}, "task"),
        ({"task": {"status": "TASK_STATUS_QUEUED", "eta": "soon"}}, "eta"),
        ({"task": {"status": "TASK_STATUS_QUEUED", "eta": True}}, "eta"),
        ({"task": {"status": "TASK_STATUS_QUEUED", "eta": "nan"}}, "eta"),
        ({"task": {"status": "TASK_STATUS_QUEUED", "progress_percent": [1]}}, "progress"),
        ({"task": {"status": "TASK_STATUS_QUEUED"}, "videos": {}}, "videos"),
        ({"task": {"status": "TASK_STATUS_QUEUED"}, "videos": [{}]}, "video_url"),
        ({"task": {"status": "TASK_STATUS_QUEUED"}, "extra": []}, "extra"),
        ({"task": {"status": "TASK_STATUS_SUCCEED"}, "videos": []}, "videos"),
        ({"task": {"task_id": "someone-else", "status": "TASK_STATUS_QUEUED"}}, "task_id"),
    ],
)
def test_answers_that_matter_are_checked_strictly(answer: object, where: str) -> None:
    """Wrong types, a success without a video or another task's answer are DecodeErrors."""
    with pytest.raises(DecodeError, match=where):
        read_task_result(answer, task_id="t", received_at=RECEIVED)


def test_submission_answers() -> None:
    """A submission's answer yields its task id; a missing or empty id is an error."""
    assert read_submission({"task_id": "abc", "other": 1}) == "abc"
    bad_answers: list[object] = [{}, {"task_id": ""}, {"task_id": None}, [], {"task_id": {}}]
    for bad in bad_answers:
        with pytest.raises(DecodeError):
            read_submission(bad)


@pytest.mark.parametrize("body", [b"", b"{", b'{"task_id": "a"', b"\xff\xfe", b"[" * 100_000])
def test_bad_json_is_a_decode_error(body: bytes) -> None:
    """Truncated, empty, undecodable or absurdly nested JSON raises DecodeError."""
    with pytest.raises(DecodeError):
        decode_json(body)
