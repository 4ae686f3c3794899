"""TaskWatcher: one scheduler polls many task ids and yields each result the moment it ends.

The watcher keeps a heap of next-poll deadlines, not a sleeping task per id: one scheduler
task pops the due ids and starts a short poll for each, at most ``max_concurrent_polls`` at a
time. It needs only a way to poll one id (``client.get_task``, which passes through the
shared limiter) and the shared state (learnt durations, the push registry): no HTTP of its
own. The watcher is an async context manager that owns its task group; nothing runs after
the ``async with`` is left.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Literal

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._callbacks import guarded_call
from ._checks import Number
from ._exceptions import (
    AuthenticationError,
    BadRequestError,
    HailuoError,
    InvalidRequestError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnreachableError,
)
from ._models import TaskResult, TaskStatus
from ._polling import PollPolicy, PollSchedule, PollSchedules
from ._retry import RetryPolicy
from ._state import SharedState
from ._task_ids import check_task_id, is_plain_task_id
from ._taskgroup import OwnedTaskGroup

__all__ = ["EventCallback", "EventKind", "PollOne", "TaskEvent", "TaskWatcher", "WatchOutcome"]

EventKind = Literal["status", "progress", "done", "error"]
"""What a TaskEvent reports: a new status, more progress, the end, or an error."""


@attrs.frozen
class TaskEvent:
    """A change seen on a watched task: a new status, more progress, its end, or an error."""

    task_id: str
    kind: EventKind
    result: TaskResult | None = None
    error: HailuoError | None = None


EventCallback = Callable[[TaskEvent], "Awaitable[None] | None"]
"""A caller's callback for watch events, sync or async; its errors are logged, not raised."""
PollOne = Callable[[str], Awaitable[TaskResult]]
"""How a watcher polls one task id (``client.get_task``: retries and limits included)."""
WatchOutcome = tuple[str, "TaskResult | HailuoError"]
"""A task that ended: its id, with its result or the error that ended its watch."""

# Errors after which polling this task again cannot help.
_PERMANENT = (NotFoundError, BadRequestError, InvalidRequestError)
# Errors after which polling any task cannot help.
_FATAL = (AuthenticationError, PermissionDeniedError, ServiceUnreachableError)
# Idle poll workers wait while the next poll is due within this many seconds (or the
# policy's min_interval, if longer); they end otherwise.
_IDLE_HORIZON = 1.0


class _Watched:
    __slots__ = ("failures", "last", "schedule", "started", "unknown_since")

    def __init__(self, schedule: PollSchedule, started: float) -> None:
        self.schedule = schedule
        self.started = started
        self.last: TaskResult | None = None
        self.failures = 0
        # When the answers' status turned to one this library does not know (None: it is not).
        self.unknown_since: float | None = None

    @property
    def pushed(self) -> bool:
        """True when its end comes by webhook and polls are only a slow backstop."""
        return self.schedule.pushed


