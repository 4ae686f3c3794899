"""What the journal keeps about one job, and how a task result is stored as JSON."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from .._models import TaskResult, TaskStatus, Video, VideoRequest

__all__ = ["JobRecord", "JobState", "result_from_json", "result_to_json"]


class JobState(str, enum.Enum):
    """Where a job is in its life.

    ``SUBMITTING`` is written (durably) before the POST leaves; ``SUBMITTED`` as soon as the
    task id is known. A job found ``SUBMITTING`` after a crash may have started a paid job
    whose id was lost, so it becomes ``UNKNOWN``: never sent again unless the caller says so.
    """

    RECORDED = "recorded"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FINISHED = "finished"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """True for FINISHED and FAILED."""
        return self in (JobState.FINISHED, JobState.FAILED)


@attrs.frozen(kw_only=True)
class JobRecord:
    """One job as the journal has it. Times are UTC; ``attempts`` counts submissions begun."""

    key: str
    index: int
    state: JobState
    fingerprint: str
    payload: Mapping[str, Any] = attrs.field(repr=False)
    task_id: str | None = None
    result: TaskResult | None = attrs.field(default=None, repr=False)
    error: str | None = None
    error_type: str | None = None
    path: str | None = None
    attempts: int = 0
    owner: str | None = None
    lease_until: datetime | None = None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    downloaded_at: datetime | None = None

    @property
    def downloaded(self) -> bool:
        """True once the video was saved (``path`` says where)."""
        return self.path is not None

    def to_request(self) -> VideoRequest:
        """The request this job was recorded for, rebuilt from the stored payload."""
        payload = dict(self.payload)
        webhook = payload.pop("extra", {}).get("webhook", {})
        return VideoRequest(**payload, webhook_url=webhook.get("url"))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def result_to_json(result: TaskResult) -> str:
    """A task result as compact JSON (video URLs included: they are needed to download)."""
    data = {
        "task_id": result.task_id,
        "status": result.status.value,
        "raw_status": result.raw_status,
        "reason": result.reason,
        "eta": result.eta,
        "progress_percent": result.progress_percent,
        "videos": [
            {
                "url": video.url,
                "ttl": video.ttl,
                "video_type": video.video_type,
                "expires_at": _iso(video.expires_at),
            }
            for video in result.videos
        ],
        "extra": dict(result.extra),
        "received_at": _iso(result.received_at),
    }
    # `extra` came from JSON, but a caller may build results by hand: never fail on it.
    return json.dumps(data, separators=(",", ":"), default=str)


def result_from_json(text: str) -> TaskResult:
    """The task result that :func:`result_to_json` wrote."""
    data = json.loads(text)
    return TaskResult(
        task_id=data["task_id"],
        status=TaskStatus(data["status"]),
        raw_status=data.get("raw_status", ""),
        reason=data.get("reason", ""),
        eta=data.get("eta"),
        progress_percent=data.get("progress_percent"),
        videos=tuple(
            Video(
                url=video["url"],
                ttl=video.get("ttl"),
                video_type=video.get("video_type"),
                expires_at=_from_iso(video.get("expires_at")),
            )
            for video in data.get("videos", ())
        ),
        extra=data.get("extra", {}),
        received_at=_from_iso(data.get("received_at")) or datetime.now(timezone.utc),
    )
