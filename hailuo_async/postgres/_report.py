"""What the accounts of a coordination schema stand at, read for people (``hailuo status``).

One read-only round trip; nothing is created: a schema no coordinated process used yet
has no account to show.
"""

from __future__ import annotations

from typing import Any

import attrs
import psycopg

from ._common import CoordinationError, check_schema
from ._schema import in_schema

__all__ = ["AccountState", "read_account_states"]

_READ = """
SELECT l.account, l.rate, l.rate_adaptive, l.active_cap, l.active_adaptive,
    coalesce(sum(h.active) FILTER (WHERE h.expires_at > clock_timestamp()), 0),
    count(h.holder) FILTER (WHERE h.expires_at > clock_timestamp()),
    CASE WHEN greatest(l.submit_paused_until, l.poll_paused_until) > clock_timestamp()
        THEN extract(epoch FROM
            greatest(l.submit_paused_until, l.poll_paused_until) - clock_timestamp())
        ELSE 0 END,
    l.rate_limited
FROM {s}.account_limits AS l LEFT JOIN {s}.account_holders AS h ON h.account = l.account
GROUP BY l.account ORDER BY l.account
"""


@attrs.frozen(kw_only=True)
class AccountState:
    """One account's shared limits as the database holds them now."""

    account: str
    """The account's name (a hash of its key unless named)."""
    rate: float | None
    """Requests per rate window (a minute, unless time-scaled); None while not known yet."""
    rate_learnt: bool
    """True when the rate is discovered from 429s, False when it was given."""
    active_cap: int
    """The cap on active jobs of all its processes together."""
    cap_learnt: bool
    """True when the cap is discovered from 429s, False when it was given."""
    active: int
    """Active jobs held by its live processes."""
    processes: int
    """Processes holding a live lease on its limits."""
    paused_for: float
    """Seconds left of a 429 pause (0 when none)."""
    rate_limited: int
    """429s its processes met."""


async def read_account_states(dsn: str, *, schema: str = "hailuo") -> list[AccountState]:
    """Every account coordinated in ``schema``: its rate, active jobs and pause, now."""
    check_schema(schema)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
            found = await connection.execute(
                "SELECT to_regclass(%s)", (f'"{schema}".account_limits',)
            )
            row = await found.fetchone()
            if row is None or row[0] is None:
                return []
            cursor = await connection.execute(in_schema(schema, _READ))
            rows = await cursor.fetchall()
    except psycopg.Error as exc:
        raise CoordinationError(f"reading the shared limits: {exc}") from exc
    return [_state(row) for row in rows]


def _state(row: tuple[Any, ...]) -> AccountState:
    account, rate, rate_adaptive, cap, cap_adaptive, active, processes, paused, limited = row
    return AccountState(
        account=str(account),
        rate=None if rate is None else float(rate),
        rate_learnt=bool(rate_adaptive),
        active_cap=int(cap),
        cap_learnt=bool(cap_adaptive),
        active=int(active),
        processes=int(processes),
        paused_for=float(paused),
        rate_limited=int(limited),
    )
