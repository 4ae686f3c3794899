"""The storage host: presigned video URLs on a second origin, expiry and download faults."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest
from fakeutil import Api, running
from yarl import URL

from hailuo_async.testing import Fixed, StorageFaults, sample_video

pytestmark = pytest.mark.anyio


async def _video(api: Api) -> dict[str, Any]:
    data = await api.wait_terminal(await api.create())
    video: dict[str, Any] = data["videos"][0]
    return video


def test_sample_is_a_small_real_mp4() -> None:
    """The bundled sample is an MP4 of a few kilobytes."""
    video = sample_video()
    assert 1000 < len(video) < 50_000
    assert video[4:8] == b"ftyp"
    assert b"moov" in video


async def test_download_serves_the_sample_mp4() -> None:
    """A video URL serves the real MP4 bytes with the right type and length."""
    async with running() as api:
        video = await _video(api)
        reply = await api.request("GET", video["video_url"])
        assert api.server.stats.storage_downloads == 1
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "video/mp4"
    assert int(reply.headers["Content-Length"]) == len(sample_video())
    assert reply.body == sample_video()


async def test_storage_is_another_origin_and_needs_no_key() -> None:
    """Video URLs live on the storage host, another origin than the API's, with their own token."""
    async with running() as api:
        video = await _video(api)
        url = URL(video["video_url"])
        api_url = URL(api.server.url)
        assert str(url).startswith(api.server.storage_url + "/videos/")
        assert url.origin() != api_url.origin()
        assert url.path.endswith(".mp4")
        assert "expires" in url.query
        assert api.server.api_key not in str(url)


async def test_each_poll_mints_a_fresh_url() -> None:
    """Polling a succeeded task again gives a new URL, and the old one still works."""
    async with running() as api:
        task_id = await api.create()
        first = (await api.wait_terminal(task_id))["videos"][0]["video_url"]
        second = (await api.poll(task_id))["videos"][0]["video_url"]
        assert first != second
        for url in (first, second):
            assert (await api.request("GET", url)).status == 200


async def test_url_expires_after_its_ttl() -> None:
    """After video_url_ttl (scaled) the URL answers 403, and a new poll gives a live one."""
    async with running(time_scale=0.01, video_url_ttl=30, job_duration=Fixed(1)) as api:
        task_id = await api.create()
        video = (await api.wait_terminal(task_id))["videos"][0]
        assert video["video_url_ttl"] == pytest.approx(0.3)
        assert (await api.request("GET", video["video_url"])).status == 200
        await anyio.sleep(0.35)
        expired = await api.request("GET", video["video_url"])
        assert expired.status == 403
        assert b"expired" in expired.body
        fresh = (await api.poll(task_id))["videos"][0]["video_url"]
        assert (await api.request("GET", fresh)).status == 200
        assert api.server.stats.storage_denied == 1


async def test_unknown_token_is_403() -> None:
    """A guessed URL on the storage host is refused."""
    async with running() as api:
        reply = await api.request("GET", api.server.storage_url + "/videos/guess.mp4")
        assert reply.status == 403


async def test_authorization_headers_are_recorded() -> None:
    """Every Authorization header sent to storage is kept in the stats."""
    async with running() as api:
        video = await _video(api)
        clean = await api.request("GET", video["video_url"])
        leaked = await api.request("GET", video["video_url"], headers=api.auth())
        assert clean.status == leaked.status == 200
        stats = api.server.stats
        assert stats.storage_authorization_headers == [f"Bearer {api.server.api_key}"]
        assert stats.storage_requests == 2


async def test_reject_authorization_refuses_keyed_downloads() -> None:
    """With reject_authorization, a download carrying the API key gets 403."""
    faults = StorageFaults(reject_authorization=True)
    async with running(storage_faults=faults) as api:
        video = await _video(api)
        leaked = await api.request("GET", video["video_url"], headers=api.auth())
        clean = await api.request("GET", video["video_url"])
    assert leaked.status == 403
    assert clean.status == 200


async def test_head_reports_the_size() -> None:
    """HEAD on a video URL gives its length without a body."""
    async with running() as api:
        video = await _video(api)
        reply = await api.request("HEAD", video["video_url"])
    assert reply.status == 200
    assert int(reply.headers["Content-Length"]) == len(sample_video())
    assert reply.body == b""


async def test_truncated_download_fails_the_client() -> None:
    """A truncated body (fewer bytes than Content-Length) surfaces as a payload error."""
    async with running(storage_faults=StorageFaults(truncate=1.0)) as api:
        video = await _video(api)
        with pytest.raises(aiohttp.ClientPayloadError):
            await api.request("GET", video["video_url"])
        assert api.server.stats.storage_faults_injected == {"truncate": 1}


async def test_wrong_content_length_fails_after_the_whole_file() -> None:
    """An overstated Content-Length: every real byte arrives, then a payload error."""
    async with running(storage_faults=StorageFaults(wrong_content_length=1.0)) as api:
        video = await _video(api)
        received = bytearray()

        async def drain(response: aiohttp.ClientResponse) -> None:
            async for chunk in response.content.iter_any():
                received.extend(chunk)

        async with api.session.get(video["video_url"]) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) > len(sample_video())
            with pytest.raises(aiohttp.ClientPayloadError):
                await drain(response)
        assert api.server.stats.storage_faults_injected == {"wrong_content_length": 1}
    assert bytes(received) == sample_video()


def test_storage_fault_fractions_are_checked() -> None:
    """Storage fault fractions outside [0, 1] or adding past 1 are refused."""
    with pytest.raises(ValueError, match="fraction"):
        StorageFaults(truncate=2.0)
    with pytest.raises(ValueError, match="more than 1"):
        StorageFaults(truncate=0.6, wrong_content_length=0.6)
