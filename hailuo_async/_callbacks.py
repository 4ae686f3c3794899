"""Calling the callbacks a caller hands in, written sync or async as they like."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["call_back"]


async def call_back(callback: Callable[..., Awaitable[None] | None], *args: object) -> None:
    """Call ``callback(*args)`` and await what it returns, if anything."""
    outcome = callback(*args)
    if outcome is not None:
        await outcome
