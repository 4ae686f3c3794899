"""The gateway's dialect (``/work/shared/API.md``): one POST starts a job, one GET reads it.

``POST /v3/async/minimax-hailuo-02`` takes the request and answers ``{"task_id"}``;
``GET /v3/async/task-result?task_id=`` answers the task (status, eta, progress), its videos
(presigned URLs with a lifetime) and ``extra.debug_info`` (the service's own times). Errors
are HTTP statuses. A webhook is an ``ASYNC_TASK_RESULT`` event whose payload is a task
result. The gateway serves ``MiniMax-Hailuo-02`` only, and documents no watermark and no
512P: a request that sets anything else is refused before it is sent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from .._decoding import (
    DecodeError,
    decode_json,
    json_type,
    lenient_float,
    lenient_str,
    make_video,
)
from .._exceptions import APIError, InvalidRequestError, WebhookError
from .._models import TaskResult, TaskStatus, Video, VideoRequest
from .._push import WebhookEvent
from .._task_ids import task_id_problem
from .._transport import Response
from ._http import Unmapped, lookup_call, status_error, submit_call
from ._protocol import Call, Step

__all__ = [
    "DEFAULT_BASE_URL",
    "RESOLUTIONS",
    "SUBMIT_PATH",
    "TASK_RESULT_PATH",
    "WEBHOOK_EVENT_TYPE",
    "GatewayProvider",
    "GatewayResolution",
    "gateway_body",
    "read_submission",
    "read_task_result",
]

DEFAULT_BASE_URL = "https://api.highwayapi.ai"
SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
TASK_RESULT_PATH = "/v3/async/task-result"
WEBHOOK_EVENT_TYPE = "ASYNC_TASK_RESULT"
"""The one event type the gateway documents; receivers ignore any other."""

# The request's fields the gateway takes; any other must stay at its default.
_UNMAPPED = Unmapped(
    "gateway",
    frozenset(
        (
            "prompt",
            "image",
            "end_image",
            "duration",
            "resolution",
            "enable_prompt_expansion",
            "fast_pretreatment",
            "webhook_url",
        )
    ),
)
GatewayResolution = Literal["768P", "1080P"]
RESOLUTIONS: tuple[GatewayResolution, ...] = get_args(GatewayResolution)
"""The resolutions the gateway documents (no 512P)."""


class GatewayProvider:
    """The gateway's v3 asynchronous API for Hailuo-02 (the default provider)."""

    name = "gateway"
    default_base_url = DEFAULT_BASE_URL
    caps_active_jobs = True

    def __repr__(self) -> str:
        return "GatewayProvider()"

    def check(self, request: VideoRequest) -> None:
        """Refuse what the gateway does not document: other models, a watermark, 512P."""
        _UNMAPPED.refuse(request)
        if request.resolution not in RESOLUTIONS:
            raise InvalidRequestError(
                "resolution",
                f"the gateway makes {' or '.join(RESOLUTIONS)}, not {request.resolution!r}",
            )

    def submit_call(self, request: VideoRequest) -> Call:
        """``POST /v3/async/minimax-hailuo-02`` with the request's body."""
        self.check(request)
        return submit_call(SUBMIT_PATH, gateway_body(request))

    def read_submission(self, answer: Response) -> str:
        """The task id of ``{"task_id": ...}``."""
        return read_submission(decode_json(answer.body))

    def poll(self, task_id: str) -> Step:
        """One ``GET /v3/async/task-result``: the whole task, videos included."""
        call = lookup_call(
            TASK_RESULT_PATH, "task_id", task_id, subject=f"the task result for {task_id}"
        )

        def read(answer: Response) -> TaskResult:
            return read_task_result(decode_json(answer.body), task_id=task_id)

        return Step(call, read)

    def refresh(self, result: TaskResult) -> Step:
        """A poll: every task result carries fresh video URLs."""
        return self.poll(result.task_id)

    def answer_error(self, call: Call, answer: Response, *, base_url: str) -> APIError | None:
        """The gateway's errors are its HTTP statuses."""
        if answer.status < 300:
            return None
        return status_error(answer, method=call.method, url=base_url + call.path)

    def parse_webhook(self, data: Mapping[str, Any]) -> WebhookEvent:
        """An ``ASYNC_TASK_RESULT`` event's task id and claimed status; other types as such."""
        event_type = data.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise WebhookError("event_type", "must be a non-empty string")
        if event_type != WEBHOOK_EVENT_TYPE:
            return WebhookEvent(event_type=event_type[:200])
        payload = data.get("payload")
        if not isinstance(payload, Mapping):
            raise WebhookError("payload", f"must be an object, not {json_type(payload)}")
        task = payload.get("task")
        if not isinstance(task, Mapping):
            raise WebhookError("payload.task", f"must be an object, not {json_type(task)}")
        task_id = task.get("task_id")
        problem = task_id_problem(task_id)
        if problem is not None:
            raise WebhookError("payload.task.task_id", problem)
        assert isinstance(task_id, str)
        status = task.get("status", "")
        if not isinstance(status, str):
            raise WebhookError("payload.task.status", f"must be a string, not {json_type(status)}")
        return WebhookEvent(
            event_type=event_type, task_id=task_id, status=gateway_status(status), payload=payload
        )


def gateway_body(request: VideoRequest) -> dict[str, Any]:
    """The JSON body the gateway takes for ``request`` (every documented field, defaults too)."""
    body: dict[str, Any] = {"prompt": request.prompt}
    if request.image is not None:
        body["image"] = request.image
    if request.end_image is not None:
        body["end_image"] = request.end_image
    body["duration"] = request.duration
    body["resolution"] = request.resolution
    body["enable_prompt_expansion"] = request.enable_prompt_expansion
    body["fast_pretreatment"] = request.fast_pretreatment
    if request.webhook_url is not None:
        body["extra"] = {"webhook": {"url": request.webhook_url}}
    return body


