"""Task schedules: each task's whole life is drawn at submission, then read off the clock."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import attrs

from ._config import FakeHailuoConfig, Profile
from ._validation import SubmitRequest

__all__ = [
    "FAILED",
    "PROCESSING",
    "QUEUED",
    "SUCCEED",
    "UNDOCUMENTED",
    "FakeTask",
    "eta_factor",
    "new_task_id",
    "report_seconds",
    "result_body",
    "schedule_task",
]

QUEUED = "TASK_STATUS_QUEUED"
PROCESSING = "TASK_STATUS_PROCESSING"
SUCCEED = "TASK_STATUS_SUCCEED"
FAILED = "TASK_STATUS_FAILED"
UNDOCUMENTED = "TASK_STATUS_SUSPENDED"
"""The status a job drawn by the ``unknown_status`` knob answers until it ends."""

TASK_TYPE_TEXT = "MINIMAX_HAILUO_02_T2V"
TASK_TYPE_IMAGE = "MINIMAX_HAILUO_02_I2V"

_FAILURE_REASONS = (
    "generation failed: internal model error, please retry",
    "content moderation: the prompt was flagged by the safety system",
    "task timed out in the inference backend",
)
_IMAGE_FAILURE_REASONS = (
    "the input image could not be downloaded or decoded",
    "content moderation: the input image was flagged by the safety system",
)


@attrs.frozen
class FakeTask:
    """One task's schedule. Times are `time.monotonic()` values in real seconds."""

    task_id: str
    api_key: str
    request: SubmitRequest
    task_type: str
    seed: int
    """The generation seed reported in `extra.seed`."""
    created_at: float
    started_at: float
    """When the task leaves the queue and starts processing."""
    finished_at: float
    """When the task becomes terminal (SUCCEED or FAILED)."""
    reason: str
    """Empty for a task that succeeds, else why it fails."""
    processing_span: float
    """Real seconds the processing takes when it runs to the end; a failing task stops short."""
    undocumented: bool = False
    """Whether it answers :data:`UNDOCUMENTED` instead of QUEUED or PROCESSING."""

    @property
    def fails(self) -> bool:
        """Whether this task ends TASK_STATUS_FAILED."""
        return bool(self.reason)

    def status_at(self, now: float) -> str:
        """The task's status at monotonic time `now`."""
        if self.undocumented and now < self.finished_at:
            return UNDOCUMENTED
        if now < self.started_at:
            return QUEUED
        if now < self.finished_at:
            return PROCESSING
        return FAILED if self.fails else SUCCEED

    def progress_at(self, now: float) -> int:
        """Percent done: 0 while queued, rising with processing time, 100 on success."""
        if now < self.started_at:
            return 0
        if now >= self.finished_at and not self.fails:
            return 100
        # A failed task keeps the progress it had when it failed.
        end = min(now, self.finished_at)
        span = self.processing_span
        done = (end - self.started_at) / span if span > 0 else 1.0
        return max(0, min(99, int(done * 100)))

    def remaining_at(self, now: float) -> float:
        """Real seconds until the task becomes terminal (0 once it is)."""
        return max(0.0, self.finished_at - now)


def new_task_id(rng: random.Random) -> str:
    """A UUID4-shaped id, reproducible under a seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def schedule_task(
    *,
    task_id: str,
    api_key: str,
    request: SubmitRequest,
    created_at: float,
    config: FakeHailuoConfig,
    rng: random.Random,
    fail_reason: str | None = None,
) -> FakeTask:
    """Draw a task's whole timeline from the configured distributions.

    ``fail_reason`` makes the task fail with that reason, whatever ``failure_rate`` draws.
    """
    total = config.job_duration.sample(rng)
    queued = total * config.queued_fraction
    processing = total - queued
    image_task = request.image is not None or request.end_image is not None
    reason = ""
    lived = processing
    if rng.random() < config.failure_rate or fail_reason is not None:
        # Failures come part way through processing, not at the very end.
        lived = processing * rng.uniform(0.1, 0.9)
        reasons = _FAILURE_REASONS + (_IMAGE_FAILURE_REASONS if image_task else ())
        reason = fail_reason if fail_reason is not None else rng.choice(reasons)
    # Drawn only when asked for, so that seeded runs without it keep their timelines.
    undocumented = config.unknown_status > 0 and rng.random() < config.unknown_status
    scale = config.time_scale
    started_at = created_at + queued * scale
    if config.profile == "captured":
        # The real service names the task by model, duration and resolution.
        task_type = f"MINIMAX_HAILUO_02_{request.duration}S_{request.resolution}"
    else:
        task_type = TASK_TYPE_IMAGE if image_task else TASK_TYPE_TEXT
    return FakeTask(
        task_id=task_id,
        api_key=api_key,
        request=request,
        task_type=task_type,
        seed=rng.randrange(2**31),
        created_at=created_at,
        started_at=started_at,
        finished_at=started_at + lived * scale,
        reason=reason,
        processing_span=processing * scale,
        undocumented=undocumented,
    )


def eta_factor(rng: random.Random, error: float) -> float:
    """A multiplicative eta error: log-normal-ish, clipped to [1/(1+error), 1+error]."""
    if error <= 0:
        return 1.0
    return float((1.0 + error) ** max(-1.0, min(1.0, rng.gauss(0.0, 0.5))))


def report_seconds(real_seconds: float, time_scale: float) -> int | float:
    """Seconds as the fake reports them: whole at scale 1, millisecond floats when scaled.

    Rounds up, so a wait that is not over never reads as 0.
    """
    if real_seconds <= 0:
        return 0
    if time_scale == 1.0:
        return math.ceil(real_seconds)
    return math.ceil(real_seconds * 1000.0) / 1000.0


def result_body(
    task: FakeTask,
    now: float,
    *,
    eta_noise: float,
    forecasts: bool = True,
    wall_offset: float,
    time_scale: float,
    videos: list[dict[str, Any]],
    profile: Profile = "documented",
) -> dict[str, Any]:
    """The task-result response at `now`, shaped like API.md (or like the captured answers)."""
    status = task.status_at(now)
    terminal = status in (SUCCEED, FAILED)
    silent = terminal or not forecasts
    eta = 0 if silent else report_seconds(task.remaining_at(now) * eta_noise, time_scale)
    # Without forecasts a running task reports no progress either; an ended one still does.
    progress = task.progress_at(now) if forecasts or terminal else 0
    reason = task.reason if status == FAILED else ""
    shown_videos = videos if status == SUCCEED else []
    if profile == "captured":
        # As captured from the real service: progress stays 0, extra is empty.
        return {
            "audios": [],
            "extra": {},
            "images": [],
            "task": {
                "eta": eta,
                "progress_percent": 0,
                "reason": reason,
                "status": status,
                "task_id": task.task_id,
                "task_type": task.task_type,
            },
            "videos": shown_videos,
        }

    def wall_ms(monotonic: float) -> str:
        return str(int((monotonic + wall_offset) * 1000))

    return {
        "task": {
            "task_id": task.task_id,
            "task_type": task.task_type,
            "status": status,
            "reason": reason,
            "eta": eta,
            "progress_percent": progress,
        },
        "videos": shown_videos,
        "images": [],
        "audios": [],
        "extra": {
            "seed": str(task.seed),
            "debug_info": {
                "request_info": "",
                "submit_time_ms": wall_ms(task.created_at),
                "execute_time_ms": wall_ms(task.started_at) if status != QUEUED else "0",
                "complete_time_ms": wall_ms(task.finished_at) if terminal else "0",
            },
        },
    }
