"""A failed job's error as the journal keeps it, and the same error rebuilt when a run resumes.

The journal stores the error's message (``error``), its class name (``error_type``) and its
attributes as JSON (``error_fields``): a task result as :func:`result_to_json` writes it, a
request in the library's JSON form, anything else that JSON can hold as it is. A replayed failure
is then an instance of the same class with the same attributes, so code that handles a
:class:`RateLimitError` or reads ``TaskFailedError.result`` works the same on a resumed run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import _exceptions
from .._decoding import request_from_json, request_to_json, result_from_json, result_to_json
from .._models import TaskResult, VideoRequest
from . import _errors
from ._records import JobRecord

__all__ = ["encode_error", "error_from_record"]

# Tags of the values JSON cannot hold as they are.
_RESULT = "$task_result"
_REQUEST = "$video_request"

_CLASSES: dict[str, type[_exceptions.HailuoError]] = {
    name: getattr(module, name)
    for module in (_exceptions, _errors)
    for name in module.__all__
    if isinstance(getattr(module, name), type)
    and issubclass(getattr(module, name), _exceptions.HailuoError)
}


def _encode(value: object) -> object:
    if isinstance(value, TaskResult):
        return {_RESULT: result_to_json(value)}
    if isinstance(value, VideoRequest):
        return {_REQUEST: request_to_json(value)}
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    return value


def _decode(value: object) -> object:
    if isinstance(value, Mapping) and len(value) == 1:
        if _RESULT in value:
            return result_from_json(value[_RESULT])
        if _REQUEST in value:
            return request_from_json(value[_REQUEST])
    return value


def _fields_json(error: BaseException) -> str | None:
    fields: dict[str, Any] = {}
    for name, value in vars(error).items():
        if name.startswith("_"):
            continue
        encoded = _encode(value)
        try:
            json.dumps(encoded)
        except (TypeError, ValueError):
            continue  # not JSON (a caller's own object): the message still says what it was
        fields[name] = encoded
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False) if fields else None


def encode_error(
    error: BaseException | str, error_type: str | None = None
) -> tuple[str, str | None, str | None]:
    """The ``error``, ``error_type`` and ``error_fields`` columns for a failed job."""
    if isinstance(error, BaseException):
        return str(error), error_type or type(error).__name__, _fields_json(error)
    return error, error_type, None


def error_from_record(record: JobRecord) -> _exceptions.HailuoError:
    """The error a job failed with in an earlier run: the same class, with the same fields.

    A class this library does not define (or a record without one) comes back as a plain
    :class:`HailuoError` with the stored message.
    """
    message = record.error or f"job {record.key!r} is {record.state.value} in the journal"
    cls = _CLASSES.get(record.error_type or "")
    if cls is None:
        return _exceptions.HailuoError(message)
    # Not through __init__: each class takes other arguments, and they are all stored.
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    for name, value in (record.error_fields or {}).items():
        setattr(error, name, _decode(value))
    return error
