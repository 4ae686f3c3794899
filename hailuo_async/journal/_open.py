"""One way to name a journal: a file path (SQLite) or a ``postgresql://`` URL."""

from __future__ import annotations

import os

from .._exceptions import InvalidRequestError
from ._postgres import POSTGRES_SCHEMES, PostgresJobStore
from ._sqlite import SQLiteJobStore

__all__ = ["store_for"]


def store_for(
    target: str | os.PathLike[str], *, batch: str = "default"
) -> SQLiteJobStore | PostgresJobStore:
    """The store that ``target`` names, not opened yet: ``async with store_for(...) as store``.

    A ``postgresql://`` (or ``postgres://``) URL is a :class:`PostgresJobStore` in its default
    schema; anything else is the path of a :class:`SQLiteJobStore` file.
    """
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        return PostgresJobStore(target, batch=batch)
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target):
        raise InvalidRequestError("journal", "must be a file path or a postgresql:// URL")
    return SQLiteJobStore(target, batch=batch)
