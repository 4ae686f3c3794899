"""Read the service's answers: lenient where the service is loose, strict where it matters.

The project keeps its own cattrs converter rather than the global one, so nothing a caller
registers on ``cattrs.global_converter`` can change how answers are read, and vice versa.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from math import isfinite
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn
from cattrs.v import transform_error

from ._models import TaskResult, TaskStatus, Video, VideoRequest

__all__ = [
    "DecodeError",
    "decode_json",
    "decode_submission",
    "decode_task_result",
    "json_type",
    "request_from_payload",
    "result_from_json",
    "result_summary",
    "result_to_json",
    "slot_setters",
    "url_expiry",
]


class DecodeError(ValueError):
    """An answer does not have the shape the API documents; the message names the field."""


# The wire classes live only between the JSON and the public models, within one call: they
# are plain slotted classes, as a frozen one pays a setattr call per field on every answer.


@attrs.define
class _WireTask:
    task_id: str = ""
    status: str = ""
    reason: str = ""
    eta: float | None = None
    progress_percent: float | None = None


@attrs.define
class _WireVideo:
    video_url: str
    video_url_ttl: float | None = None
    video_type: str | None = None


@attrs.define
class _WireTaskResult:
    task: _WireTask
    videos: list[_WireVideo] = attrs.Factory(list)
    extra: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class _WireSubmission:
    task_id: str


def _lenient_float(value: object, _: object) -> float | None:
    # The common cases first: a plain JSON number (an int's float is finite, or overflows).
    if type(value) is float:
        if isfinite(value):
            return value
        raise ValueError("expected a finite number")
    if type(value) is int:
        return float(value)
    # The gateway sends some numbers as strings, and empty strings for "not known".
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("expected a number, not a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise TypeError(f"expected a number, not {type(value).__name__}")
    if not isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _lenient_str(value: object, _: object) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, not {type(value).__name__}")


def _null_as_empty_list(value: object, _: object) -> list[_WireVideo]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, not {type(value).__name__}")
    return [_converter.structure(item, _WireVideo) for item in value]


def _null_as_empty_dict(value: object, _: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, not {type(value).__name__}")
    return value


def _objects_only(structure: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, cls: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, not {type(value).__name__}")
        return structure(value, cls)

    return hook


def _is(expected: object) -> Callable[[object], bool]:
    return lambda candidate: candidate == expected


def json_type(value: object) -> str:
    """What a decoded JSON value is, for messages: "null", "a boolean", "an array" ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _request_from_payload(payload: object, _: object) -> VideoRequest:
    # The inverse of VideoRequest.to_payload: the webhook rides in extra.webhook.url.
    if not isinstance(payload, Mapping):
        raise TypeError(f"expected an object, not {json_type(payload)}")
    fields = dict(payload)
    extra = fields.pop("extra", None) or {}
    webhook = extra.get("webhook") or {}
    return VideoRequest(**fields, webhook_url=webhook.get("url"))


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(str, _lenient_str)
    # Stored results (the journal) and HTTP answers carry times as ISO 8601 text.
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
    converter.register_unstructure_hook(TaskStatus, lambda status: status.value)
    # TaskStatus is a str: without its own hook it would be read by the lenient str hook.
    converter.register_structure_hook(TaskStatus, lambda value, _: TaskStatus(value))
    converter.register_unstructure_hook(VideoRequest, VideoRequest.to_payload)
    converter.register_structure_hook(VideoRequest, _request_from_payload)
    # Generic and union types are matched by equality: functools' dispatch cannot hold them.
    hooks: list[tuple[object, Callable[[object, object], object]]] = [
        (float | None, _lenient_float),
        (list[_WireVideo], _null_as_empty_list),
        (dict[str, Any], _null_as_empty_dict),
    ]
    for type_, hook in hooks:
        converter.register_structure_hook_func(_is(type_), hook)
    # Nested objects must be objects: left to itself cattrs reads a string as an empty one.
    for cls in (_WireTask, _WireVideo, _WireTaskResult):
        converter.register_structure_hook(
            cls, _objects_only(make_dict_structure_fn(cls, converter))
        )
    return converter


_converter = _make_converter()


# A presigned URL living longer than this is not one: its expiry is taken as unknown.
_MAX_TTL_SECONDS = 366 * 24 * 3600.0
# S3 (SigV4) and GCS (V4) sign with a compact ISO 8601 time: YYYYMMDDTHHMMSSZ.
_SIGNED_DATE = "%Y%m%dT%H%M%SZ"
# An `Expires` smaller than this is not an epoch (some stores use it for a lifetime).
_MIN_EPOCH = 1_000_000_000
_UTC = timezone.utc


