"""The storage host: presigned, expiring video URLs served from a second origin."""

from __future__ import annotations

import hashlib
import math
import random
import secrets
import time
from importlib import resources
from typing import Any

from aiohttp import web

from ._config import Profile, StorageFaults
from ._stats import Stats, bump
from ._tasks import report_seconds

__all__ = ["VideoStore", "sample_video"]

_SWEEP_EVERY = 1024
# What a storage host serving something else serves (the `wrong_content` fault): never run.
_SCRIPT = b"#!/bin/sh\n# not a video: a storage host serving something else\nexit 1\n"


def sample_video() -> bytes:
    """The real MP4 (a one-second clip) that every succeeded task "produced"."""
    return resources.files("hailuo_async.testing").joinpath("sample.mp4").read_bytes()


def _s3_error(code: str, message: str) -> web.Response:
    # Object stores answer in XML, not in the API gateway's JSON.
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=403, text=xml, content_type="application/xml")


def _captured_video(
    base_url: str, token: str, now_wall: float, expires_wall: int
) -> dict[str, Any]:
    """A `videos[]` entry as the real service sends it: a Tencent COS presigned URL, ttl "0"."""
    window = f"{math.floor(now_wall)}%3B{expires_wall}"
    signature = hashlib.sha1(token.encode(), usedforsecurity=False).hexdigest()
    query = (
        f"q-sign-algorithm=sha1&q-ak=AK&q-sign-time={window}&q-key-time={window}"
        f"&q-header-list=host&q-url-param-list=&q-signature={signature}"
    )
    return {
        "nsfw_detection_result": None,
        "video_type": "mp4",
        "video_url": f"{base_url}/prod/{token}.mp4?{query}",
        "video_url_ttl": "0",
    }


class VideoStore:
    """Mints presigned URLs and serves them until they expire."""

    def __init__(
        self,
        *,
        stats: Stats,
        faults: StorageFaults,
        rng: random.Random,
        ttl_real: float,
        time_scale: float,
        wall_offset: float,
        profile: Profile = "documented",
    ) -> None:
        self._stats = stats
        self.faults = faults
        """The storage faults in force; replace them to change the host's behaviour mid-run."""
        self._rng = rng
        self._ttl_real = ttl_real
        self._time_scale = time_scale
        self._wall_offset = wall_offset
        self._profile = profile
        self._video = sample_video()
        # token -> (task id, monotonic expiry)
        self._urls: dict[str, tuple[str, float]] = {}
        # Tokens minted as serving something else (the `wrong_content` fault).
        self._hostile: set[str] = set()
        self._minted = 0
        self.base_url = ""

    def _presign(self, task_id: str, now: float) -> tuple[str, int]:
        """A new token for the task's video, valid for the TTL from `now`, and its wall expiry."""
        self._minted += 1
        if self._minted % _SWEEP_EVERY == 0:
            self._urls = {t: v for t, v in self._urls.items() if v[1] > now}
            self._hostile &= self._urls.keys()
        token = secrets.token_urlsafe(24)
        expires_at = now + self._ttl_real
        self._urls[token] = (task_id, expires_at)
        return token, math.ceil(expires_at + self._wall_offset)

    def mint(self, task_id: str, now: float) -> dict[str, Any]:
        """A fresh `videos[]` entry for a succeeded task, valid for the TTL from `now`."""
        token, expires_wall = self._presign(task_id, now)
        if self._profile == "captured":
            video = _captured_video(self.base_url, token, now + self._wall_offset, expires_wall)
        else:
            video = {
                "video_url": f"{self.base_url}/videos/{token}.mp4?expires={expires_wall}",
                "video_url_ttl": report_seconds(self._ttl_real, self._time_scale),
                "video_type": "mp4",
            }
        if self.faults.wrong_content and self._rng.random() < self.faults.wrong_content:
            bump(self._stats.storage_faults_injected, "wrong_content")
            self._hostile.add(token)
            video["video_type"] = "sh"
        return video

    def download_url(self, task_id: str, now: float) -> str:
        """A fresh presigned URL for the task's video, in the style of MiniMax's object store."""
        token, expires_wall = self._presign(task_id, now)
        signature = hashlib.sha1(token.encode(), usedforsecurity=False).hexdigest()
        return (
            f"{self.base_url}/videos/{token}.mp4"
            f"?Expires={expires_wall}&OSSAccessKeyId=FAKEKEY&Signature={signature}"
        )

    @property
    def video_bytes(self) -> int:
        """The size of the video every URL serves."""
        return len(self._video)

    def expire_all(self) -> int:
        """Make every URL minted so far answer 403 "expired" from now on; return how many."""
        now = time.monotonic()
        live = [token for token, (_, expires_at) in self._urls.items() if expires_at > now]
        for token in live:
            task_id, _ = self._urls[token]
            self._urls[token] = (task_id, now)
        return len(live)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD /videos/{token}.mp4"""
        stats = self._stats
        stats.storage_requests += 1
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            stats.storage_authorization_headers.append(authorization)
            if self.faults.reject_authorization:
                stats.storage_denied += 1
                return _s3_error("AccessDenied", "Only one auth mechanism allowed")
        name = request.match_info["name"]
        entry = self._urls.get(name.removesuffix(".mp4")) if name.endswith(".mp4") else None
        if entry is None:
            stats.storage_denied += 1
            return _s3_error("SignatureDoesNotMatch", "The request signature is invalid")
        if time.monotonic() >= entry[1]:
            stats.storage_denied += 1
            return _s3_error("AccessDenied", "Request has expired")
        if request.method == "HEAD":
            return web.Response(body=self._video, content_type="video/mp4")
        stats.storage_downloads += 1
        return await self._serve(request)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["name"].removesuffix(".mp4")
        if token in self._hostile:
            return web.Response(body=_SCRIPT, content_type="text/x-sh")
        video = self._video
        faults = self.faults
        point = self._rng.random()
        if point < faults.truncate:
            bump(self._stats.storage_faults_injected, "truncate")
            response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            response.content_length = len(video)
            await response.prepare(request)
            await response.write(video[: len(video) // 2])
            # close() flushes what was written, then the client sees the stream end early.
            if request.transport is not None:
                request.transport.close()
            return response
        if point < faults.truncate + faults.wrong_content_length:
            bump(self._stats.storage_faults_injected, "wrong_content_length")
            response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            response.content_length = len(video) + len(video) // 4
            await response.prepare(request)
            await response.write(video)
            if request.transport is not None:
                request.transport.close()
            return response
        return web.Response(body=video, content_type="video/mp4")
