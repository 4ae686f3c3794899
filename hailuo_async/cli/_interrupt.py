"""Ctrl-C as a clean stop: cancel the work, let every ``async with`` close, then report."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

__all__ = ["run_interruptibly"]


async def run_interruptibly(body: Callable[[], Awaitable[None]]) -> bool:
    """Run ``body`` until it ends or SIGINT/SIGTERM arrives; True if it was interrupted.

    On a signal the body is cancelled, so its context managers (the batch, the journal, the
    client) close in order. The body's own error comes out as itself, not in a group. Where
    signals cannot be caught here (Windows, a thread that is not the main one), Ctrl-C stays a
    KeyboardInterrupt for the caller.
    """
    interrupted = False
    error: Exception | None = None

    async def stop_on_signal(
        scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        nonlocal interrupted
        with contextlib.ExitStack() as stack:
            try:
                signals = stack.enter_context(
                    anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                )
            except (NotImplementedError, ValueError, RuntimeError):
                task_status.started()
                return
            task_status.started()
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async with anyio.create_task_group() as group:
        await group.start(stop_on_signal, group.cancel_scope)
        try:
            await body()
        except Exception as exc:  # re-raised below, outside the task group
            error = exc
        group.cancel_scope.cancel()
    if error is not None:
        raise error
    return interrupted
