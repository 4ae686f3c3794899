"""What the journal keeps about one job."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from .._decoding import request_from_json, result_from_json, result_to_json
from .._models import TaskResult, VideoRequest

__all__ = ["JobRecord", "JobState", "dump_result", "result_from_json", "result_to_json"]


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
    error_fields: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    """The error's attributes as JSON (see :func:`error_from_record`), when it had any."""
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
        """The request this job was recorded for, rebuilt from the stored payload (the
        library's own form, or the gateway's body in journals of releases before 0.2)."""
        return request_from_json(self.payload)


def dump_result(result: TaskResult) -> str:
    """A task result as the compact JSON text a store keeps."""
    # `extra` came from JSON, but a caller may build results by hand: never fail on it.
    return json.dumps(result_to_json(result), separators=(",", ":"), default=str)
