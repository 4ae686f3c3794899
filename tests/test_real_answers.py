"""Answers as the real service sends them (issue 14, section 1): verbatim bodies, tolerated."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from clientutil import fake_client

from hailuo_async import TaskStatus, VideoRequest
from hailuo_async._decoding import url_expiry
from hailuo_async.providers._gateway import read_task_result
from hailuo_async.testing import FakeHailuoServer
from hailuo_async.webhooks import parse_webhook

# Captured from the /v3/async API family (signature shortened), kept byte for byte.
CAPTURED = """{"audios":[],"extra":{},"images":[],
 "task":{"eta":0,"progress_percent":0,"reason":"","status":"TASK_STATUS_SUCCEED",
         "task_id":"f97d3f93-bb29-47d9-9327-77e70982bd43","task_type":"MINIMAX_HAILUO_02_6S_768P"},
 "videos":[{"nsfw_detection_result":null,"video_type":"mp4",
            "video_url":"https://faas-minimax-video-1312767721.cos.ap-shanghai.myqcloud.com/prod/x.mp4?q-sign-algorithm=sha1&q-ak=AK&q-sign-time=1750392487%3B1750396087&q-key-time=1750392487%3B1750396087&q-header-list=host&q-url-param-list=&q-signature=abc",
            "video_url_ttl":"0"}]}"""
CAPTURED_ID = "f97d3f93-bb29-47d9-9327-77e70982bd43"
SIGNED_AT = datetime.fromtimestamp(1750392487, timezone.utc)
SIGNED_UNTIL = datetime.fromtimestamp(1750396087, timezone.utc)
# The documented shape of the same endpoint: the ttl a string, progress 100.
DOCUMENTED = """{"task":{"task_id":"t-doc","status":"TASK_STATUS_SUCCEED","reason":"","eta":0,
 "progress_percent":100},"videos":[{"video_url":"https://storage.example/v.mp4",
 "video_url_ttl":"3600","video_type":"mp4"}],"images":[],"audios":[],"extra":{}}"""
# A webhook delivery wraps the same body, with image_url_ttl-style strings.
WEBHOOK = """{"event_type":"ASYNC_TASK_RESULT","payload":{"task":{"task_id":"t-hook",
 "status":"TASK_STATUS_SUCCEED","reason":"","eta":0,"progress_percent":100},
 "videos":[{"video_url":"https://storage.example/h.mp4","video_url_ttl":"3600","video_type":"mp4"}],
 "images":[{"image_url":"https://storage.example/h.png","image_url_ttl":"3600","image_type":"png"}],
 "audios":[],"extra":{}}}"""


def test_captured_answer_is_read_whole() -> None:
    """The captured body decodes: succeeded, progress complete, URL kept exactly, ttl unknown."""
    received = SIGNED_AT + timedelta(seconds=5)
    result = read_task_result(json.loads(CAPTURED), task_id=CAPTURED_ID, received_at=received)
    assert result.status is TaskStatus.SUCCEED
    assert result.ok
    assert result.progress_percent == 100.0
    assert result.extra == {}
    video = result.video
    assert video is not None
    assert video.url == json.loads(CAPTURED)["videos"][0]["video_url"]
    assert video.video_type == "mp4"
    assert video.ttl is None


def test_ttl_zero_is_unknown_and_the_url_says_the_expiry() -> None:
    """video_url_ttl "0" is not "expired": the COS q-sign-time end is the expiry."""
    received = SIGNED_AT + timedelta(seconds=5)
    result = read_task_result(json.loads(CAPTURED), task_id=CAPTURED_ID, received_at=received)
    video = result.video
    assert video is not None
    assert video.expires_at == SIGNED_UNTIL
    assert not video.is_expired(now=received)
    assert video.is_expired(now=SIGNED_UNTIL)


@pytest.mark.parametrize("ttl", ['"0"', "0", "null", None])
def test_zero_or_missing_ttl_without_a_signed_expiry_is_unknown(ttl: str | None) -> None:
    """Without a ttl and without an expiry in the URL, the URL never counts as expired."""
    ttl_part = "" if ttl is None else f',"video_url_ttl":{ttl}'
    body = (
        '{"task":{"task_id":"t","status":"TASK_STATUS_SUCCEED"},'
        f'"videos":[{{"video_url":"https://cdn.example/v.mp4"{ttl_part}}}]}}'
    )
    video = read_task_result(json.loads(body), task_id="t").video
    assert video is not None
    assert video.ttl is None
    assert video.expires_at is None
    assert not video.is_expired(margin=60)


def test_documented_string_ttl_is_read() -> None:
    """The documented "3600" (a string) gives an expiry an hour after receipt."""
    received = datetime(2025, 6, 20, tzinfo=timezone.utc)
    result = read_task_result(json.loads(DOCUMENTED), task_id="t-doc", received_at=received)
    assert result.video is not None
    assert result.video.ttl == 3600.0
    assert result.video.expires_at == received + timedelta(hours=1)
    assert result.progress_percent == 100.0


def test_webhook_wrapper_with_string_ttls_is_read() -> None:
    """A webhook delivery with image_url_ttl-style strings parses, and its payload decodes."""
    event = parse_webhook(WEBHOOK)
    assert event.task_id == "t-hook"
    assert event.status is TaskStatus.SUCCEED
    result = read_task_result(json.loads(WEBHOOK)["payload"], task_id="t-hook")
    assert result.video is not None
    assert result.video.ttl == 3600.0


_AMZ = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20250620T040000Z&X-Amz-Expires=900"
_GOOG = "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20250620T040000Z&X-Goog-Expires=600"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://b.s3.amazonaws.com/v.mp4?{_AMZ}&X-Amz-Signature=ab", "2025-06-20T04:15:00"),
        (f"https://r2.example/v.mp4?{_AMZ.lower()}", "2025-06-20T04:15:00"),
        (f"https://storage.googleapis.com/b/v.mp4?{_GOOG}", "2025-06-20T04:10:00"),
        ("https://x.cos.myqcloud.com/v.mp4?q-sign-time=1750392487%3B1750396087", SIGNED_UNTIL),
        ("https://x.cos.myqcloud.com/v.mp4?q-sign-time=1750392487;1750396087", SIGNED_UNTIL),
        ("https://oss.example/v.mp4?Expires=1750396087&Signature=x", SIGNED_UNTIL),
        ("https://cdn.example/v.mp4", None),
        ("https://cdn.example/v.mp4?Expires=3600", None),
        ("https://cdn.example/v.mp4?X-Amz-Date=yesterday&X-Amz-Expires=900", None),
        ("https://cdn.example/v.mp4?q-sign-time=garbage", None),
        ("https://cdn.example/v.mp4?Expires=99999999999999999999", None),
    ],
)
def test_url_expiry_forms(url: str, expected: str | datetime | None) -> None:
    """S3, GCS, COS and Expires= signatures give their expiry; anything else gives None."""
    if isinstance(expected, str):
        expected = datetime.fromisoformat(expected).replace(tzinfo=timezone.utc)
    assert url_expiry(url) == expected


@pytest.mark.parametrize(("ttl", "url_seconds", "wins"), [(3600, 600, "url"), (60, 3600, "ttl")])
def test_the_earlier_of_url_and_ttl_wins(ttl: int, url_seconds: int, wins: str) -> None:
    """When both the ttl and the URL give an expiry, the earlier one counts."""
    received = SIGNED_AT
    url_until = int(SIGNED_AT.timestamp()) + url_seconds
    body = {
        "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
        "videos": [
            {"video_url": f"https://s.example/v.mp4?Expires={url_until}", "video_url_ttl": ttl}
        ],
    }
    video = read_task_result(body, task_id="t", received_at=received).video
    assert video is not None
    expected = received + timedelta(seconds=url_seconds if wins == "url" else ttl)
    assert video.expires_at == expected


# -- the fake's "captured" profile -------------------------------------------------------------


@pytest.mark.anyio
async def test_captured_profile_answers_in_the_captured_style() -> None:
    """FakeHailuoServer(profile="captured") answers like the verbatim body above."""
    async with (
        FakeHailuoServer(in_process=True, profile="captured", time_scale=0.001, seed=3) as server,
        fake_client(server) as client,
    ):
        result = await client.generate(VideoRequest(prompt="a fox", duration=6))
        body = server.tasks[result.task_id]
        assert body.task_type == "MINIMAX_HAILUO_02_6S_768P"
    assert result.ok
    assert result.progress_percent == 100.0
    assert result.extra == {}
    video = result.video
    assert video is not None
    assert video.url.startswith(f"{server.storage_url}/prod/")
    assert "q-sign-time=" in video.url
    assert video.ttl is None
    # The expiry comes from the URL's signature, since the ttl says nothing.
    assert video.expires_at is not None
    assert not video.is_expired()


@pytest.mark.anyio
async def test_captured_profile_download_makes_no_refresh_request(tmp_path: Path) -> None:
    """A download of a captured-style answer GETs no fresh URL and sends no key to storage."""
    async with (
        FakeHailuoServer(in_process=True, profile="captured", time_scale=0.001, seed=4) as server,
        fake_client(server) as client,
    ):
        result = await client.generate(VideoRequest(prompt="a heron"))
        polls_before = server.stats.polls_total
        path = await client.download(result, tmp_path)
        stats = server.stats.snapshot()
    assert stats.polls_total == polls_before
    assert stats.storage_downloads == 1
    assert stats.storage_denied == 0
    assert stats.storage_authorization_headers == []
    assert path.read_bytes()[4:8] == b"ftyp"


def test_captured_profile_is_a_flag() -> None:
    """`hailuo fake-server --profile captured` sets the profile; a wrong name is refused."""
    from hailuo_async.testing.__main__ import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["--profile", "captured"])).profile == "captured"
    with pytest.raises(SystemExit):
        parser.parse_args(["--profile", "real"])
