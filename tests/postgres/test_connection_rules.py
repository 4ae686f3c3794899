"""The one connection layer's rules: libpq options, lost connections, the reconnect policy."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from hailuo_async.postgres._connection import (
    RECONNECT,
    ReconnectPolicy,
    is_lost,
    libpq_options,
    refused_for_good,
)

_URL = "postgresql://u@db.example/app"


def test_options_add_keepalives_unless_the_url_sets_them() -> None:
    """Keepalives and tcp_user_timeout are set; a value the URL gives wins."""
    options = libpq_options(f"{_URL}?keepalives_idle=60", connect_timeout=4.4)
    assert (options["keepalives"], options["tcp_user_timeout"]) == ("1", "30000")
    assert (options["keepalives_idle"], options["connect_timeout"]) == ("60", 4)


def test_application_name_default_url_and_forced() -> None:
    """The URL's name is kept (journal); a given name replaces it (coordination)."""
    assert libpq_options(_URL, connect_timeout=10)["application_name"] == "hailuo-async"
    named = f"{_URL}?application_name=mine"
    assert libpq_options(named, connect_timeout=10)["application_name"] == "mine"
    forced = libpq_options(named, connect_timeout=10, application_name="hailuo-limits-x")
    assert forced["application_name"] == "hailuo-limits-x"


def test_a_url_libpq_cannot_read_raises_the_drivers_error() -> None:
    """Each caller turns it into its own error, without the driver's words."""
    with pytest.raises(psycopg.ProgrammingError):
        libpq_options("host=db port", connect_timeout=10)


def test_lost_connections_are_told_from_other_errors() -> None:
    """Socket errors, no SQLSTATE and class 08 are lost; a constraint violation is not."""
    assert is_lost(OSError("reset"))
    assert is_lost(TimeoutError())
    assert is_lost(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert not is_lost(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_lost(ValueError("not a database error"))


def test_a_refusal_is_for_good_unless_the_server_is_not_ready() -> None:
    """A FATAL answer ends the attempt, but a server starting up is waited out."""
    assert refused_for_good(psycopg.OperationalError('FATAL:  role "x" does not exist'))
    assert not refused_for_good(
        psycopg.OperationalError("FATAL:  the database system is starting up")
    )
    assert not refused_for_good(psycopg.OperationalError("connection refused"))


def test_the_pauses_double_up_to_the_cap() -> None:
    """0.05 s, then doubling, capped at 1 s."""
    assert list(itertools.islice(RECONNECT.delays(3600), 7)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_no_pause_past_the_bound() -> None:
    """A bound shorter than the first pause allows none: the caller raises at once."""
    assert list(RECONNECT.delays(0)) == []
    assert list(ReconnectPolicy(first_delay=5.0).delays(1.0)) == []
