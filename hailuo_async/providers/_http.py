"""What every provider's dialect shares: HTTP error statuses, queries, JSON bodies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs

from .._base_errors import InvalidRequestError
from .._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from .._models import VideoRequest
from .._retry import parse_retry_after
from .._task_ids import is_plain_task_id
from .._transport import Response
from ._protocol import Call

__all__ = [
    "Unmapped",
    "encode_body",
    "error_text",
    "lookup_call",
    "query",
    "status_error",
    "submit_call",
]

# Made once: json.dumps with options builds a new encoder on every call.
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False)

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A request's JSON body, as UTF-8."""
    return _BODY_ENCODER.encode(body).encode("utf-8")


def submit_call(path: str, body: Mapping[str, Any]) -> Call:
    """A submission: ``body`` POSTed as JSON to ``path``."""
    return Call(
        "POST", path, kind="submit", subject="the submission's answer", body=encode_body(body)
    )


def lookup_call(path: str, name: str, value: str, *, subject: str) -> Call:
    """A GET of ``path`` for one id (``?name=value``), as a poll spends the budget."""
    return Call("GET", path, kind="poll", subject=subject, query=query(name, value))


def query(name: str, value: str) -> str:
    """``name=value`` as a URL's query, encoded (a task id of the usual kind needs none)."""
    if is_plain_task_id(value):
        return f"{name}={value}"
    return urlencode({name: value})


class Unmapped:
    """The request's fields a provider does not send, which must stay at their defaults."""

    def __init__(self, provider: str, mapped: frozenset[str]) -> None:
        self._provider = provider
        # Worked out once: a request is checked on every submission.
        self._defaults = tuple(
            (field.name, field.default)
            for field in attrs.fields(VideoRequest)
            if field.name not in mapped
        )

    def refuse(self, request: VideoRequest) -> None:
        """Raise InvalidRequestError naming a field set off its default."""
        for name, default in self._defaults:
            if getattr(request, name) != default:
                raise InvalidRequestError(
                    name,
                    f"is not taken by the {self._provider} provider (leave it at {default!r},"
                    " or use a provider that takes it)",
                )


def error_text(body: object) -> str:
    """The message an error body carries in one of its usual fields, or ""."""
    if isinstance(body, dict):
        for key in ("message", "reason", "error", "detail", "msg", "status_msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def status_error(answer: Response, *, method: str, url: str) -> APIStatusError:
    """The library's error for an answer with an error status (>= 300), its body untrusted."""
    text = answer.body.decode("utf-8", "replace")
    body: object = text
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(text)
    message = error_text(body)
    summary = f"{answer.status} from {method} {urlsplit(url).path}"
    if message:
        summary = f"{summary}: {message[:500]}"
    kwargs: dict[str, Any] = {
        "status_code": answer.status,
        "body": body,
        "headers": answer.headers,
        "method": method,
        "url": url,
    }
    if answer.status == 429:
        return RateLimitError(summary, retry_after=parse_retry_after(answer.headers), **kwargs)
    if answer.status >= 500:
        return InternalServerError(summary, **kwargs)
    return _STATUS_ERRORS.get(answer.status, APIStatusError)(summary, **kwargs)
