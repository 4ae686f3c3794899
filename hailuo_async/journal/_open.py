"""One way to name a journal: a file path (SQLite) or a ``postgresql://`` URL."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._exceptions import InvalidRequestError
from ._postgres import POSTGRES_SCHEMES, PostgresJobStore
from ._sqlite import SQLiteJobStore

__all__ = ["is_shared_journal", "store_for"]


def store_for(
    target: str | os.PathLike[str], *, batch: str = "default"
) -> SQLiteJobStore | PostgresJobStore:
    """The store that ``target`` names, not opened yet: ``async with store_for(...) as store``.

    A ``postgresql://`` (or ``postgres://``) URL is a :class:`PostgresJobStore`; its
    ``schema`` query parameter (``...?schema=team_a``, default ``hailuo``) names the schema
    that holds the tables. Anything else is the path of a :class:`SQLiteJobStore` file.
    """
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        parts = urlsplit(target)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for name, value in query if name == "schema"]
        dsn = urlunsplit(
            parts._replace(query=urlencode([(n, v) for n, v in query if n != "schema"]))
        )
        if not schemas:
            return PostgresJobStore(dsn, batch=batch)
        return PostgresJobStore(dsn, batch=batch, schema=schemas[-1])
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target):
        raise InvalidRequestError("journal", "must be a file path or a postgresql:// URL")
    return SQLiteJobStore(target, batch=batch)


def is_shared_journal(journal: object) -> bool:
    """True for a journal several workers share: a PostgreSQL store or URL."""
    if isinstance(journal, PostgresJobStore):
        return True
    return isinstance(journal, str) and journal.startswith(POSTGRES_SCHEMES)
