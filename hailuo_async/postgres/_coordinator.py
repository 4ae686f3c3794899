"""One client's part in a coordinated deployment: shared limits and webhooks, wired in.

:class:`PostgresCoordinator` opens a :class:`SharedAccountLimits` and a
:class:`PostgresPushBus` for one :class:`~hailuo_async.HailuoClient` and gives it a
:class:`~hailuo_async.extend.SharedState` whose limiter and active-job limit are the shared ones
and whose push registry is this process's own (its watchers, in memory).

A webhook crosses processes in two steps. The process that receives it publishes the task
id and the status it claims (one ``NOTIFY``) and, should it watch the task itself, confirms
it as usual. Every other process hears the notice; only one that watches the task confirms
it, with its own task-result GET. So a webhook costs one GET per process that watches its
task (normally exactly one) and none at all when nobody does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from .._coordination import Coordination
from .._exceptions import HailuoError
from .._limits import Limits
from .._models import TaskResult
from .._push import InMemoryPushRegistry, WebhookEvent
from .._retry import RetryPolicy
from .._state import SharedState
from ._common import Background, CoordinationError
from ._limits import SharedAccountLimits
from ._push import PostgresPushBus, PushNotice

__all__ = ["PostgresCoordinator"]

logger = logging.getLogger("hailuo_async.postgres")

Confirm = Callable[[WebhookEvent], Awaitable[object]]
GetTask = Callable[[str], Awaitable[TaskResult]]


class PostgresCoordinator:
    """Shared limits and a push bus for one client; open it for as long as the client is.

    ``confirm`` takes an (unconfirmed) event and confirms it with one GET when a watcher of
    this process waits for it (``client``'s own confirmation, which never publishes);
    ``get_task`` polls one id, for the watched ids after the bus lost notices.
    """

    def __init__(
        self,
        coordination: Coordination,
        *,
        api_key: str,
        limits: Limits,
        retry: RetryPolicy,
        confirm: Confirm,
        get_task: GetTask,
    ) -> None:
        rpm = limits.requests_per_minute
        self.coordination = coordination
        self.limits = SharedAccountLimits(
            coordination.dsn,
            account=coordination.account,
            api_key=api_key,
            schema=coordination.schema,
            # Limits counts requests per rate_window; the shared limits per real minute.
            requests_per_minute=None if rpm is None else rpm * 60.0 / limits.rate_window,
            rate_window=limits.rate_window,
            max_active_jobs=limits.max_active_jobs,
            max_in_flight=limits.max_in_flight,
            lease=coordination.lease,
            give_up_after=coordination.give_up_after,
            round_trip_timeout=coordination.round_trip_timeout,
            initial_pause=retry.initial_delay,
            max_pause=retry.max_retry_after,
        )
        self.registry = InMemoryPushRegistry()
        self.state = SharedState(
            limiter=self.limits.requests, active_jobs=self.limits.active_jobs, push=self.registry
        )
        self._api_key = api_key
        self._confirm = confirm
        self._get_task = get_task
        self._background = Background()
        self._bus: PostgresPushBus | None = None
        self.gap_polls = 0
        """Task-result GETs made because the bus may have lost notices."""

    def __repr__(self) -> str:
        return f"<PostgresCoordinator {self.coordination!r} account={self.limits.account!r}>"

    @property
    def is_open(self) -> bool:
        """True between :meth:`__aenter__` and :meth:`__aexit__`."""
        return self._bus is not None

    @property
    def bus(self) -> PostgresPushBus:
        """The open push bus (for operators and tests: its counters)."""
        if self._bus is None:
            raise CoordinationError("the coordination is used outside the client's 'async with'")
        return self._bus

    async def __aenter__(self) -> PostgresCoordinator:
        await self.limits.__aenter__()
        try:
            bus = PostgresPushBus(
                self.coordination.dsn,
                account=self.limits.account,
                give_up_after=self.coordination.give_up_after,
                round_trip_timeout=self.coordination.round_trip_timeout,
                on_notice=self._on_notice,
                on_gap=self._on_gap,
            )
            await bus.__aenter__()
            try:
                await self._background.open()
            except BaseException:
                await bus.__aexit__(None, None, None)
                raise
        except BaseException:
            await self.limits.__aexit__(None, None, None)
            raise
        self._bus = bus
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        bus, self._bus = self._bus, None
        try:
            await self._background.close()
            if bus is not None:
                await bus.__aexit__(exc_type, exc, tb)
        finally:
            await self.limits.__aexit__(exc_type, exc, tb)

    async def publish(self, event: WebhookEvent) -> None:
        """Tell the other processes of the account about a webhook event (one ``NOTIFY``).

        Events that claim no end are not sent. A database that stays unreachable is
        logged, not raised: the watchers elsewhere find the end by their backstop polls.
        """
        try:
            await self.bus.publish(event)
        except CoordinationError as exc:
            logger.warning("webhook event for task %s not shared: %s", event.task_id, exc)

    async def _on_notice(self, notice: PushNotice) -> None:
        # Only ids this process watches cost a GET; confirmations run side by side, so one
        # slow GET does not hold up the notices behind it.
        if self.registry.is_wanted(notice.task_id):
            self._background.start_soon(self._confirm_logged, notice.as_event())

    async def _confirm_logged(self, event: WebhookEvent) -> None:
        try:
            await self._confirm(event)
        except Exception:  # one bad confirmation must not end the others
            logger.exception("confirming a shared webhook event for task %s failed", event.task_id)

    async def _on_gap(self) -> None:
        # Notices sent while the bus was away are lost: poll each watched id once now.
        for task_id in self.registry.wanted_ids():
            self._background.start_soon(self._poll_once, task_id)

    async def _poll_once(self, task_id: str) -> None:
        self.gap_polls += 1
        try:
            result = await self._get_task(task_id)
        except HailuoError as exc:
            logger.warning("polling task %s after a push-bus gap failed: %s", task_id, exc)
            return
        if result.is_done:
            self.registry.deliver(result)