def _signed_at(text: str) -> datetime:
    """An S3/GCS signing time, read as ``strptime(text, _SIGNED_DATE)`` reads it, in UTC.

    The fixed form the stores send is read as two integers: strptime costs five times as much.
    Its pattern fits 16 characters only with two-digit fields, so these are its fields.
    """
    day, clock = text[:8], text[9:15]
    if (
        len(text) == 16
        and text.isascii()
        and day.isdigit()
        and clock.isdigit()
        and text[8] in "Tt"  # strptime ignores case
        and text[15] in "Zz"
    ):
        ymd, hms = int(day), int(clock)
        return datetime(
            ymd // 10000,
            ymd // 100 % 100,
            ymd % 100,
            hms // 10000,
            hms // 100 % 100,
            hms % 100,
            tzinfo=_UTC,
        )
    # Any other spelling strptime takes, such as one-digit fields: read as it reads it.
    return datetime.strptime(text, _SIGNED_DATE).replace(tzinfo=_UTC)


# The (signing time, lifetime) parameter pairs of S3 and GCS.
_SIGNED_WINDOWS = (("x-amz-date", "x-amz-expires"), ("x-goog-date", "x-goog-expires"))


def _signed_window(query: Mapping[str, str], names: tuple[str, str]) -> datetime | None:
    date, lifetime = query.get(names[0]), query.get(names[1])
    if date is None or lifetime is None:
        return None
    return _signed_at(date) + timedelta(0, int(lifetime))


_EXPIRY_PARAMS = frozenset(
    ("x-amz-date", "x-amz-expires", "x-goog-date", "x-goog-expires", "q-sign-time", "expires")
)


# The first character of a name that is or may hide one of those (percent-escaped).
_EXPIRY_INITIALS = frozenset("xXqQeE%")


def _unquote(text: str) -> str:
    """``unquote_plus(text)``, without its cost for COS's ``start%3Bend``: its only escape."""
    plain = text.replace("%3B", ";").replace("%3b", ";")
    return plain if "%" not in plain and "+" not in plain else unquote_plus(text)


def _expiry_params(url: str) -> dict[str, str]:
    """The query parameters that can state an expiry, names lower-cased (the first of each).

    Read as ``parse_qsl(urlsplit(url).query, keep_blank_values=True)`` would, but decoding
    only the parameters kept: this runs on every answer with a video.
    """
    if "#" in url:
        url = url.partition("#")[0]
    found: dict[str, str] = {}
    for pair in url.partition("?")[2].split("&"):
        if pair[:1] not in _EXPIRY_INITIALS:
            continue  # most of a signature's parameters: not one of ours, even encoded
        name, _, value = pair.partition("=")
        if "%" in name:  # a "+" is a space, which none of the names holds
            name = unquote_plus(name)
        name = name.lower()
        if name in _EXPIRY_PARAMS and name not in found:
            found[name] = _unquote(value) if "%" in value or "+" in value else value
    return found


def url_expiry(url: str) -> datetime | None:
    """When a presigned URL stops working, as its own query says; None when it does not say.

    Reads S3 and compatibles (``X-Amz-Date`` + ``X-Amz-Expires``), GCS (``X-Goog-Date`` +
    ``X-Goog-Expires``), Tencent COS (``q-sign-time=start;end``) and the older
    ``Expires=<epoch>`` form. Parameter names are matched without regard to case.
    """
    query = _expiry_params(url)
    if not query:
        return None
    try:
        if "x-amz-date" in query or "x-goog-date" in query:
            for names in _SIGNED_WINDOWS:
                window = _signed_window(query, names)
                if window is not None:
                    return window
        if "q-sign-time" in query:
            epoch = int(query["q-sign-time"].partition(";")[2])
        elif "expires" in query:
            epoch = int(query["expires"])
        else:
            return None
        return datetime.fromtimestamp(epoch, _UTC) if epoch >= _MIN_EPOCH else None
    except (ValueError, OverflowError, OSError):
        # A malformed signature says nothing; the storage host will judge the URL.
        return None


def result_to_json(result: TaskResult) -> dict[str, Any]:
    """Everything a task result holds as JSON-ready data (video URLs included); see
    :func:`result_from_json` for the way back."""
    data: dict[str, Any] = _converter.unstructure(result)
    data["extra"] = dict(result.extra)
    return data


def result_from_json(data: Mapping[str, Any]) -> TaskResult:
    """The task result :func:`result_to_json` gave, read back equal."""
    result: TaskResult = _converter.structure(dict(data), TaskResult)
    return result


def request_from_payload(payload: Mapping[str, Any]) -> VideoRequest:
    """The request whose :meth:`VideoRequest.to_payload` is ``payload``."""
    request: VideoRequest = _converter.structure(payload, VideoRequest)
    return request


