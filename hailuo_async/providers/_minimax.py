"""MiniMax's own v1 video API (``/work/shared/MINIMAX_API.md``): three calls per job.

``POST /v1/video_generation`` starts a job and answers ``{"task_id", "base_resp"}``;
``GET /v1/query/video_generation?task_id=`` answers its ``status`` (``Preparing``,
``Queueing``, ``Processing``, ``Success``, ``Fail``) and, on success, a ``file_id``;
``GET /v1/files/retrieve?file_id=`` answers the file's ``download_url`` (valid about 9
hours; retrieved again when it has expired). A poll is thus a query, then one retrieve once
the task has succeeded. MiniMax gives no eta, progress or service times.

Errors come in HTTP 200 answers, as ``base_resp.status_code``: each code maps to the
library's error tree (see :data:`CODES`). Callbacks: MiniMax first checks the URL with
``{"challenge": X}``, which must be answered ``{"challenge": X}`` within 3 seconds; then it
posts the task's state, in the query answer's shape (its status lower-case or capitalised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from .._decoding import (
    DecodeError,
    decode_json,
    json_type,
    lenient_float,
    lenient_str,
    make_video,
    object_at,
)
from .._exceptions import (
    APIError,
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    InsufficientBalanceError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    WebhookError,
)
from .._models import DEFAULT_MODEL, TaskResult, TaskStatus, VideoRequest
from .._push import WebhookEvent
from .._retry import parse_retry_after
from .._task_ids import task_id_problem
from .._transport import Response
from ._http import Unmapped, lookup_call, status_error, submit_call
from ._protocol import Call, Step

__all__ = [
    "CODES",
    "DEFAULT_BASE_URL",
    "MAINLAND_BASE_URL",
    "QUERY_PATH",
    "RETRIEVE_PATH",
    "SUBMIT_PATH",
    "MiniMaxProvider",
    "minimax_body",
    "minimax_status",
]

DEFAULT_BASE_URL = "https://api.minimax.io"
MAINLAND_BASE_URL = "https://api.minimaxi.com"
"""MiniMax's host for mainland China (a key works on its own host only)."""
SUBMIT_PATH = "/v1/video_generation"
QUERY_PATH = "/v1/query/video_generation"
RETRIEVE_PATH = "/v1/files/retrieve"

# What the download URL is taken to live when its own query says nothing: "about 9 hours".
_DOWNLOAD_URL_TTL = 32_400.0

# The request's fields this provider sends; every one of VideoRequest's today.
_UNMAPPED = Unmapped(
    "minimax",
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
            "model",
            "aigc_watermark",
        )
    ),
)
_FAST = "MiniMax-Hailuo-2.3-Fast"

_STATUSES = {
    "preparing": TaskStatus.QUEUED,
    "queueing": TaskStatus.QUEUED,
    "queued": TaskStatus.QUEUED,
    "processing": TaskStatus.PROCESSING,
    "success": TaskStatus.SUCCEED,
    "fail": TaskStatus.FAILED,
    "failed": TaskStatus.FAILED,
}

_RATE_LIMITED = frozenset((1002, 2045, 2056))
_AUTHENTICATION = frozenset((1004, 2049))
_SERVER_FAULTS = frozenset((1000, 1001, 1024, 1033))
_INPUT_SENSITIVE = 1026
_OUTPUT_SENSITIVE = 1027
_BALANCE = 1008
_INVALID = 2013

CODES: Mapping[int, str] = {
    1000: "unknown error",
    1001: "timeout",
    1002: "rate limit",
    1004: "authentication failed",
    1008: "insufficient balance",
    1024: "internal error",
    1026: "input sensitive (the prompt or an image was refused)",
    1027: "output sensitive (the generated video was refused)",
    1033: "system error",
    1039: "token limit",
    1041: "connection limit",
    1042: "too many invisible characters",
    2013: "invalid parameters",
    2038: "real-name verification required",
    2045: "rate growth limit",
    2049: "invalid API key",
    2056: "usage limit of the current window exceeded",
}
"""What MiniMax documents for each ``base_resp.status_code``."""