class TaskWatcher:
    """Watches task ids and yields each one's TaskResult when it ends (see ``client.watch``).

    ``async for result in watcher`` yields terminal results in completion order. It ends when
    no watched task is left, unless the watcher was opened with ``keep_open=True``; then it
    ends after :meth:`finish`. A task that cannot be polled (an unknown id) is dropped, noted
    in :attr:`errors` and reported as an ``"error"`` event; an authentication failure is
    raised from the iteration.

    Tasks added with ``pushed=True`` (their request has a ``webhook_url``) end when
    ``client.handle_webhook`` delivers their confirmed result; they are polled only as a
    backstop, first well after their expected finish, then every ``backstop_interval``
    seconds (default: four times the policy's ``max_interval``).

    A task still running ``max_job_duration`` seconds (the poll policy's) after its
    submission, or answering a status this library does not know for
    ``max_unknown_duration``, ends with :class:`~hailuo_async.JobTimeoutError` in
    :attr:`errors` and an ``"error"`` event; the job itself may go on at the service.

    ``on_event`` is called (or awaited) with each event; an exception it raises is logged
    with the task id and the watch goes on (a callback must never cost a paid job).
    Usually made by ``client.watch``; ``poll`` is how one id is polled, ``state`` the
    shared state it learns durations from and receives pushed results through;
    ``retry_policy`` (the client's) says when a task whose polls keep failing is polled
    again, and when its watch ends.
    """

    def __init__(
        self,
        poll: PollOne,
        state: SharedState,
        task_ids: Iterable[str] = (),
        *,
        poll_policy: PollPolicy,
        retry_policy: RetryPolicy | None = None,
        on_event: EventCallback | None = None,
        keep_open: bool = False,
        max_concurrent_polls: int | None = None,
        backstop_interval: float | None = None,
    ) -> None:
        self._poll_one = poll
        self._state = state
        self._policy = poll_policy
        self._retry = retry_policy or RetryPolicy()
        Number(above=True, optional=True).check("backstop_interval", backstop_interval)
        Number(low=1, whole=True, optional=True).check("max_concurrent_polls", max_concurrent_polls)
        self._backstop = backstop_interval or 4 * self._policy.max_interval
        self._schedules = PollSchedules(
            self._policy, history=state.durations, backstop=self._backstop
        )
        self._on_event = on_event
        self._keep_open = keep_open
        # fast_acquire: the scheduler takes every due poll's slot at once, rather than
        # yielding once per poll (it yields when it sleeps or runs out).
        self._poll_slots = anyio.Semaphore(
            max_concurrent_polls or state.limiter.max_in_flight, fast_acquire=True
        )
        self._poll_workers = 0
        self._watched: dict[str, _Watched] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        # The scheduler's sleep, while it sleeps: a new earliest deadline ends it early. One
        # is made per sleep, and the scheduler looks at the heap again before each one, so a
        # wake-up while it is awake need not be kept.
        self._waker: asyncio.Event | None = None
        # Ended tasks wait here for the reader; unbounded because each is a paid result.
        self._ended: deque[WatchOutcome] = deque()
        self._ended_signal = asyncio.Event()
        self._sink: Callable[[str, TaskResult | HailuoError], None] | None = None
        self._subscribers: list[MemoryObjectSendStream[TaskEvent]] = []
        self._tasks = OwnedTaskGroup()
        self.errors: dict[str, HailuoError] = {}
        self.polls = 0
        self.events_dropped = 0
        for task_id in task_ids:
            self.add(task_id)

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> TaskWatcher:
        task_group = await self._tasks.open()
        task_group.start_soon(self._schedule_polls)
        for task_id in self._watched:  # pushed results reach open watchers only
            self._state.push.register(task_id, self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tasks.is_open:
            for task_id in self._watched:
                self._state.push.unregister(task_id, self)
        for subscriber in self._subscribers:
            subscriber.close()
        await self._tasks.close()

    # -- what is watched -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many watched tasks have not ended yet."""
        return len(self._watched)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._watched

    def latest(self, task_id: str) -> TaskResult | None:
        """The last answer seen for a watched task (None: not polled yet, or not watched)."""
        watched = self._watched.get(task_id)
        return None if watched is None else watched.last

    def add(self, task_id: str, *, submitted_at: float | None = None, pushed: bool = False) -> None:
        """Watch ``task_id`` (again adding one already watched does nothing).

        ``submitted_at`` (a :func:`time.monotonic` time) places the first poll near the
        expected finish; without it the task is polled at once. ``pushed=True`` says a
        webhook will bring its end: it is then polled only as a slow backstop.
        """
        if type(task_id) is not str or not is_plain_task_id(task_id):  # one call for most
            check_task_id(task_id)
        if task_id in self._watched:
            return
        # Only a task whose submission time is known can teach how long jobs take.
        schedule = self._schedules.fresh(timed=submitted_at is not None, pushed=pushed)
        if submitted_at is None:
            # Its age is unknown (it may have ended already): one poll at once either way.
            now = time.monotonic()
            self._watched[task_id] = _Watched(schedule, now)
            self._schedule(task_id, now)
        else:
            self._watched[task_id] = _Watched(schedule, submitted_at)
            self._schedule(task_id, submitted_at + schedule.first_delay())
        if self._tasks.is_open:
            self._state.push.register(task_id, self)

    def hand_ended_to(self, sink: Callable[[str, TaskResult | HailuoError], None]) -> None:
        """Give each task that ends to ``sink`` at once, instead of to :meth:`next_outcome`.

        For an owner with nothing to await per ended task (a batch without journal or
        downloads): no task of its own waiting for them, no wake-up per task. ``sink`` must
        not raise.
        """
        self._sink = sink

    def finish(self) -> None:
        """Take no more ids: the iteration ends once the watched tasks have ended."""
        self._keep_open = False
        self._ended_signal.set()

    def deliver(self, result: TaskResult) -> bool:
        """Take a result pushed from elsewhere (a webhook); True if it ended a watched task.

        The result is trusted as given: ``client.handle_webhook`` confirms it first.
        """
        watched = self._watched.get(result.task_id)
        if watched is None or not result.is_done:
            return False
        event = TaskEvent(result.task_id, "done", result)
        self._broadcast(event)
        if self._on_event is not None and self._tasks.is_open:
            # deliver() cannot wait: the callback runs beside it.
            self._tasks.task_group.start_soon(self._call_on_event, self._on_event, event)
        self._end(result.task_id, result)
        return True

    def events(self, *, max_buffer: int = 1024) -> MemoryObjectReceiveStream[TaskEvent]:
        """A stream of the events from now on; use it as ``with watcher.events() as events:``.

        When the reader lags ``max_buffer`` events behind, new ones are dropped (counted in
        :attr:`events_dropped`) rather than slowing the polls. It ends with the watcher.
        """
        send, receive = anyio.create_memory_object_stream[TaskEvent](max_buffer)
        self._subscribers.append(send)
        return receive

    # -- results ---------------------------------------------------------------------------

    def __aiter__(self) -> TaskWatcher:
        return self

    async def __anext__(self) -> TaskResult:
        while True:
            _, outcome = await self.next_outcome()
            if isinstance(outcome, TaskResult):
                return outcome
            if isinstance(outcome, _FATAL):
                raise outcome

    async def next_outcome(self) -> WatchOutcome:
        """The next task to end, with its result or the error that ended its watch."""
        if not self._tasks.is_open:
            raise RuntimeError("use the watcher inside `async with client.watch(...) as watcher`")
        while not self._ended:
            if not self._watched and not self._keep_open:
                raise StopAsyncIteration
            await self._ended_signal.wait()
            self._ended_signal = asyncio.Event()
        return self._ended.popleft()

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, task_id: str, deadline: float) -> None:
        first = not self._heap or deadline < self._heap[0][0]
        heapq.heappush(self._heap, (deadline, next(self._sequence), task_id))
        if first and self._waker is not None:
            self._waker.set()

    async def _schedule_polls(self) -> None:
        # Due polls go to a pool of workers, started as needed up to the number of poll
        # slots, rather than to a task each: a task's start and end cost more than its poll's
        # own bookkeeping. A slot is taken here and given back once its poll is answered. Idle
        # workers wait for the next due poll while one is due soon, and end otherwise.
        task_group = self._tasks.task_group
        slots = self._poll_slots
        due: deque[tuple[str, _Watched]] = deque()
        # Idle workers' wake-ups (see _poll_worker).
        idle: list[asyncio.Future[bool]] = []
        room = slots.value
        # Not just the next poll interval: with short intervals the workers would be retired
        # and started again between nearly every two polls, which costs more than waiting.
        soon = max(self._policy.min_interval, _IDLE_HORIZON)

        while True:
            if not self._heap:
                if idle:
                    # Kept a while, not retired at once: on short jobs the heap empties
                    # between nearly every two polls, and a worker's restart costs more.
                    await self._sleep_until_woken(soon)
                    if not self._heap:
                        _retire_all(idle)
                    continue
                await self._sleep_until_woken(None)
                continue
            deadline, _, task_id = self._heap[0]
            delay = deadline - time.monotonic()
            if delay > 0:
                if delay > soon:
                    _retire_all(idle)
                await self._sleep_until_woken(delay)
                continue
            # The slot first: a poll that waited for one is checked as its turn comes.
            await slots.acquire()
            _, _, task_id = heapq.heappop(self._heap)
            watched = self._watched.get(task_id)
            if watched is None:
                slots.release()
                continue  # ended (by a push) since it was scheduled
            now = time.monotonic()
            later = watched.schedule.postponed(now - watched.started)
            if later is not None:
                slots.release()
                self._schedule(task_id, now + later)
                continue
            due.append((task_id, watched))
            if not _wake_one(idle, retire=False) and self._poll_workers < room:
                # Every worker is busy: slots bound the polls, so few more.
                self._poll_workers += 1
                task_group.start_soon(self._poll_worker, due, idle)

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        self._waker = waker = asyncio.Event()
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await waker.wait()
        finally:
            self._waker = None

    def _still_watched(self, task_id: str, watched: _Watched) -> bool:
        # False once a pushed result ended the task while its poll was in flight.
        return self._watched.get(task_id) is watched

    async def _poll_worker(
        self, due: deque[tuple[str, _Watched]], idle: list[asyncio.Future[bool]]
    ) -> None:
        """Make the polls handed over in ``due``, in turn; then wait idle for more.

        Idle, a worker waits on a bare future of its own in ``idle``, set to True to retire
        it. Woken for work, it may find it taken by a busy worker: it waits again, as a new
        worker would (starting one costs more than the wait).
        """
        loop = asyncio.get_running_loop()
        slots = self._poll_slots
        while True:
            while due:
                task_id, watched = due.popleft()
                self.polls += 1
                try:
                    result = await self._poll_one(task_id)
                except HailuoError as exc:
                    slots.release()
                    await self._poll_failed(task_id, watched, exc)
                    continue
                except BaseException:
                    slots.release()
                    raise
                slots.release()
                if not self._still_watched(task_id, watched):
                    continue  # a pushed result ended it while this poll was in flight
                then = self._answered(task_id, watched, result)
                if then is not None:
                    await then
            woken: asyncio.Future[bool] = loop.create_future()
            idle.append(woken)  # no await since `due` was found empty: no lost wake-up
            if await woken:
                self._poll_workers -= 1
                return

    async def _poll_failed(self, task_id: str, watched: _Watched, exc: HailuoError) -> None:
        if not self._still_watched(task_id, watched):
            return
        if isinstance(exc, _PERMANENT + _FATAL):
            await self._end_with_error(task_id, watched, watched.last, exc)
            return
        # The client already retried; keep the task and try again later, up to a point:
        # a task whose every answer fails (unreadable, say) must not be watched forever. The
        # task itself may run on, and a journaled batch watches it again when rerun.
        watched.failures += 1
        delay = self._retry.after_failed_poll(
            watched.failures, floor=self._policy.min_interval, cap=self._policy.max_interval
        )
        if delay is None:
            await self._end_with_error(task_id, watched, watched.last, exc)
            return
        self._schedule(task_id, time.monotonic() + delay)

    def _answered(
        self, task_id: str, watched: _Watched, result: TaskResult
    ) -> Awaitable[None] | None:
        """Take a poll's answer; return what is left to await (an event, an error), if any."""
        watched.failures = 0
        previous, watched.last = watched.last, result
        if self._subscribers or self._on_event is not None:  # else no event to make
            change = change_between(previous, result)
            if change is not None:
                return self._emit_then_settle(task_id, watched, change, result)
        return self._settle(task_id, watched, result)

    async def _emit_then_settle(
        self, task_id: str, watched: _Watched, change: EventKind, result: TaskResult
    ) -> None:
        await self._emit(TaskEvent(task_id, change, result))
        if not self._still_watched(task_id, watched):
            return  # a push ended it while the callback ran
        then = self._settle(task_id, watched, result)
        if then is not None:
            await then

    def _settle(
        self, task_id: str, watched: _Watched, result: TaskResult
    ) -> Awaitable[None] | None:
        """End the task or schedule its next poll; return the error's end to await, if any."""
        if result.is_done:
            watched.schedule.ended(time.monotonic() - watched.started, result)
            self._end(task_id, result)
            return None
        now = time.monotonic()
        overdue = self._overdue(task_id, watched, result, now)
        if overdue is not None:
            return self._end_with_error(task_id, watched, result, overdue)
        delay = watched.schedule.next_delay(result, elapsed=now - watched.started)
        # The poll that decides comes when a limit is reached, not a backoff later.
        self._schedule(task_id, now + min(delay, self._until_limit(watched, now)))
        return None

    async def _end_with_error(
        self, task_id: str, watched: _Watched, last: TaskResult | None, error: HailuoError
    ) -> None:
        await self._emit(TaskEvent(task_id, "error", last, error))
        if self._still_watched(task_id, watched):  # the callback may have let a push in
            self._end(task_id, error)

    def _overdue(
        self, task_id: str, watched: _Watched, result: TaskResult, now: float
    ) -> JobTimeoutError | None:
        """The error that ends a running task's watch, once it ran past a limit; else None."""
        policy = self._policy
        if result.status is TaskStatus.UNKNOWN:
            if watched.unknown_since is None:
                watched.unknown_since = now
            limit = policy.max_unknown_duration
            if limit is not None and now - watched.unknown_since >= limit:
                return JobTimeoutError(task_id, result, limit, unknown_status=True)
        else:
            watched.unknown_since = None
        limit = policy.max_job_duration
        if limit is not None and now - watched.started >= limit:
            return JobTimeoutError(task_id, result, limit)
        return None

    def _until_limit(self, watched: _Watched, now: float) -> float:
        """Seconds until the task reaches a limit of the policy (inf when none applies)."""
        policy = self._policy
        left = float("inf")
        if policy.max_job_duration is not None:
            left = watched.started + policy.max_job_duration - now
        if watched.unknown_since is not None and policy.max_unknown_duration is not None:
            left = min(left, watched.unknown_since + policy.max_unknown_duration - now)
        return max(0.0, left)

    def _end(self, task_id: str, outcome: TaskResult | HailuoError) -> None:
        del self._watched[task_id]
        self._state.push.unregister(task_id, self)
        if isinstance(outcome, HailuoError):
            self.errors[task_id] = outcome
        if self._sink is not None:
            self._sink(task_id, outcome)
            return
        self._ended.append((task_id, outcome))
        self._ended_signal.set()

    def _offer(self, subscriber: MemoryObjectSendStream[TaskEvent], event: TaskEvent) -> None:
        try:
            subscriber.send_nowait(event)
        except anyio.WouldBlock:
            self.events_dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._subscribers.remove(subscriber)
            subscriber.close()  # its reader left; an unclosed stream warns when collected

    def _broadcast(self, event: TaskEvent) -> None:
        for subscriber in list(self._subscribers):
            self._offer(subscriber, event)

    async def _emit(self, event: TaskEvent) -> None:
        self._broadcast(event)
        if self._on_event is not None:
            await self._call_on_event(self._on_event, event)

    @staticmethod
    async def _call_on_event(on_event: EventCallback, event: TaskEvent) -> None:
        await guarded_call(on_event, event, task_id=event.task_id)


def _wake_one(idle: list[asyncio.Future[bool]], *, retire: bool) -> bool:
    """Wake one idle poll worker, for work or to retire; False when none was waiting."""
    while idle:
        woken = idle.pop()
        if not woken.done():  # done: cancelled with the task group
            woken.set_result(retire)
            return True
    return False


def _retire_all(idle: list[asyncio.Future[bool]]) -> None:
    """Retire every idle poll worker."""
    while _wake_one(idle, retire=True):
        pass


def change_between(previous: TaskResult | None, result: TaskResult) -> EventKind | None:
    """The event a new answer makes after ``previous``: its status or progress moved, or None."""
    if previous is None or previous.status is not result.status:
        return "done" if result.is_done else "status"
    if previous.progress_percent != result.progress_percent:
        return "progress"
    return None