@functools.lru_cache(maxsize=64)
def gateway_status(raw: str) -> TaskStatus:
    """The library's status for the gateway's string (with or without its prefix, any case).

    Remembered: the service repeats a handful, and a lookup costs less than the work.
    """
    name = raw.strip().upper().removeprefix("TASK_STATUS_")
    return TaskStatus.__members__.get(name, TaskStatus.UNKNOWN)


def read_submission(payload: object) -> str:
    """The task id from a submission's answer."""
    if not isinstance(payload, dict):
        raise DecodeError(f"$: expected a JSON object, not {json_type(payload)}")
    if "task_id" not in payload:
        raise DecodeError("$.task_id: required field missing")
    task_id = lenient_str(payload["task_id"], "$.task_id")
    if not task_id:
        raise DecodeError("$.task_id: is empty")
    return task_id


def read_task_result(
    payload: object, *, task_id: str, received_at: datetime | None = None
) -> TaskResult:
    """A TaskResult from the task-result endpoint's answer to a poll of ``task_id``.

    Lenient where the gateway is loose (numbers as text, nulls for empty, fields it may add
    or leave out), strict where it matters: another task's answer, a success without a
    video, a field of the wrong kind. A DecodeError names the field.
    """
    if received_at is None:
        received_at = datetime.now(timezone.utc)
    if not isinstance(payload, dict):
        raise DecodeError(f"$: expected a JSON object, not {json_type(payload)}")
    task = payload.get("task")
    if not isinstance(task, dict):
        if "task" not in payload:
            raise DecodeError("$.task: required field missing")
        raise DecodeError(f"$.task: expected an object, not {json_type(task)}")
    get = task.get
    reported, raw_status, reason = get("task_id", ""), get("status", ""), get("reason", "")
    if type(reported) is not str or type(raw_status) is not str or type(reason) is not str:
        # Text as the gateway sends it is read as it is; anything else leniently, or named.
        reported = lenient_str(reported, "$.task.task_id")
        raw_status = lenient_str(raw_status, "$.task.status")
        reason = lenient_str(reason, "$.task.reason")
    eta = lenient_float(get("eta"), "$.task.eta")
    progress = lenient_float(get("progress_percent"), "$.task.progress_percent")
    items = payload.get("videos")
    videos = () if items is None or items == [] else _videos(items, received_at)
    extra = payload.get("extra")
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        raise DecodeError(f"$.extra: expected an object, not {json_type(extra)}")
    if reported and reported != task_id:
        raise DecodeError(f"$.task.task_id: answer is for {reported!r}, not {task_id!r}")
    status = gateway_status(raw_status)
    if status is TaskStatus.SUCCEED:
        if not videos:
            raise DecodeError("$.videos: a succeeded task came without a video")
        progress = 100.0  # the real service may leave progress_percent at 0 on a finished task
    elif progress is not None:
        progress = min(100.0, max(0.0, progress))
    started_after, ended_after = _service_times(extra)
    return TaskResult(
        task_id=task_id,
        status=status,
        raw_status=raw_status,
        reason=reason,
        eta=eta if eta is None or eta >= 0 else None,
        progress_percent=progress,
        videos=videos,
        started_after=started_after,
        ended_after=ended_after,
        extra=extra,
        received_at=received_at,
    )


def _videos(items: object, received_at: datetime) -> tuple[Video, ...]:
    if not isinstance(items, list):
        raise DecodeError(f"$.videos: expected an array, not {json_type(items)}")
    videos = []
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            raise DecodeError(f"$.videos[{number}]: expected an object, not {json_type(item)}")
        url, ttl, video_type = (
            item.get("video_url"),
            item.get("video_url_ttl"),
            item.get("video_type"),
        )
        if type(url) is not str or (video_type is not None and type(video_type) is not str):
            if "video_url" not in item:
                raise DecodeError(f"$.videos[{number}].video_url: required field missing")
            url = lenient_str(url, f"$.videos[{number}].video_url")
            video_type = lenient_str(video_type, f"$.videos[{number}].video_type")
        if url:
            ttl = lenient_float(ttl, f"$.videos[{number}].video_url_ttl")
            videos.append(make_video(url, ttl, video_type, received_at))
    return tuple(videos)


_TIMES = ("submit_time_ms", "execute_time_ms", "complete_time_ms")


def _service_times(extra: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Seconds from submission to the start of processing and to the end, by the gateway's
    clock (``extra.debug_info``); None where it does not say, or says something unreadable."""
    info = extra.get("debug_info")
    if not isinstance(info, dict):
        return None, None
    get = info.get
    submitted: int | None
    started: int | None
    completed: int | None
    try:
        submitted = int(get("submit_time_ms", 0))
        started = int(get("execute_time_ms", 0))
        completed = int(get("complete_time_ms", 0))
    except (TypeError, ValueError, OverflowError):
        submitted, started, completed = (_milliseconds(info, name) for name in _TIMES)
    if submitted is None or submitted <= 0:
        return None, None
    return (
        None if started is None or started < submitted else (started - submitted) / 1000,
        None if completed is None or completed < submitted else (completed - submitted) / 1000,
    )


def _milliseconds(info: Mapping[str, Any], name: str) -> int | None:
    try:
        return int(info.get(name, 0))
    except (TypeError, ValueError, OverflowError):
        return None