class MiniMaxProvider:
    """MiniMax's own API: ``MiniMax-Hailuo-02``, ``-2.3`` and ``-2.3-Fast``."""

    name = "minimax"
    default_base_url = DEFAULT_BASE_URL
    caps_active_jobs = False

    def __repr__(self) -> str:
        return "MiniMaxProvider()"

    def check(self, request: VideoRequest) -> None:
        """MiniMax's rules: 2.3-Fast and 512P need a first frame, a last frame Hailuo-02."""
        _UNMAPPED.refuse(request)
        if request.model == _FAST and request.image is None:
            raise InvalidRequestError(
                "image", f"{_FAST} makes videos from a first frame only: give an image"
            )
        if request.end_image is not None and request.model != DEFAULT_MODEL:
            raise InvalidRequestError(
                "end_image", f"a last frame is taken by {DEFAULT_MODEL} only, not {request.model}"
            )
        if request.resolution == "512P" and request.image is None:
            raise InvalidRequestError("resolution", "512P is made from a first frame only")

    def submit_call(self, request: VideoRequest) -> Call:
        """``POST /v1/video_generation`` with the request in MiniMax's words."""
        self.check(request)
        return submit_call(SUBMIT_PATH, minimax_body(request))

    def read_submission(self, answer: Response) -> str:
        """The task id of ``{"task_id": ..., "base_resp": {"status_code": 0}}``."""
        payload = object_at(decode_json(answer.body), "$")
        task_id = lenient_str(payload.get("task_id"), "$.task_id")
        if not task_id:
            raise DecodeError("$.task_id: is empty")
        return task_id

    def poll(self, task_id: str) -> Step:
        """A query; once the task has succeeded, one retrieve of its file's URL follows."""
        call = lookup_call(QUERY_PATH, "task_id", task_id, subject=f"the query of task {task_id}")

        def read(answer: Response) -> TaskResult | Step:
            return self._read_query(decode_json(answer.body), task_id)

        return Step(call, read)

    def refresh(self, result: TaskResult) -> Step:
        """One retrieve of the task's file: a fresh download URL (a poll without a file id)."""
        file_id = result.extra.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            return self.poll(result.task_id)
        return self._retrieve(result, file_id)

    def answer_error(self, call: Call, answer: Response, *, base_url: str) -> APIError | None:
        """An error status, or a non-zero ``base_resp.status_code`` in a good answer."""
        url = base_url + call.path
        if answer.status >= 300:
            return status_error(answer, method=call.method, url=url)
        try:
            payload = decode_json(answer.body)
        except DecodeError:
            return None  # the reading says what is wrong
        if not isinstance(payload, dict):
            return None
        code, message = _base_resp(payload)
        if code == 0 or code is None:
            return None
        if call.path == QUERY_PATH and (
            code == _OUTPUT_SENSITIVE or minimax_status(_text(payload.get("status"))).is_terminal
        ):
            return None  # the task ended (failed): the code is its reason, read as such
        return _code_error(code, message, call, answer, payload, url)

    def parse_webhook(self, data: Mapping[str, Any]) -> WebhookEvent:
        """A callback URL's challenge, or the task state MiniMax posts (query's shape)."""
        if "challenge" in data:
            challenge = data["challenge"]
            if not isinstance(challenge, str) or len(challenge) > 1024:
                raise WebhookError("challenge", "must be a string of at most 1024 characters")
            return WebhookEvent(event_type="challenge", challenge=challenge)
        task_id = data.get("task_id")
        problem = task_id_problem(task_id)
        if problem is not None:
            raise WebhookError("task_id", problem)
        assert isinstance(task_id, str)
        status = data.get("status", "")
        if not isinstance(status, str):
            raise WebhookError("status", f"must be a string, not {json_type(status)}")
        return WebhookEvent(
            event_type="task_state", task_id=task_id, status=minimax_status(status), payload=data
        )

    # -- reading -----------------------------------------------------------------------

    def _read_query(self, payload: object, task_id: str) -> TaskResult | Step:
        payload = object_at(payload, "$")
        reported = lenient_str(payload.get("task_id"), "$.task_id")
        if reported and reported != task_id:
            raise DecodeError(f"$.task_id: answer is for {reported!r}, not {task_id!r}")
        raw_status = lenient_str(payload.get("status"), "$.status")
        status = minimax_status(raw_status)
        code, message = _base_resp(payload)
        extra = {
            name: value
            for name, value in payload.items()
            if name in ("file_id", "video_width", "video_height")
        }
        if code == _OUTPUT_SENSITIVE:
            status = TaskStatus.FAILED  # the video was made, and refused
        result = TaskResult(
            task_id=task_id,
            status=status,
            raw_status=raw_status,
            reason=_failure_reason(code, message) if status is TaskStatus.FAILED else "",
            extra=extra,
        )
        if status is not TaskStatus.SUCCEED:
            return result
        file_id = lenient_str(payload.get("file_id"), "$.file_id")
        if not file_id:
            raise DecodeError("$.file_id: a succeeded task came without a file")
        return self._retrieve(result, file_id)

    def _retrieve(self, result: TaskResult, file_id: str) -> Step:
        call = lookup_call(
            RETRIEVE_PATH, "file_id", file_id, subject=f"the file of task {result.task_id}"
        )
        return Step(call, _with_file(result, file_id))


