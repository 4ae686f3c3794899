"""Injected failures: which one a request gets, and how a dropped connection is made."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
from typing import Any

from aiohttp import web

from ._config import Faults

__all__ = [
    "DROPPED",
    "FAULT_KINDS",
    "draw_fault",
    "drop_connection",
    "malformed_json",
    "server_error",
]

DROPPED = 499
"""The status of the stand-in response returned after a reset; it never reaches the wire."""

FAULT_KINDS = (
    "server_error",
    "rate_limit",
    "reset",
    "slow",
    "malformed_json",
    "accepted_but_lost",
)

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
_JSON_ERRORS = {
    500: ("INTERNAL", "internal error"),
    502: ("BAD_GATEWAY", "upstream connect error or disconnect/reset before headers"),
    503: ("SERVICE_UNAVAILABLE", "the service is overloaded, please retry later"),
    504: ("GATEWAY_TIMEOUT", "upstream request timeout"),
}


def draw_fault(rng: random.Random, faults: Faults, *, submit: bool) -> str | None:
    """Pick at most one fault kind for a request that would otherwise succeed."""
    if faults.total <= 0:
        return None
    point = rng.random()
    for kind in FAULT_KINDS:
        share: float = getattr(faults, kind)
        if point < share:
            # accepted_but_lost only exists for submissions; its share of GETs goes unharmed.
            return None if kind == "accepted_but_lost" and not submit else kind
        point -= share
    return None


def server_error(rng: random.Random) -> web.Response:
    """A 5xx as a gateway emits it: half JSON, half an HTML page from the proxy in front."""
    status = rng.choice(sorted(_REASONS))
    if rng.random() < 0.5:
        title = f"{status} {_REASONS[status]}"
        html = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return web.Response(status=status, text=html, content_type="text/html")
    reason, message = _JSON_ERRORS[status]
    body = {"code": status, "reason": reason, "message": message, "metadata": {}}
    return web.json_response(body, status=status)


def malformed_json(body: dict[str, Any], rng: random.Random) -> web.Response:
    """A 200 whose JSON body is cut short, as when a proxy truncates a response."""
    text = json.dumps(body)
    # Cutting before the final brace always leaves the document unterminated.
    cut = rng.randrange(1, len(text) - 1)
    return web.Response(status=200, text=text[:cut], content_type="application/json")


def drop_connection(request: web.BaseRequest) -> web.Response:
    """Reset the client's connection (RST, no response) and return a response aiohttp discards.

    SO_LINGER 0 makes close() send a RST, so the client fails at once with a reset
    instead of waiting for a response that never comes.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp writes this to the dead transport, sees ConnectionResetError and moves on.
    return web.Response(status=DROPPED)
