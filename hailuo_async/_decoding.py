"""Read what services and stores send: lenient where they are loose, strict where it matters.

Each provider reads its own answers (:mod:`hailuo_async.providers`) with the readers here,
which name the field that is wrong (``$.task.eta: expected a number``). The stored forms of
results and requests (journals, relayed events) are read through the project's own cattrs
converter rather than the global one, so nothing a caller registers on
``cattrs.global_converter`` can change how they are read, and vice versa.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from math import isfinite
from typing import Any
from urllib.parse import unquote_plus

import attrs
import cattrs

from ._models import TaskResult, TaskStatus, Video, VideoRequest

__all__ = [
    "DecodeError",
    "decode_json",
    "json_type",
    "lenient_float",
    "lenient_str",
    "make_video",
    "object_at",
    "request_from_json",
    "request_to_json",
    "result_from_json",
    "result_summary",
    "result_to_json",
    "url_expiry",
]


class DecodeError(ValueError):
    """An answer does not have the shape the API documents; the message names the field."""


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


# Integers beyond this have no float (and NaN compares false with it).
_LARGEST = 2**1023


def lenient_float(value: object, where: str) -> float | None:
    """A number as services send it: JSON numbers, numbers as text, and "" or null for none.

    Raises DecodeError naming ``where`` for anything else, and for NaN and infinities.
    """
    # The common cases first: a plain JSON number (an int's float is finite, or overflows).
    if type(value) is float:
        if isfinite(value):
            return value
    elif type(value) is int:
        if -_LARGEST < value < _LARGEST:
            return float(value)
    elif value is None or value == "":
        return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise DecodeError(f"{where}: expected a number, not {value[:40]!r}") from None
        if isfinite(number):
            return number
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if -_LARGEST < value < _LARGEST:
            return float(value)
    else:
        raise DecodeError(f"{where}: expected a number, not {json_type(value)}")
    raise DecodeError(f"{where}: expected a finite number")


def lenient_str(value: object, where: str) -> str:
    """Text as services send it: strings, numbers as text, and null for "". Else DecodeError."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DecodeError(f"{where}: expected a string, not {json_type(value)}")


def object_at(value: object, where: str, *, required: bool = True) -> dict[str, Any]:
    """``value`` if it is a JSON object; {} for null when not ``required``; else DecodeError."""
    if isinstance(value, dict):
        return value
    if value is None and not required:
        return {}
    raise DecodeError(f"{where}: expected an object, not {json_type(value)}")


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


def make_video(url: str, ttl: float | None, video_type: str | None, received_at: datetime) -> Video:
    """A video as an answer gives it: its URL, its lifetime in seconds (if said) and its type.

    ``expires_at`` is the earlier of what the lifetime and the URL's own signature say.
    """
    # The real gateway sends "0" where it does not know the lifetime: 0 is unknown, not expired.
    if ttl is not None and not 0 < ttl <= _MAX_TTL_SECONDS:
        ttl = None
    expires_at = url_expiry(url)
    if ttl is not None:
        try:
            lived = received_at + timedelta(0, ttl)
        except OverflowError:  # past the calendar's end: the ttl sets no bound
            pass
        else:
            if expires_at is None or lived < expires_at:
                expires_at = lived
    return Video(url=url, ttl=ttl, video_type=video_type or None, expires_at=expires_at)


# -- stored forms --------------------------------------------------------------------------


def request_to_json(request: VideoRequest) -> dict[str, Any]:
    """The library's own JSON form of a request, as journals keep it (every field but nulls).

    Provider-neutral: what each provider sends is made from the request itself when it is
    sent. :func:`request_from_json` reads it back, and reads the gateway's body too, which
    journals of releases before 0.2 hold.
    """
    return {
        field.name: value
        for field in attrs.fields(VideoRequest)
        if (value := getattr(request, field.name)) is not None
    }


def request_from_json(data: Mapping[str, Any]) -> VideoRequest:
    """The request :func:`request_to_json` gave (or an old journal's gateway body)."""
    request: VideoRequest = _converter.structure(data, VideoRequest)
    return request


def _structure_request(data: object, _: object) -> VideoRequest:
    if not isinstance(data, Mapping):
        raise TypeError(f"expected an object, not {json_type(data)}")
    fields = dict(data)
    # The gateway's body, kept by journals of releases before 0.2: the webhook in `extra`.
    extra = fields.pop("extra", None) or {}
    webhook = extra.get("webhook") or {}
    if webhook.get("url") is not None:
        fields["webhook_url"] = webhook["url"]
    return VideoRequest(**fields)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    # Stored results (the journal) and HTTP answers carry times as ISO 8601 text.
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
    converter.register_unstructure_hook(TaskStatus, lambda status: status.value)
    # Older releases stored the gateway's strings as statuses: parse reads both.
    converter.register_structure_hook(TaskStatus, lambda value, _: TaskStatus.parse(value))
    converter.register_unstructure_hook(VideoRequest, request_to_json)
    converter.register_structure_hook(VideoRequest, _structure_request)
    return converter


_converter = _make_converter()


def result_to_json(result: TaskResult) -> dict[str, Any]:
    """Everything a task result holds as JSON-ready data (video URLs included); see
    :func:`result_from_json` for the way back."""
    data: dict[str, Any] = _converter.unstructure(result)
    data["extra"] = dict(result.extra)
    return data


def result_from_json(data: Mapping[str, Any]) -> TaskResult:
    """The task result :func:`result_to_json` gave, read back equal (old releases' too)."""
    result: TaskResult = _converter.structure(dict(data), TaskResult)
    return result


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
