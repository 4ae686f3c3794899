"""The library's data: what a caller asks for and what the service answers."""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import attrs

from ._base_errors import HailuoError, InvalidRequestError
from ._images import ImageInput, image_reference

__all__ = [
    "DEFAULT_MODEL",
    "DURATIONS",
    "MAX_PROMPT_CHARS",
    "MODELS",
    "RESOLUTIONS",
    "RESOLUTIONS_BY_DURATION",
    "JobOutcome",
    "Model",
    "TaskResult",
    "TaskStatus",
    "Video",
    "VideoRequest",
]

# The models' rules, stated once: VideoRequest checks those every provider shares, and the
# FastAPI request model (hailuo_async.fastapi.VideoRequestBody) derives its JSON schema from
# them. What one provider adds (a model it does not serve, 512P only from a first frame) is
# that provider's to check (hailuo_async.providers), before anything is sent.
Duration = Literal[6, 10]
Resolution = Literal["512P", "768P", "1080P"]
Model = Literal["MiniMax-Hailuo-02", "MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast"]

MAX_PROMPT_CHARS = 2000
"""The longest prompt, in characters (Unicode code points)."""
DURATIONS: tuple[Duration, ...] = get_args(Duration)
"""The video lengths the models make, in seconds."""
RESOLUTIONS: tuple[Resolution, ...] = get_args(Resolution)
"""The resolutions the models make (512P from a first frame, on MiniMax's own API only)."""
RESOLUTIONS_BY_DURATION: Mapping[int, tuple[Resolution, ...]] = {
    6: RESOLUTIONS,
    10: ("512P", "768P"),
}
"""The resolutions each duration is made at (10-second videos never at 1080P)."""
MODELS: tuple[Model, ...] = get_args(Model)
"""The video models a request may name (the gateway serves only the first)."""
DEFAULT_MODEL: Model = "MiniMax-Hailuo-02"
"""The model a request names unless told otherwise."""


