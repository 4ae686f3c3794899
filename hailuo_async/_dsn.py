"""Database addresses: which values name PostgreSQL, and how one is shown without its secrets.

A journal or coordination setting is a file path (SQLite) or a ``postgresql://`` (or
``postgres://``) URL. Anything else that looks like a database address (another scheme, a
mistyped ``postgresql:/host``, a libpq ``host=... password=...`` string) is refused rather
than taken as a file name: such a file would be made in the working directory, and its name
would hold the password.

:func:`mask_dsn` is the one masker of database secrets: every place that shows or logs an
address (or an error text that may quote one) passes it through. It masks every form libpq
takes a password in: the URL's ``user:password@``, a ``?password=`` (or ``sslpassword``)
query parameter, and a ``password=...`` keyword of a connection string, quoted or not. It may
hide more than the password, never less. This module imports no driver.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from ._base_errors import InvalidRequestError

__all__ = [
    "NEEDS_PSYCOPG",
    "POSTGRES_SCHEMES",
    "check_not_a_dsn",
    "is_postgres_url",
    "mask_dsn",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""The URL schemes of a PostgreSQL journal or coordination database."""

NEEDS_PSYCOPG = (
    "needs psycopg 3: pip install -e '.[postgres]' in the checkout (or 'psycopg[binary]>=3.2')"
)
"""What a PostgreSQL feature says when the ``postgres`` extra is not installed."""

# `user:secret@` in a URL: from the first colon after the user name to the last `@` before
# any whitespace (a password with an unescaped `/`, `?` or `@` still ends up hidden).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):[^\s]*@")
# `?password=...` (or `&...`) as a URL's query parameter: up to the next parameter.
_SECRET_PARAMETER = re.compile(r"(?P<head>[?&](?:ssl)?password=)[^&#\s]*", re.IGNORECASE)
# `password=...` as a connection string's keyword; a quoted value may hold spaces (an
# unterminated quote hides the rest).
_SECRET_KEYWORD = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_?&])(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*(?:'|$)|\S*)",
    re.IGNORECASE,
)
# What starts like a URL: a scheme of two or more characters (so `C:\path` is still a path).
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
# What starts like a libpq connection string: `keyword=`.
_KEYWORDS_LIKE = re.compile(r"\s*[A-Za-z_]+\s*=")


def mask_dsn(text: str) -> str:
    """``text`` with every database password in it shown as ``***``.

    ``text`` is an address (``postgresql://user:secret@host/db?password=...``, ``host=db
    password=secret``) or any message that may quote one.
    """
    masked = _USERINFO.sub(r"\g<head>:***@", text)
    masked = _SECRET_PARAMETER.sub(r"\g<head>***", masked)
    return _SECRET_KEYWORD.sub(r"\g<head>***", masked)


def is_postgres_url(value: object) -> TypeGuard[str]:
    """True for a ``postgresql://`` or ``postgres://`` URL."""
    return isinstance(value, str) and value.startswith(POSTGRES_SCHEMES)


def check_not_a_dsn(value: str, *, field: str) -> None:
    """Refuse a value meant as a file path that looks like a database address instead.

    Raises :class:`InvalidRequestError` for anything that starts like a URL (``scheme:``)
    or a libpq connection string (``keyword=``) but is not a ``postgresql://`` URL. The
    value is never quoted in the message: it may hold a password. A file whose name looks
    so can still be named: ``./name``.
    """
    if is_postgres_url(value):
        return
    if _URL_LIKE.match(value):
        raise InvalidRequestError(
            field,
            "looks like a URL but is not a postgresql:// (or postgres://) one; a SQLite "
            "journal is a file path (write ./NAME for a file whose name starts like a URL)",
        )
    if _KEYWORDS_LIKE.match(value):
        raise InvalidRequestError(
            field,
            "looks like a libpq connection string (key=value); give the database as a "
            "postgresql:// URL instead (write ./NAME for a file whose name has an '=')",
        )
