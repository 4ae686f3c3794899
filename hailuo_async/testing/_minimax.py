"""MiniMax's own v1 video API (MINIMAX_API.md): its paths, request rules, answers and callbacks.

Three steps: ``POST /v1/video_generation`` makes a task, ``GET /v1/query/video_generation``
tells its status and, on success, a ``file_id``, and ``GET /v1/files/retrieve`` gives that
file's presigned ``download_url`` (a fresh one each time). Every answer is HTTP 200 with a
``base_resp``; a non-zero ``status_code`` is the error (auth, rate limits, bad parameters,
balance, content policy). With a ``callback_url`` the service first checks the receiver with
a challenge, then POSTs the task's state, in the query answer's shape, on each change.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiohttp
from aiohttp import web

from ._service import FakeService, Handler, RateLimited
from ._stats import bump
from ._tasks import FAILED, PROCESSING, QUEUED, SUCCEED, UNDOCUMENTED, FakeTask
from ._validation import (
    PROMPT_MAX_CHARS,
    RequestError,
    SubmitRequest,
    canonical_body,
    check_bool,
    check_image,
    check_url,
    invalid,
    load_object,
)

__all__ = [
    "MODELS",
    "QUERY_PATH",
    "RETRIEVE_PATH",
    "SUBMIT_PATH",
    "MiniMaxDialect",
    "MiniMaxError",
    "parse_minimax_body",
]

SUBMIT_PATH = "/v1/video_generation"
QUERY_PATH = "/v1/query/video_generation"
RETRIEVE_PATH = "/v1/files/retrieve"

MODELS = ("MiniMax-Hailuo-02", "MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast")
_IMAGE_ONLY_MODELS = ("MiniMax-Hailuo-2.3-Fast",)
_LAST_FRAME_MODELS = ("MiniMax-Hailuo-02",)
DURATIONS = (6, 10)
RESOLUTIONS = ("512P", "768P", "1080P")
_FRAME = {"512P": (912, 512), "768P": (1366, 768), "1080P": (1920, 1080)}
_KNOWN_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "prompt_optimizer",
        "fast_pretreatment",
        "duration",
        "resolution",
        "first_frame_image",
        "last_frame_image",
        "subject_reference",
        "callback_url",
        "aigc_watermark",
    }
)

# base_resp.status_code values (MINIMAX_API.md, "Errors").
UNKNOWN_ERROR = 1000
RATE_LIMITED = 1002
AUTH_FAILED = 1004
INSUFFICIENT_BALANCE = 1008
INPUT_SENSITIVE = 1026
OUTPUT_SENSITIVE = 1027
INVALID_PARAMS = 2013
RATE_GROWTH_LIMITED = 2045
INVALID_API_KEY = 2049
USAGE_LIMITED = 2056
# How each cause of a rate-limit refusal is worded: the window and a single injected one as
# 1002, a burst as MiniMax's "rate growth limit", the cap on active tasks as its window quota.
_RATE_ANSWERS = {
    "rate_window": (RATE_LIMITED, "rate limit exceeded(RPM)"),
    "injected": (RATE_LIMITED, "rate limit exceeded(RPM)"),
    "burst": (RATE_GROWTH_LIMITED, "rate growth limit exceeded"),
    "active_cap": (USAGE_LIMITED, "usage limit of the current window exceeded"),
}

PREPARING = "Preparing"
QUEUEING = "Queueing"
PROCESSING_ = "Processing"
SUCCESS = "Success"
FAIL = "Fail"
SUSPENDED = "Suspended"
"""The undocumented status a job drawn by the ``unknown_status`` knob answers until it ends."""
_LOWER = {
    PREPARING: "preparing",
    QUEUEING: "queueing",
    PROCESSING_: "processing",
    SUCCESS: "success",
    FAIL: "failed",
    SUSPENDED: "suspended",
}
_OUTPUT_SENSITIVE_REASON = "output new_sensitive: the generated video was refused"

# MiniMax gives the receiver 3 s to echo the challenge; scaled, but never under a second of
# real time, so a loopback receiver on a busy machine is not failed for the machine's sake.
_CHALLENGE_SECONDS = 3.0
_MIN_CHALLENGE_TIMEOUT = 1.0
_MAX_CHALLENGE_ANSWER = 64 * 1024
_CALLBACK_HEADERS = {"Content-Type": "application/json", "User-Agent": "fake-minimax-callback/1"}

# The zero-valued answer of each endpoint, which its errors fill in (as MiniMax's do).
_EMPTY: dict[str, dict[str, Any]] = {
    SUBMIT_PATH: {"task_id": ""},
    QUERY_PATH: {"task_id": "", "status": "", "file_id": "", "video_width": 0, "video_height": 0},
    RETRIEVE_PATH: {"file": None},
}


class MiniMaxError(Exception):
    """A refusal answered in ``base_resp`` (HTTP 200, a non-zero status code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def base_resp(code: int = 0, message: str = "success") -> dict[str, Any]:
    """The ``base_resp`` object every answer carries."""
    return {"status_code": code, "status_msg": message}


def parse_minimax_body(raw: bytes, *, max_image_bytes: int) -> SubmitRequest:
    """Decode and check a ``/v1/video_generation`` body by MiniMax's rules (RequestError 400)."""
    data = load_object(raw, _KNOWN_FIELDS)
    model = data.get("model")
    if model is None:
        raise invalid("model", "is required")
    if model not in MODELS:
        raise invalid("model", f"must be one of {', '.join(MODELS)}")
    if "subject_reference" in data:
        raise invalid("subject_reference", "only S2V-01 takes a subject reference")
    first = data.get("first_frame_image")
    first = check_image("first_frame_image", first, max_image_bytes) if first is not None else None
    last = data.get("last_frame_image")
    if last is not None:
        if model not in _LAST_FRAME_MODELS:
            raise invalid("last_frame_image", f"only {', '.join(_LAST_FRAME_MODELS)} takes one")
        last = check_image("last_frame_image", last, max_image_bytes)
    if first is None and model in _IMAGE_ONLY_MODELS:
        raise invalid("first_frame_image", f"is required: {model} makes videos from an image")
    prompt = _check_prompt(data.get("prompt"), image_given=first is not None)
    duration, resolution = _check_format(data, image_given=first is not None)
    callback = data.get("callback_url")
    return SubmitRequest(
        prompt=prompt,
        duration=duration,
        resolution=resolution,
        enable_prompt_expansion=check_bool("prompt_optimizer", data.get("prompt_optimizer", True)),
        fast_pretreatment=check_bool("fast_pretreatment", data.get("fast_pretreatment", False)),
        image=first,
        end_image=last,
        extra=None,
        canonical=canonical_body(data, raw),
        model=model,
        callback_url=check_url("callback_url", callback) if callback is not None else None,
        aigc_watermark=check_bool("aigc_watermark", data.get("aigc_watermark", False)),
    )


def _check_prompt(prompt: object, *, image_given: bool) -> str:
    if prompt is None:
        if image_given:
            return ""
        raise invalid("prompt", "is required for text-to-video (no first_frame_image)")
    if not isinstance(prompt, str):
        raise invalid("prompt", "must be a string")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise invalid("prompt", f"must be at most {PROMPT_MAX_CHARS} characters, got {len(prompt)}")
    if not prompt and not image_given:
        raise invalid("prompt", "must not be empty for text-to-video")
    return prompt


def _check_format(data: dict[str, Any], *, image_given: bool) -> tuple[int, str]:
    duration = data.get("duration", 6)
    if not isinstance(duration, int) or isinstance(duration, bool) or duration not in DURATIONS:
        raise invalid("duration", "must be 6 or 10")
    resolution = data.get("resolution", "768P")
    if resolution not in RESOLUTIONS:
        raise invalid("resolution", f"must be one of {', '.join(RESOLUTIONS)}")
    if resolution == "512P" and not image_given:
        raise invalid("resolution", "512P needs a first_frame_image")
    if resolution == "1080P" and duration != 6:
        raise invalid("resolution", "1080P is for 6-second videos only")
    return duration, resolution


class MiniMaxDialect:
    """Submit, query and retrieve endpoints, answering as MiniMax documents."""

    def __init__(self, service: FakeService) -> None:
        self._service = service
        seed = service.seed
        self._file_rng = random.Random(f"{seed}:files")
        self._challenge_rng = random.Random(f"{seed}:challenges")
        self._trace_rng = random.Random(f"{seed}:traces")
        self._file_of_task: dict[str, str] = {}
        self._task_of_file: dict[str, str] = {}

    def routes(self) -> list[web.RouteDef]:
        """POST the submission, GET the query and the file."""
        return [
            web.post(SUBMIT_PATH, self._submit),
            web.get(QUERY_PATH, self._query),
            web.get(RETRIEVE_PATH, self._retrieve),
        ]

    def new_task_id(self, rng: random.Random) -> str:
        """A numeric id of 15 digits, as MiniMax's."""
        return str(rng.randrange(10**14, 10**15))

    def status_of(self, task: FakeTask, now: float) -> str:
        """``Preparing`` (the first half of the queue), ``Queueing``, ``Processing``,
        ``Success`` or ``Fail``."""
        status = task.status_at(now)
        if status == QUEUED:
            prepared = task.created_at + (task.started_at - task.created_at) / 2
            return PREPARING if now < prepared else QUEUEING
        return {
            PROCESSING: PROCESSING_,
            SUCCEED: SUCCESS,
            FAILED: FAIL,
            UNDOCUMENTED: SUSPENDED,
        }[status]

    # -- answers --------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refusals as HTTP 200 answers with a non-zero ``base_resp``; a Trace-Id on each."""
        try:
            response = await handler(request)
        except MiniMaxError as error:
            response = self._error(request.path, error.code, error.message)
        except RateLimited as refusal:
            code, message = _RATE_ANSWERS[refusal.cause]
            response = self._error(request.path, code, message)
        except RequestError as error:
            if error.status == 401:
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    response = self._error(request.path, INVALID_API_KEY, "invalid api key")
                else:
                    message = "login fail: please carry the API secret key in the Authorization"
                    response = self._error(request.path, AUTH_FAILED, message + " header")
            else:
                bump(self._service.stats.rejected_by_field, error.field)
                message = f"invalid params, {error.field}: {error.message}"
                response = self._error(request.path, INVALID_PARAMS, message)
        except web.HTTPException as error:
            # Unknown paths and methods: the plain text of the Go server behind the API.
            response = web.Response(status=error.status, text=f"{error.status} {error.reason}")
            if "Allow" in error.headers:
                response.headers["Allow"] = error.headers["Allow"]
        response.headers["Trace-Id"] = f"{self._trace_rng.getrandbits(128):032x}"
        return response

    def _error(self, path: str, code: int, message: str) -> web.Response:
        bump(self._service.stats.error_codes, code)
        body = {**_EMPTY.get(path, {}), "base_resp": base_resp(code, message)}
        return web.json_response(body)

    def _query_body(self, task: FakeTask, now: float, *, lower: bool = False) -> dict[str, Any]:
        """The query answer at ``now``; ``lower`` words the status as the callbacks may."""
        status = self.status_of(task, now)
        succeeded = status == SUCCESS
        width, height = _FRAME[task.request.resolution] if succeeded else (0, 0)
        answer = base_resp()
        if status == FAIL:
            code = OUTPUT_SENSITIVE if task.reason == _OUTPUT_SENSITIVE_REASON else UNKNOWN_ERROR
            answer = base_resp(code, task.reason)
        return {
            "task_id": task.task_id,
            "status": _LOWER[status] if lower else status,
            "file_id": self._file_of_task[task.task_id] if succeeded else "",
            "video_width": width,
            "video_height": height,
            "base_resp": answer,
        }

    # -- endpoints ------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        config = service.config
        service.stats.submission_attempts += 1
        key = service.admit(request)
        submission = parse_minimax_body(
            await service.read_body(request), max_image_bytes=config.max_image_bytes
        )
        balance = config.insufficient_balance_after
        if balance is not None and service.stats.submissions_accepted >= balance:
            raise MiniMaxError(INSUFFICIENT_BALANCE, "insufficient balance")
        if _marked(submission.prompt, config.input_sensitive_marker):
            raise MiniMaxError(INPUT_SENSITIVE, "input new_sensitive")
        service.check_active_cap(key)
        fault, early = service.strike(request, submit=True)
        if early is not None:
            return early
        refused_output = _marked(submission.prompt, config.output_sensitive_marker)
        task = service.create_task(
            key, submission, fail_reason=_OUTPUT_SENSITIVE_REASON if refused_output else None
        )
        body = {"task_id": task.task_id, "base_resp": base_resp()}
        return await service.answer_created(request, task, fault, body)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        service.stats.polls_total += 1
        key = service.admit(request)
        task = service.polled_task(
            request, key, unknown=RequestError(400, "task_id", "task not found")
        )
        fault, early = service.strike(request, submit=False)
        if early is not None:
            return early
        body = self._query_body(task, time.monotonic())
        if body["base_resp"]["status_code"]:
            bump(service.stats.error_codes, body["base_resp"]["status_code"])
        return await service.answer(fault, body)

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        service.stats.retrieves_total += 1
        key = service.admit(request)
        file_id = service.required(request, "file_id")
        now = time.monotonic()
        task = service.task_of(key, self._task_of_file.get(file_id, ""))
        if task is None or self.status_of(task, now) != SUCCESS:
            raise RequestError(400, "file_id", "file not found")
        bump(service.stats.retrieves_by_task, task.task_id)
        fault, early = service.strike(request, submit=False)
        if early is not None:
            return early
        storage = service.storage
        body = {
            "file": {
                # A number here, a string in the query answer: as MiniMax's own examples.
                "file_id": int(file_id),
                "bytes": storage.video_bytes,
                "created_at": int(task.finished_at + service.wall_offset),
                "filename": "output.mp4",
                "purpose": "video_generation",
                "download_url": storage.download_url(task.task_id, now),
            },
            "base_resp": base_resp(),
        }
        return await service.answer(fault, body)

    # -- tasks and callbacks --------------------------------------------------------------

    def task_created(self, task: FakeTask, now: float) -> None:
        """Name the task's file; start its callbacks if it gave a callback_url."""
        file_id = str(self._file_rng.randrange(10**14, 10**15))
        self._file_of_task[task.task_id] = file_id
        self._task_of_file[file_id] = task.task_id
        if task.request.callback_url is not None:
            self._service.spawn(self._callbacks(task, task.request.callback_url))

    def task_ended(self, task: FakeTask) -> None:
        """Nothing: the task's callbacks follow its schedule on their own."""

    async def _callbacks(self, task: FakeTask, url: str) -> None:
        """The challenge, then one POST per change of the task's status, in order."""
        if not await self._challenge(url):
            return
        service = self._service
        lower = service.config.callback_status_case == "lower"
        for moment in self._changes(task):
            await asyncio.sleep(max(0.0, moment - time.monotonic()))
            body = json.dumps(self._query_body(task, moment, lower=lower)).encode()
            for _ in range(service.webhook_copies()):
                await service.deliver_webhook(url, body, _CALLBACK_HEADERS)

    def _changes(self, task: FakeTask) -> list[float]:
        """The moments after its creation at which the task's status changes."""
        prepared = task.created_at + (task.started_at - task.created_at) / 2
        moments = []
        status = self.status_of(task, task.created_at)
        for moment in (prepared, task.started_at, task.finished_at):
            now_status = self.status_of(task, moment)
            if now_status != status:
                moments.append(moment)
                status = now_status
        return moments

    async def _challenge(self, url: str) -> bool:
        """POST ``{"challenge": X}``; True if ``{"challenge": X}`` came back in time."""
        service = self._service
        value = f"{self._challenge_rng.getrandbits(64):016x}"
        service.stats.challenges_sent += 1
        timeout = service.scaled_timeout(_CHALLENGE_SECONDS, _MIN_CHALLENGE_TIMEOUT)
        echoed = False
        try:
            async with service.http().post(
                url, json={"challenge": value}, headers=_CALLBACK_HEADERS, timeout=timeout
            ) as reply:
                raw = await reply.content.read(_MAX_CHALLENGE_ANSWER)
                answer = json.loads(raw) if 200 <= reply.status < 300 else None
                echoed = isinstance(answer, dict) and answer.get("challenge") == value
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            echoed = False
        if not echoed:
            service.stats.challenges_failed += 1
        return echoed


def _marked(prompt: str, marker: str) -> bool:
    return bool(marker) and marker in prompt
