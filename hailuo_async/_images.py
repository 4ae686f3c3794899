"""Turn the caller's image (a URL, a data URI, a path or bytes) into the string the API takes."""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from ._base_errors import InvalidRequestError

__all__ = [
    "IMAGE_REFERENCE_MAX_CHARS",
    "IMAGE_REFERENCE_PATTERN",
    "MAX_IMAGE_BYTES",
    "ImageInput",
    "image_reference",
]

#: The largest local image this library will encode and send.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

#: A plain form of the strings :func:`image_reference` takes, for JSON schemas (the FastAPI
#: request model uses it): an http(s) URL with a host name, or a JPEG, PNG or WebP data URI.
#: Every string that matches is accepted; a few more are accepted too (IP hosts, other image
#: types), which a schema need not advertise.
IMAGE_REFERENCE_PATTERN = (
    r"^(https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?(:[0-9]{1,4})?(/[!-~]*)?"
    r"|data:image/(png|jpeg|webp);base64,([A-Za-z0-9+/]{4})+)$"
)
#: The longest data URI of an image within :data:`MAX_IMAGE_BYTES`.
IMAGE_REFERENCE_MAX_CHARS = len("data:image/jpeg;base64,") + 4 * -(-MAX_IMAGE_BYTES // 3)

_LOCAL_FILE_HINT = "for a local file, pass a pathlib.Path"

ImageInput = str | bytes | os.PathLike[str]

# A media subtype as RFC 6838 allows: a letter or digit first, at most 64 characters.
_DATA_URI = re.compile(r"^data:image/([A-Za-z0-9][A-Za-z0-9.+-]{0,63});base64,(.*)$", re.DOTALL)


def image_reference(value: ImageInput, field: str) -> str:
    """Return ``value`` as an http(s) URL or a ``data:image/...;base64,`` URI, or raise."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _encode(bytes(value), field)
    if isinstance(value, os.PathLike):
        return _encode(_read_image_file(Path(value), field), field)
    if isinstance(value, str):
        if value.startswith("data:"):
            _check_data_uri(value, field)
            return value
        _check_url(value, field)
        return value
    raise InvalidRequestError(
        field,
        f"must be a URL, a data URI, a pathlib.Path or bytes, not {type(value).__name__}",
    )


def _read_image_file(path: Path, field: str) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidRequestError(field, f"cannot read {path}: {exc.strerror}") from exc
    if size > MAX_IMAGE_BYTES:
        raise InvalidRequestError(field, f"{path} is {size} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(field, f"cannot read {path}: {exc.strerror}") from exc


def _encode(data: bytes, field: str) -> str:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(
            field, f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}"
        )
    mime = _sniff_image_type(data)
    if mime is None:
        raise InvalidRequestError(field, "image content is not JPEG, PNG or WebP")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _sniff_image_type(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _check_data_uri(value: str, field: str) -> None:
    match = _DATA_URI.match(value)
    if match is None:
        raise InvalidRequestError(
            field, "a data URI must look like data:image/<type>;base64,<data>"
        )
    payload = match.group(2)
    if not payload:
        raise InvalidRequestError(field, "the data URI holds no data")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(field, "the data URI does not hold valid base64") from exc
    if len(decoded) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(
            field, f"image is {len(decoded)} bytes; the limit is {MAX_IMAGE_BYTES}"
        )


def _check_url(value: str, field: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it checks it: a port past 65535 raises
    except ValueError as exc:
        raise InvalidRequestError(field, "is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            field,
            "must be an http(s) URL with a host or a data:image/...;base64, URI "
            f"({_LOCAL_FILE_HINT}, not a string)",
        )
    if any(ch.isspace() for ch in value):
        raise InvalidRequestError(field, "a URL must not contain white space")