def _with_file(result: TaskResult, file_id: str) -> Callable[[Response], TaskResult]:
    """How a retrieve's answer completes ``result``: its video, progress 100, the file's facts."""

    def read(answer: Response) -> TaskResult:
        received_at = datetime.now(timezone.utc)
        payload = object_at(decode_json(answer.body), "$")
        file = object_at(payload.get("file"), "$.file")
        reported = lenient_str(file.get("file_id"), "$.file.file_id")
        if reported and reported != file_id:
            raise DecodeError(f"$.file.file_id: answer is for {reported!r}, not {file_id!r}")
        url = lenient_str(file.get("download_url"), "$.file.download_url")
        if not url:
            raise DecodeError("$.file.download_url: is empty")
        filename = lenient_str(file.get("filename"), "$.file.filename")
        lenient_float(file.get("bytes"), "$.file.bytes")  # a number, if anything
        video = make_video(url, _DOWNLOAD_URL_TTL, _suffix(filename) or "mp4", received_at)
        kept = {name: value for name, value in file.items() if name != "download_url"}
        return TaskResult(
            task_id=result.task_id,
            status=TaskStatus.SUCCEED,
            raw_status=result.raw_status,
            progress_percent=100.0,
            videos=(video,),
            extra={**result.extra, "file_id": file_id, "file": kept},
            received_at=received_at,
        )

    return read


def minimax_body(request: VideoRequest) -> dict[str, Any]:
    """The JSON body MiniMax takes for ``request`` (left out: what is off by default)."""
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "prompt_optimizer": request.enable_prompt_expansion,
        "duration": request.duration,
        "resolution": request.resolution,
    }
    if request.image is not None:
        body["first_frame_image"] = request.image
    if request.end_image is not None:
        body["last_frame_image"] = request.end_image
    if request.fast_pretreatment:
        body["fast_pretreatment"] = True
    if request.webhook_url is not None:
        body["callback_url"] = request.webhook_url
    if request.aigc_watermark:
        body["aigc_watermark"] = True
    return body


def minimax_status(raw: str) -> TaskStatus:
    """The library's status for MiniMax's (``Success``, ``success`` ... any case)."""
    return _STATUSES.get(raw.strip().lower(), TaskStatus.UNKNOWN)


def _base_resp(payload: Mapping[str, Any]) -> tuple[int | None, str]:
    """The answer's ``base_resp`` code and message; (None, "") when it has none."""
    base = payload.get("base_resp")
    if not isinstance(base, dict):
        return None, ""
    raw = base.get("status_code")
    try:
        code = int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        code = None
    message = base.get("status_msg")
    return code, message if isinstance(message, str) else ""


def _failure_reason(code: int | None, message: str) -> str:
    if code is None or code == 0:
        return message
    return f"{message or CODES.get(code, 'failed')} (MiniMax code {code})"


def _code_error(  # noqa: PLR0917 - the answer's parts, each needed by some error
    code: int,
    message: str,
    call: Call,
    answer: Response,
    payload: dict[str, Any],
    url: str,
) -> APIError:
    """The library's error for a MiniMax error code (every code is one, known or not)."""
    described = message or CODES.get(code, "error")
    summary = f"MiniMax error {code} from {call.method} {call.path}: {described[:500]}"
    kwargs: dict[str, Any] = {
        "status_code": answer.status,
        "body": payload,
        "headers": answer.headers,
        "method": call.method,
        "url": url,
        "code": code,
    }
    if code in _RATE_LIMITED:
        # A refused submission made no task: retried, after the shared pause a 429 makes.
        return RateLimitError(summary, retry_after=parse_retry_after(answer.headers), **kwargs)
    if code in _AUTHENTICATION:
        return AuthenticationError(summary, **kwargs)
    if code == _BALANCE:
        return InsufficientBalanceError(summary, **kwargs)
    if code == _INPUT_SENSITIVE:
        return ContentPolicyError(summary, **kwargs)
    if code == _INVALID:
        if call.kind == "poll":
            # A query's or retrieve's one parameter is its id: one the service does not know.
            return NotFoundError(summary, **kwargs)
        return BadRequestError(summary, **kwargs)
    if code in _SERVER_FAULTS:
        if call.kind == "submit" and _task_id_of(payload):
            # An answer with a task id does not prove that no task was made: never resent.
            return APIResponseValidationError(
                f"{summary}, yet with a task id: the job may have started",
                status_code=answer.status,
                body=payload,
                method=call.method,
                url=url,
            )
        return InternalServerError(summary, **kwargs)
    return APIStatusError(summary, **kwargs)


def _task_id_of(payload: Mapping[str, Any]) -> str:
    """The task id an answer carries, or "" (also for one of the wrong kind)."""
    value = payload.get("task_id")
    return value if isinstance(value, str) else ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _suffix(filename: str) -> str:
    return PurePosixPath(filename).suffix.lstrip(".").lower()
