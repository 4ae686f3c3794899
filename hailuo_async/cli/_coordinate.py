"""``--coordination`` / ``--no-coordination``: where processes of one account share its limits.

A worker of a shared (``postgresql://``) batch coordinates its account's limits through the
journal's own database by default: N workers then keep one ``--rpm`` and one
``--max-active`` between them instead of spending the budget N times over. The limits'
tables (``account_limits``, ``account_holders``, ``limits_meta``) never clash with the
journal's (``hailuo_jobs``, ``schema_version``), so they share its schema too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import click

from .._coordination import Coordination, coordination_from
from .._dsn import is_postgres_url
from ._errors import InputError
from ._work import is_shared

__all__ = ["coordination_for", "coordination_options"]

_F = TypeVar("_F", bound=Callable[..., object])


def coordination_options(command: _F) -> _F:
    """Add --coordination URL and --no-coordination to a command."""
    command = click.option(
        "--no-coordination",
        is_flag=True,
        help="Keep --rpm and --max-active to this process, even with a postgresql:// journal.",
    )(command)
    return click.option(
        "--coordination",
        metavar="URL",
        help="Share the account's --rpm, --max-active and 429 pauses with every process "
        "coordinated through this postgresql:// database (?schema=NAME, default hailuo). "
        "Default: the journal's, when it is a postgresql:// URL.",
    )(command)


def coordination_for(
    journal: Path | str | None,
    *,
    url: str | None,
    off: bool,
    simulate: bool,
    lease: float | None = None,
) -> Coordination | None:
    """Where this command's client coordinates its limits; None for limits of its own.

    Raises InputError (exit 2, nothing sent) for a setting that cannot work. Under
    ``--simulate`` each process runs a fake service of its own, whose limits are its own:
    coordinating them across processes means nothing, so it is off, and asking for it is
    refused.
    """
    if url is not None and off:
        raise InputError("give --coordination URL or --no-coordination, not both")
    if url is not None and not is_postgres_url(url):
        raise InputError("--coordination must be a postgresql:// URL")
    if url is not None and simulate:
        raise InputError(
            "--coordination cannot be used with --simulate: each process runs its own fake "
            "service, with limits of its own. To try shared limits, run one `hailuo "
            "fake-server --requests-per-minute N --max-active-tasks N` and point --base-url "
            "at it instead"
        )
    if off or simulate:
        return None
    if url is None:
        if not is_shared(journal):
            return None
        url = journal
    coordination = coordination_from(url)
    if lease is not None:
        # A dead worker's active-job places are freed as soon as its jobs are taken over.
        coordination = attrs.evolve(coordination, lease=lease)
    return coordination
