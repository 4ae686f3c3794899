"""One way to name a journal: a file path (SQLite) or a ``postgresql://`` URL."""

from __future__ import annotations

import os

from .._dsn import check_not_a_dsn, is_postgres_url
from .._exceptions import InvalidRequestError
from .._pg_liveness import split_url
from ._postgres import PostgresJobStore
from ._sqlite import SQLiteJobStore
from ._store import SharedJobStore

__all__ = ["is_shared_journal", "store_for"]


def store_for(
    target: str | os.PathLike[str], *, batch: str = "default"
) -> SQLiteJobStore | PostgresJobStore:
    """The store that ``target`` names, not opened yet: ``async with store_for(...) as store``.

    A ``postgresql://`` (or ``postgres://``) URL is a :class:`PostgresJobStore`; its
    ``schema`` query parameter (``...?schema=team_a``, default ``hailuo``) names the schema
    that holds the tables, and ``round_trip_timeout`` (seconds) bounds each round trip.
    A string that starts like another URL (``sqlite:///``, a mistyped ``postgresql:/``) or
    like a libpq ``key=value`` string is refused (:class:`InvalidRequestError`, the value not
    quoted); anything else is the path of a :class:`SQLiteJobStore` file.
    """
    if is_postgres_url(target):
        dsn, settings = split_url(target)
        return PostgresJobStore(dsn, batch=batch, **settings)
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target):
        raise InvalidRequestError("journal", "must be a file path or a postgresql:// URL")
    if isinstance(target, str):
        check_not_a_dsn(target, field="journal")
    return SQLiteJobStore(target, batch=batch)


def is_shared_journal(journal: object) -> bool:
    """True for a journal several workers share: a :class:`SharedJobStore` or a PostgreSQL URL."""
    if isinstance(journal, SharedJobStore):
        return True
    return is_postgres_url(journal)
