"""Where several processes coordinate: the setting a client (or a FastAPI app) is given.

This module only names the database; it never imports a driver. The work is done by
:mod:`hailuo_async.postgres`, imported when a client is given a coordination setting, so a
process with none never loads psycopg nor opens a connection.
"""

from __future__ import annotations

import attrs

from ._checks import Number
from ._dsn import POSTGRES_SCHEMES, is_postgres_url, mask_dsn
from ._exceptions import InvalidRequestError
from ._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT, check_round_trip_timeout, split_url

__all__ = ["POSTGRES_SCHEMES", "Coordination", "coordination_from"]


def _check_dsn(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not is_postgres_url(value):
        raise InvalidRequestError(attribute.name, "must be a postgresql:// URL")


@attrs.frozen
class Coordination:
    """Processes sharing one account's limits and webhooks through PostgreSQL.

    ``dsn`` is a ``postgresql://`` URL; every process given the same database, ``schema``
    and ``account`` shares the request rate, the active-job cap, the 429 pauses and the
    webhooks. ``account`` defaults to a hash of the client's API key (never the key).
    ``lease`` is how long a silent process keeps its active-job places; ``give_up_after``
    how long a database round trip may keep failing before
    :class:`~hailuo_async.postgres.CoordinationError` (raised before the request it guards);
    ``round_trip_timeout`` how long one round trip may go unanswered before its connection
    is taken for dead (a silent network), closed and replaced.
    """

    dsn: str = attrs.field(validator=_check_dsn, repr=mask_dsn)
    account: str | None = attrs.field(default=None, kw_only=True)
    schema: str = attrs.field(default="hailuo", kw_only=True)
    lease: float = attrs.field(default=30.0, kw_only=True, validator=Number(above=True))
    give_up_after: float = attrs.field(default=30.0, kw_only=True, validator=Number())
    round_trip_timeout: float = attrs.field(
        default=DEFAULT_ROUND_TRIP_TIMEOUT, kw_only=True, converter=check_round_trip_timeout
    )


def coordination_from(value: str | Coordination) -> Coordination:
    """The setting ``value`` names: a :class:`Coordination`, or a ``postgresql://`` URL.

    A URL's ``schema`` and ``round_trip_timeout`` query parameters (``...?schema=team_a``)
    set those fields, as for a journal URL.
    """
    if isinstance(value, Coordination):
        return value
    if not is_postgres_url(value):
        raise InvalidRequestError("coordination", "must be a postgresql:// URL or a Coordination")
    dsn, settings = split_url(value)
    return Coordination(dsn, **settings)
