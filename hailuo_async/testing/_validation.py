"""The submit endpoint's request rules, written from API.md and independent of the client."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import urlsplit

import attrs

from .._decoding import json_type

__all__ = [
    "RequestError",
    "SubmitRequest",
    "canonical_body",
    "check_bool",
    "check_image",
    "check_url",
    "invalid",
    "load_object",
    "parse_submit_body",
]

PROMPT_MAX_CHARS = 2000
DURATIONS = (6, 10)
RESOLUTIONS = ("768P", "1080P")
_KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "image",
        "end_image",
        "duration",
        "resolution",
        "enable_prompt_expansion",
        "fast_pretreatment",
        "extra",
    }
)
_DATA_URI = re.compile(
    r"data:image/([a-z0-9][a-z0-9.+-]{0,63});base64,(.*)", re.DOTALL | re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s")
# Field names and URLs from the request end up in error messages: keep those readable.
_ECHO_LIMIT = 80


class RequestError(Exception):
    """A request the gateway refuses, with the field it names."""

    def __init__(
        self, status: int, field: str, message: str, reason: str = "INVALID_ARGUMENT"
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message
        self.reason = reason

    def body(self) -> dict[str, Any]:
        """The gateway-style JSON error body."""
        return {
            "code": self.status,
            "reason": self.reason,
            "message": f"{self.field}: {self.message}",
            "metadata": {"field": self.field},
        }


@attrs.frozen
class SubmitRequest:
    """A validated submission, with the documented defaults filled in.

    Both dialects fill it in: a MiniMax body's ``first_frame_image``, ``last_frame_image``
    and ``prompt_optimizer`` land in ``image``, ``end_image`` and
    ``enable_prompt_expansion``; the fields after ``canonical`` are MiniMax's alone.
    """

    prompt: str
    duration: int
    resolution: str
    enable_prompt_expansion: bool
    fast_pretreatment: bool
    image: str | None
    end_image: str | None
    extra: dict[str, Any] | None
    """The raw `extra` object, kept for webhook delivery."""
    canonical: str
    """The body re-serialised with sorted keys, to spot identical submissions."""
    model: str = "MiniMax-Hailuo-02"
    callback_url: str | None = None
    """Where MiniMax's callbacks go (after the challenge)."""
    aigc_watermark: bool = False


def _echo(value: str) -> str:
    return value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "..."


def invalid(field: str, message: str) -> RequestError:
    """A 400 naming the field."""
    return RequestError(400, field, message)


def check_image(field: str, value: object, max_image_bytes: int) -> str:
    """An image given as an http(s) URL or a base64 data URI, or a RequestError."""
    if not isinstance(value, str):
        raise invalid(field, f"must be a string (URL or data URI), not {json_type(value)}")
    if value[:5].lower() == "data:":
        match = _DATA_URI.fullmatch(value)
        if match is None:
            raise invalid(field, "data URI must look like data:image/<type>;base64,<data>")
        payload = match.group(2)
        # A cheap bound before decoding: 4 base64 characters carry 3 bytes.
        if len(payload) // 4 * 3 > max_image_bytes + 3:
            raise invalid(field, f"image is larger than {max_image_bytes} bytes")
        try:
            decoded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(field, "data URI payload is not valid base64") from None
        if not decoded:
            raise invalid(field, "data URI payload is empty")
        if len(decoded) > max_image_bytes:
            raise invalid(field, f"image is larger than {max_image_bytes} bytes")
        return value
    if _WHITESPACE.search(value):
        raise invalid(field, "URL must not contain whitespace")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        raise invalid(field, f"not a valid URL: {_echo(value)}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise invalid(field, "must be an http(s) URL or a data:image/...;base64 URI")
    if not host:
        raise invalid(field, "URL has no host")
    return value


def check_bool(field: str, value: object) -> bool:
    """A JSON boolean, or a RequestError."""
    if not isinstance(value, bool):
        raise invalid(field, f"must be a boolean, not {json_type(value)}")
    return value


def _check_extra(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("extra", f"must be an object, not {json_type(value)}")
    webhook = value.get("webhook")
    if "webhook" in value:
        if not isinstance(webhook, dict):
            raise invalid("extra.webhook", f"must be an object, not {json_type(webhook)}")
        check_url("extra.webhook.url", webhook.get("url"))
    return value


def check_url(field: str, url: object) -> str:
    """An http(s) URL with a host (a webhook's or a callback's), or a RequestError."""
    if not isinstance(url, str):
        raise invalid(field, "must be a string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise invalid(field, f"not a valid URL: {_echo(url)}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise invalid(field, "must be an http(s) URL with a host")
    return url


def load_object(raw: bytes, known_fields: frozenset[str] = _KNOWN_FIELDS) -> dict[str, Any]:
    """The body as a JSON object whose keys are all known, or a RequestError naming the fault."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise invalid("body", "JSON is nested too deeply") from None
    except ValueError:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        raise invalid("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("body", f"must be a JSON object, not {json_type(data)}")
    for key in data:
        if key not in known_fields:
            raise invalid(_echo(key), "unknown field")
    return data


def _check_prompt(data: dict[str, Any]) -> str:
    if "prompt" not in data:
        raise invalid("prompt", "is required")
    prompt = data["prompt"]
    if not isinstance(prompt, str):
        raise invalid("prompt", f"must be a string, not {json_type(prompt)}")
    if not 1 <= len(prompt) <= PROMPT_MAX_CHARS:
        raise invalid("prompt", f"must be 1 to {PROMPT_MAX_CHARS} characters, got {len(prompt)}")
    return prompt


def _check_format(data: dict[str, Any]) -> tuple[int, str]:
    duration = data.get("duration", 6)
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise invalid("duration", f"must be an integer, not {json_type(duration)}")
    if duration not in DURATIONS:
        raise invalid("duration", "must be 6 or 10")
    resolution = data.get("resolution", "768P")
    if not isinstance(resolution, str):
        raise invalid("resolution", f"must be a string, not {json_type(resolution)}")
    if resolution not in RESOLUTIONS:
        raise invalid("resolution", 'must be "768P" or "1080P"')
    if duration == 10 and resolution != "768P":
        raise invalid("resolution", "10-second videos are only available at 768P")
    return duration, resolution


def parse_submit_body(raw: bytes, *, max_image_bytes: int) -> SubmitRequest:
    """Decode and validate a submit body, or raise RequestError naming the field."""
    data = load_object(raw)
    prompt = _check_prompt(data)
    duration, resolution = _check_format(data)
    image = check_image("image", data["image"], max_image_bytes) if "image" in data else None
    end_image = (
        check_image("end_image", data["end_image"], max_image_bytes)
        if "end_image" in data
        else None
    )
    expansion = check_bool("enable_prompt_expansion", data.get("enable_prompt_expansion", True))
    fast = check_bool("fast_pretreatment", data.get("fast_pretreatment", False))
    extra = _check_extra(data["extra"]) if "extra" in data else None

    return SubmitRequest(
        prompt=prompt,
        duration=duration,
        resolution=resolution,
        enable_prompt_expansion=expansion,
        fast_pretreatment=fast,
        image=image,
        end_image=end_image,
        extra=extra,
        canonical=canonical_body(data, raw),
    )


def canonical_body(data: dict[str, Any], raw: bytes) -> str:
    """The body re-serialised with sorted keys, to spot identical submissions."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"))
    except (RecursionError, ValueError):
        # `extra` is free-form and may nest deeper than the encoder likes.
        return raw.decode("utf-8", "replace")
