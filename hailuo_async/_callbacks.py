"""Calling the callbacks a caller hands in, written sync or async as they like.

A callback's own error never costs a job: :func:`guarded_call` logs it with the task id and
goes on. Stopping instead would mean abandoning paid jobs mid-flight (or waiting for every
running one before raising), for what is only an observer of the work; the log names the
task, so nothing is hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

__all__ = ["call_back", "guarded_call"]

logger = logging.getLogger("hailuo_async")


async def call_back(callback: Callable[..., Awaitable[None] | None], *args: object) -> None:
    """Call ``callback(*args)`` and await what it returns, if anything."""
    outcome = callback(*args)
    if outcome is not None:
        await outcome


async def guarded_call(
    callback: Callable[..., Awaitable[None] | None], *args: object, task_id: str
) -> None:
    """Call a caller's callback; an exception it raises is logged with ``task_id``, not raised."""
    try:
        await call_back(callback, *args)
    except Exception:  # the caller's code may raise anything; the jobs must go on
        name = getattr(callback, "__qualname__", repr(callback))
        logger.exception("callback %s raised for task %s; the work goes on", name, task_id)
