"""How a PostgreSQL connection notices a silent network: libpq's TCP settings, and a bound.

A peer that stops answering without closing (a cable pulled, a firewall or NAT dropping
the connection's packets, a host frozen) sends no reset: a round trip waits until the
kernel gives up, many minutes later. Two guards, for the journal and the shared limits
alike:

- libpq's keepalives and ``tcp_user_timeout`` (set unless the URL sets them, by
  :func:`hailuo_async.postgres._connection.libpq_options`) make the
  kernel drop a connection whose peer has not acknowledged anything for about half a
  minute;
- each round trip is bounded by ``round_trip_timeout`` seconds in the library itself: the
  connection is closed and the work replayed on a new one, as after a restart. That also
  catches a peer whose kernel still answers (a stalled proxy, a stopped server process).

This module imports no driver: it also reads the library's settings out of a URL.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._exceptions import InvalidRequestError

__all__ = [
    "DEFAULT_ROUND_TRIP_TIMEOUT",
    "check_round_trip_timeout",
    "split_url",
]

DEFAULT_ROUND_TRIP_TIMEOUT = 15.0
"""Seconds a round trip may take: well above a slow statement or a lock wait (which the
journal's idle-in-transaction timeout caps at 5 s), well under a worker's default lease."""


def check_round_trip_timeout(value: object) -> float:
    """A positive, finite number of seconds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value > 0 and math.isfinite(value))
    ):
        raise InvalidRequestError("round_trip_timeout", "must be a finite number above 0")
    return float(value)


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """The libpq URL, and the library's own settings its query held.

    ``schema`` (the schema of the tables) and ``round_trip_timeout`` (seconds) are the
    library's, not libpq's: they are taken out of the URL and returned as keyword arguments.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in _OURS}
    dsn = urlunsplit(parts._replace(query=urlencode([(n, v) for n, v in query if n not in _OURS])))
    settings: dict[str, Any] = {}
    if "schema" in ours:
        settings["schema"] = ours["schema"]
    if "round_trip_timeout" in ours:
        try:
            seconds = float(ours["round_trip_timeout"])
        except ValueError:
            seconds = math.nan
        settings["round_trip_timeout"] = check_round_trip_timeout(seconds)
    return dsn, settings


_OURS = ("schema", "round_trip_timeout")