def _check_prompt(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidRequestError("prompt", f"must be a string, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            "prompt", f"must be 1 to {MAX_PROMPT_CHARS} characters long, not {len(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            "prompt", "must be valid Unicode (it holds a lone surrogate)"
        ) from exc


def _check_duration(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in DURATIONS:
        allowed = " or ".join(str(d) for d in DURATIONS)
        raise InvalidRequestError("duration", f"must be the integer {allowed}, not {value!r}")


def _check_resolution(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in RESOLUTIONS:
        allowed = " or ".join(repr(r) for r in RESOLUTIONS)
        raise InvalidRequestError("resolution", f"must be {allowed}, not {value!r}")


def _check_model(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in MODELS:
        allowed = ", ".join(repr(model) for model in MODELS)
        raise InvalidRequestError("model", f"must be one of {allowed}, not {value!r}")


def _check_bool(_: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequestError(attribute.name, f"must be True or False, not {value!r}")


def _check_webhook_url(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is None:
        return
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            "webhook_url", f"must be an http(s) URL with a host, not {value!r}"
        )


def _url_origin(value: str | None) -> str:
    # A webhook URL's path may hold its receiver's secret: only where it goes is shown.
    if value is None:
        return "None"
    parts = urlsplit(value)
    hidden = "/***" if parts.path.strip("/") or parts.query else ""
    return repr(f"{parts.scheme}://{parts.netloc}{hidden}")


def _to_image(value: ImageInput | None) -> str | None:
    return None if value is None else image_reference(value, "image")


def _to_end_image(value: ImageInput | None) -> str | None:
    return None if value is None else image_reference(value, "end_image")


def _short(value: str | None) -> str:
    if value is None:
        return "None"
    return repr(value if len(value) <= 60 else value[:57] + "...")


@attrs.frozen
class VideoRequest:
    """One video generation job, checked against the models' rules when it is made.

    The prompt may be given by position (``VideoRequest("a red fox")``); every other field is
    keyword-only. ``image`` and ``end_image`` take an http(s) URL, a
    ``data:image/...;base64,`` URI, a :class:`pathlib.Path` or raw ``bytes`` (JPEG, PNG or
    WebP, at most 20 MB), which become a data URI. A local file must be given as a
    :class:`pathlib.Path`: a plain string is always read as a URL or data URI, so text from a
    web form can never make the library read a file of the server. Breaking a rule raises
    :class:`InvalidRequestError` naming the field.

    ``model`` and ``aigc_watermark`` (a visible AI-generated mark) are MiniMax's own API's;
    the gateway serves ``MiniMax-Hailuo-02`` without a watermark. Each provider checks its own
    rules before anything is sent (see ``docs/concepts/providers.md``).
    """

    prompt: str = attrs.field(validator=_check_prompt, repr=lambda p: repr(p[:60]))
    image: str | None = attrs.field(default=None, converter=_to_image, repr=_short, kw_only=True)
    end_image: str | None = attrs.field(
        default=None, converter=_to_end_image, repr=_short, kw_only=True
    )
    duration: Duration = attrs.field(default=6, validator=_check_duration, kw_only=True)
    resolution: Resolution = attrs.field(default="768P", validator=_check_resolution, kw_only=True)
    enable_prompt_expansion: bool = attrs.field(default=True, validator=_check_bool, kw_only=True)
    fast_pretreatment: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)
    webhook_url: str | None = attrs.field(
        default=None, validator=_check_webhook_url, repr=_url_origin, kw_only=True
    )
    model: Model = attrs.field(default=DEFAULT_MODEL, validator=_check_model, kw_only=True)
    aigc_watermark: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)

    def __attrs_post_init__(self) -> None:
        allowed = RESOLUTIONS_BY_DURATION[self.duration]
        if self.resolution not in allowed:
            made_at = " or ".join(allowed)
            raise InvalidRequestError(
                "resolution", f"{self.duration}-second videos are only made at {made_at}"
            )

    @property
    def fingerprint(self) -> str:
        """A stable hash of the request: the same job asked twice has the same fingerprint.

        It is the same in every release and through every provider (a journal's job keys
        are made from it): see :func:`canonical_body`.
        """
        body = json.dumps(canonical_body(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


# The fields of the first release, which hashed its API body as it wrote it: every one of
# these, at its default or not, with the webhook inside `extra`. Frozen: changing it would
# change every job key, and an old journal would pay for its jobs again.
_V1_FIELDS = frozenset(
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
)


@functools.cache
def _later_fields() -> tuple[tuple[str, object], ...]:
    """Each field added since the first release, with its default."""
    return tuple(
        (field.name, field.default)
        for field in attrs.fields(VideoRequest)
        if field.name not in _V1_FIELDS
    )


def canonical_body(request: VideoRequest) -> dict[str, Any]:
    """The request as its fingerprint hashes it: the same in every release, for every provider.

    The first release's fields exactly as that release hashed them, and each field added
    since only when it is not at its default (under its own name), so a new field leaves the
    keys of every request that does not use it as they were.
    """
    # Written out rather than taken from the gateway's body: the keys must not follow it.
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
    for name, default in _later_fields():
        value = getattr(request, name)
        if value != default:
            body[name] = value
    return body


class TaskStatus(str, enum.Enum):
    """Where a job is, in the library's own words, whatever the provider calls it.

    The service's own string stays in :attr:`TaskResult.raw_status`. ``UNKNOWN`` stands for
    any status this library does not know yet.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str) -> TaskStatus:
        """The member a stored or relayed status names; UNKNOWN for any other text.

        Takes the library's values and member names, and the gateway's strings
        (``TASK_STATUS_SUCCEED``) that releases before 0.2 stored as the values, so journals
        and notices written by them read the same.
        """
        return _STORED_STATUSES.get(text) or _parse_status(text)

    @property
    def is_terminal(self) -> bool:
        """True for SUCCEED and FAILED."""
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED)


def _parse_status(text: str) -> TaskStatus:
    word = text.strip()
    member = _BY_VALUE.get(word.lower())
    if member is not None:
        return member
    name = word.upper().removeprefix("TASK_STATUS_")
    return TaskStatus.__members__.get(name, TaskStatus.UNKNOWN)


_BY_VALUE = {member.value: member for member in TaskStatus}
# What a status is read back from, all but instantly: the values, and those of old releases.
_STORED_STATUSES = {
    **_BY_VALUE,
    **{f"TASK_STATUS_{name}": member for name, member in TaskStatus.__members__.items()},
    "UNKNOWN": TaskStatus.UNKNOWN,
}


@attrs.frozen(kw_only=True)
class Video:
    """A finished video: a presigned URL on the storage host, valid until ``expires_at``.

    ``ttl`` is the lifetime the service gave (None when it gave none, or ``"0"``, which the
    real service sends for "not known"). ``expires_at`` is the earlier of receipt + ``ttl``
    and the expiry the URL's own signature states (S3, GCS, COS, ``Expires=``); None when
    neither says, and such a URL is never taken for expired before the storage host says so.
    """

    url: str = attrs.field(repr=lambda u: repr(u.split("?", 1)[0]))
    ttl: float | None = None
    video_type: str | None = None
    expires_at: datetime | None = None

    def is_expired(self, *, margin: float = 0.0, now: datetime | None = None) -> bool:
        """True when the URL has expired, or will within ``margin`` seconds."""
        if self.expires_at is None:
            return False
        now = now or datetime.now(timezone.utc)
        return (self.expires_at - now).total_seconds() <= margin


@attrs.frozen(kw_only=True)
class TaskResult:
    """What the service says of a task at one moment, whichever provider said it.

    ``status`` is UNKNOWN for statuses this library does not know; ``raw_status`` keeps the
    service's own string. ``eta`` (seconds left) and ``progress_percent`` are the service's
    forecasts, when it gives any; ``started_after`` and ``ended_after`` are the seconds from
    the submission to the start of processing and to the end, by the service's own clock,
    when it says. ``extra`` holds the service's other fields, as sent.
    """

    task_id: str
    status: TaskStatus
    raw_status: str = ""
    reason: str = ""
    eta: float | None = None
    progress_percent: float | None = None
    videos: tuple[Video, ...] = ()
    started_after: float | None = None
    ended_after: float | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    received_at: datetime = attrs.field(
        factory=lambda: datetime.now(timezone.utc), repr=False, eq=False
    )

    @property
    def is_done(self) -> bool:
        """True once the job has ended, well or badly."""
        return self.status.is_terminal

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.status is TaskStatus.SUCCEED

    @property
    def video(self) -> Video | None:
        """The first video, if any."""
        return self.videos[0] if self.videos else None


@attrs.frozen(kw_only=True)
class JobOutcome:
    """What became of one request of a batch; ``index`` is its place in the input.

    ``replayed`` is True when the outcome comes from the journal of an earlier run.
    """

    index: int
    request: VideoRequest
    task_id: str | None = None
    result: TaskResult | None = None
    error: HailuoError | None = None
    key: str | None = None
    path: str | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when the job succeeded (and, if asked, its video was downloaded)."""
        return self.error is None and self.result is not None and self.result.ok