def result_summary(result: TaskResult) -> dict[str, Any]:
    """The short JSON view of a task result that HTTP answers and ``hailuo status`` show."""
    video = result.video
    expires_at = None if video is None or video.expires_at is None else video.expires_at
    return {
        "task_id": result.task_id,
        "status": result.status.value,
        "raw_status": result.raw_status,
        "done": result.is_done,
        "ok": result.ok,
        "progress_percent": result.progress_percent,
        "eta": result.eta,
        "reason": result.reason or None,
        "video_url": None if video is None else video.url,
        "video_expires_at": None if expires_at is None else expires_at.isoformat(),
    }


def _json_parser() -> Callable[[bytes], object]:
    # orjson (the ``speed`` extra) parses a task result about 4x faster than json; both
    # raise a ValueError on what is not JSON.
    try:
        import orjson  # noqa: PLC0415 - optional: the speed extra
    except ImportError:
        return json.loads
    return orjson.loads


_parse_json = _json_parser()


def decode_json(body: bytes) -> object:
    """Parse a JSON body; raise DecodeError when it is not JSON."""
    try:
        return _parse_json(body)
    except (ValueError, RecursionError) as exc:
        problem = type(exc).__name__
    # Raised outside the handler, so not chained: the JSON error holds the whole body, which
    # may echo a secret.
    raise DecodeError(f"the body is not valid JSON ({problem})")


def _structure(payload: object, cls: type[Any]) -> Any:
    if not isinstance(payload, dict):
        raise DecodeError(f"expected a JSON object, not {type(payload).__name__}")
    try:
        return _converter.structure(payload, cls)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise DecodeError("; ".join(transform_error(exc, path="$"))) from exc
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise DecodeError(f"$: {exc}") from exc


def decode_submission(payload: object) -> str:
    """The task id from a submission's answer."""
    wire: _WireSubmission = _structure(payload, _WireSubmission)
    if not wire.task_id:
        raise DecodeError("$.task_id: is empty")
    return wire.task_id


# Looked up once: on Python 3.11 reading a member off its enum class costs 70 ns, per answer.
_SUCCEED = TaskStatus.SUCCEED


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class _Memo(dict[_Key, _Value]):
    """What a pure function gave for each key met so far, up to 64: the service repeats a
    handful (its statuses, its videos' lifetime), and a lookup costs less than the work."""

    def __init__(self, work_out: Callable[[_Key], _Value]) -> None:
        super().__init__()
        self._work_out = work_out

    def __missing__(self, key: _Key) -> _Value:
        value = self._work_out(key)
        if len(self) < 64:  # an odd service must not grow it without bound
            self[key] = value
        return value


_STATUSES: _Memo[str, TaskStatus] = _Memo(TaskStatus.parse)
# By position: keywords cost timedelta 70 %; even so, making one costs half a Video.
_LIFETIMES: _Memo[float, timedelta] = _Memo(lambda seconds: timedelta(0, seconds))


