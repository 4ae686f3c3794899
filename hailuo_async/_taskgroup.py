"""The task group an async context manager owns: opened on entry, cancelled and awaited on exit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup

__all__ = ["OwnedTaskGroup"]


class OwnedTaskGroup:
    """A task group (and the resources opened before it) kept open between enter and exit.

    ``open`` runs ``setup`` on an exit stack (to open what the tasks need), then opens the
    task group; ``close`` cancels the tasks, waits for them, and closes the rest in reverse
    order. The owner's own exception is not handed to the task group on exit: it would come
    back wrapped in an ExceptionGroup; it propagates as is once everything is closed.
    """

    def __init__(self) -> None:
        self._stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._stack is not None

    @property
    def task_group(self) -> TaskGroup:
        """The open task group (a RuntimeError before :meth:`open`)."""
        if self._task_group is None:
            raise RuntimeError("the task group is not open")
        return self._task_group

    async def open(
        self, setup: Callable[[AsyncExitStack], Awaitable[None]] | None = None
    ) -> TaskGroup:
        """Run ``setup``, open the task group, and keep both open until :meth:`close`."""
        async with AsyncExitStack() as stack:
            if setup is not None:
                await setup(stack)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._task_group = task_group
            self._stack = stack.pop_all()
        return task_group

    async def close(self) -> None:
        """Cancel the tasks, wait for them, close what ``setup`` opened (once)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