def slot_setters(cls: type[Any], names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of the slots ``names`` of ``cls``, which must be all its fields, in order.

    The decoder makes a TaskResult or Video as its __init__ would, without calling it (and a
    batch its JobOutcomes): the call packs the keyword arguments into a dict, and a frozen
    class's __init__ stores each field through a bound ``object.__setattr__``, a third of a
    poll's decoding in all. Checked at import: a field added, or one that __init__ would
    check or convert, fails the import instead of being skipped.
    """
    fields = attrs.fields(cls)
    checked = any(field.validator or field.converter for field in fields)
    hooked = hasattr(cls, "__attrs_pre_init__") or hasattr(cls, "__attrs_post_init__")
    if tuple(field.name for field in fields) != names or checked or hooked:
        raise TypeError(f"{cls.__name__} has changed: update where it is made by its slots")
    return tuple(vars(cls)[name].__set__ for name in names)


_new = object.__new__
_set_url, _set_ttl, _set_video_type, _set_expires_at = slot_setters(
    Video, ("url", "ttl", "video_type", "expires_at")
)
(
    _set_task_id,
    _set_status,
    _set_raw_status,
    _set_reason,
    _set_eta,
    _set_progress_percent,
    _set_videos,
    _set_extra,
    _set_received_at,
) = slot_setters(
    TaskResult,
    (
        "task_id",
        "status",
        "raw_status",
        "reason",
        "eta",
        "progress_percent",
        "videos",
        "extra",
        "received_at",
    ),
)


class _Uncommon(Exception):
    """An answer off the common shape: the detailed reading takes it."""


_UNCOMMON = _Uncommon()


def _common_videos(items: object, received_at: datetime) -> tuple[Video, ...]:
    if type(items) is not list:
        raise _UNCOMMON
    videos = []
    for item in items:
        if type(item) is not dict:
            raise _UNCOMMON
        url, video_type = item["video_url"], item.get("video_type")
        if type(url) is not str or (video_type is not None and type(video_type) is not str):
            raise _UNCOMMON
        if url:
            videos.append(
                _video(
                    url, _lenient_float(item.get("video_url_ttl"), None), video_type, received_at
                )
            )
    return tuple(videos)


def _video(url: str, ttl: float | None, video_type: str | None, received_at: datetime) -> Video:
    # The real service sends "0" where it does not know the lifetime: 0 is unknown, not expired.
    if ttl is not None and not 0 < ttl <= _MAX_TTL_SECONDS:
        ttl = None
    # The earlier of what the ttl and the URL's own signature say, or None if neither does.
    expires_at = url_expiry(url)
    if ttl is not None:
        try:
            lived = received_at + _LIFETIMES[ttl]
        except OverflowError:  # past the calendar's end: the ttl sets no bound
            pass
        else:
            if expires_at is None or lived < expires_at:
                expires_at = lived
    video = _new(Video)
    _set_url(video, url)
    _set_ttl(video, ttl)
    _set_video_type(video, video_type or None)
    _set_expires_at(video, expires_at)
    return video


def _read_common(payload: dict[str, Any], task_id: str, received_at: datetime) -> TaskResult:
    """The answer read straight into a TaskResult, when it has the common shape.

    Anything else raises (_Uncommon, or the error of a lenient hook) before a result is
    made, and the detailed reading reads it again to name what is wrong. It reads what the
    detailed reading would (tests/test_decoding_speed.py checks they agree), without the
    wire objects and cattrs' per-field bookkeeping: this runs on every poll.
    """
    task, items, extra = payload["task"], payload.get("videos"), payload.get("extra")
    if type(task) is not dict:
        raise _UNCOMMON
    if extra is None:
        extra = {}
    elif type(extra) is not dict:
        raise _UNCOMMON
    get = task.get
    reported, raw_status, reason = get("task_id", ""), get("status", ""), get("reason", "")
    if type(reported) is not str or type(raw_status) is not str or type(reason) is not str:
        raise _UNCOMMON
    fields = (
        reported,
        raw_status,
        reason,
        _lenient_float(get("eta"), None),
        _lenient_float(get("progress_percent"), None),
    )
    if items is None or (type(items) is list and not items):
        videos: tuple[Video, ...] = ()
    else:
        videos = _common_videos(items, received_at)
    return _result(task_id, fields, videos, extra, received_at)


def _read_detailed(payload: object, task_id: str, received_at: datetime) -> TaskResult:
    """The answer read through the converter's generated hooks: errors name the field."""
    wire: _WireTaskResult = _structure(payload, _WireTaskResult)
    task = wire.task
    fields = (task.task_id, task.status, task.reason, task.eta, task.progress_percent)
    videos = tuple(
        _video(video.video_url, video.video_url_ttl, video.video_type, received_at)
        for video in wire.videos
        if video.video_url
    )
    return _result(task_id, fields, videos, wire.extra, received_at)


# What an answer says of its task: task_id, status, reason, eta, progress_percent, as read.
_TaskFields = tuple[str, str, str, float | None, float | None]


def _result(
    task_id: str,
    fields: _TaskFields,
    videos: tuple[Video, ...],
    extra: dict[str, Any],
    received_at: datetime,
) -> TaskResult:
    reported, raw_status, reason, eta, progress = fields
    if reported and reported != task_id:
        raise DecodeError(f"$.task.task_id: answer is for {reported!r}, not {task_id!r}")
    status = _STATUSES[raw_status]
    if status is _SUCCEED:
        if not videos:
            raise DecodeError("$.videos: a succeeded task came without a video")
        progress = 100.0  # the real service may leave progress_percent at 0 on a finished task
    elif progress is not None:
        progress = min(100.0, max(0.0, progress))
    result = _new(TaskResult)
    _set_task_id(result, task_id)
    _set_status(result, status)
    _set_raw_status(result, raw_status)
    _set_reason(result, reason)
    _set_eta(result, eta if eta is None or eta >= 0 else None)
    _set_progress_percent(result, progress)
    _set_videos(result, videos)
    _set_extra(result, extra)
    _set_received_at(result, received_at)
    return result


def decode_task_result(
    payload: object, *, task_id: str, received_at: datetime | None = None
) -> TaskResult:
    """A TaskResult from the task-result endpoint's answer to a poll of ``task_id``."""
    if received_at is None:
        received_at = datetime.now(timezone.utc)
    if type(payload) is dict:
        try:
            return _read_common(payload, task_id, received_at)
        except DecodeError:
            raise  # well-formed, but not an answer to this poll
        except Exception:  # noqa: S110 - the detailed reading says what is wrong
            pass
    return _read_detailed(payload, task_id, received_at)
