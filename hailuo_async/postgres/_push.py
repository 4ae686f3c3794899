"""A webhook received by any process reaches the process watching its task: LISTEN/NOTIFY.

Every process of an account listens on one channel (named by a hash of the account).
The process that receives a webhook event publishes the task id and the status the event
*claims* — never the result, and nothing is trusted: the process watching that task
confirms it with its own task-result GET, exactly as for a webhook it received itself
(:meth:`PushNotice.as_event` turns a notice into the event to hand to
``client.handle_webhook``). So a forged or replayed notice costs one GET, as a forged
webhook does, and a notice stays far below ``NOTIFY``'s 8000-byte limit.

A notice is delivered at most once and may be lost: while the listening connection is
down (a restart, a dropped network, a terminated backend), notices go nowhere. The bus
reconnects with backoff, listens again, and then calls ``on_gap`` so its owner polls the
ids it watches once; the watchers' backstop polls would find those ends anyway, later.

The listening connection waits in ``notifies()`` (which holds it), so a process that
publishes does so on a second connection, opened on its first publication and kept:
one round trip per publication.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from types import TracebackType

import anyio
import attrs
import psycopg
from psycopg import sql

from .._exceptions import InvalidRequestError
from .._models import TaskStatus
from .._pg_liveness import DEFAULT_ROUND_TRIP_TIMEOUT
from .._push import WebhookEvent
from ._common import Background, CoordinationError, channel_for, check_account, logger
from ._connection import Connection, Session

__all__ = ["PostgresPushBus", "PushNotice"]

_MAX_PAYLOAD_BYTES = 7900  # NOTIFY refuses payloads of 8000 bytes or more
_MAX_TASK_ID_CHARS = 256

NoticeHandler = Callable[["PushNotice"], Awaitable[None]]
GapHandler = Callable[[], Awaitable[None]]

_log = logging.getLogger("hailuo_async.postgres.push")

RELAYED = "relayed"
"""The ``event_type`` of an event another process received (in its provider's dialect)."""


@attrs.frozen
class PushNotice:
    """A webhook event some process received: the task id and the status it claims."""

    task_id: str
    status: TaskStatus
    sender: str = attrs.field(default="", repr=False)

    def as_event(self) -> WebhookEvent:
        """The (unconfirmed) webhook event to hand to ``HailuoClient.handle_webhook``."""
        return WebhookEvent(event_type=RELAYED, task_id=self.task_id, status=self.status)


class PostgresPushBus:
    """Carries webhook events between the processes of one account.

    ::

        async def deliver(notice: PushNotice) -> None:
            await client.handle_webhook(notice.as_event())  # confirms with one GET

        async with PostgresPushBus(dsn, api_key=key, on_notice=deliver,
                                   on_gap=poll_watched_once) as bus:
            ...
            await bus.publish(event)  # in the webhook receiver, for every event

    ``on_notice`` runs for each notice from *another* process (its own are not echoed
    back: it handles those itself), one at a time in arrival order; its errors are logged.
    ``on_gap`` runs after the listener reconnected, since notices sent while it was away
    are lost. ``account`` defaults to a hash of ``api_key``, as for the shared limits.
    ``round_trip_timeout`` bounds a publish or a ``LISTEN`` (see :class:`Session`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        on_notice: NoticeHandler,
        on_gap: GapHandler | None = None,
        account: str | None = None,
        api_key: str | None = None,
        give_up_after: float = 30.0,
        round_trip_timeout: float = DEFAULT_ROUND_TRIP_TIMEOUT,
        health_check_interval: float = 5.0,
        max_queued: int = 10_000,
    ) -> None:
        self.account = check_account(account, api_key)
        self.channel = channel_for(self.account)
        self.sender = uuid.uuid4().hex[:12]
        self._dsn = dsn
        self._on_notice = on_notice
        self._on_gap = on_gap
        self._give_up_after = give_up_after
        self._health_check_interval = health_check_interval
        self._send, self._receive = anyio.create_memory_object_stream[PushNotice](max_queued)
        self._listener = Session(
            dsn,
            application_name=f"hailuo-push-{self.sender}",
            give_up_after=give_up_after,
            round_trip_timeout=round_trip_timeout,
        )
        self._publisher = Session(
            dsn,
            application_name=f"hailuo-push-{self.sender}-out",
            give_up_after=give_up_after,
            round_trip_timeout=round_trip_timeout,
        )
        self._background = Background()
        self.received = 0
        self.published = 0
        self.reconnects = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<PostgresPushBus account={self.account!r} sender={self.sender!r}>"

    async def __aenter__(self) -> PostgresPushBus:
        connection = await self._listen()
        await self._background.open()
        self._background.start_soon(self._deliver_notices)
        self._background.start_soon(self._stay_connected, connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._background.close()
        self._send.close()
        self._receive.close()
        await self._listener.close()
        await self._publisher.close()

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the listening connection (for operators and tests)."""
        return self._listener.backend_pid

    async def publish(self, event: WebhookEvent | PushNotice) -> bool:
        """Tell every process of the account that a task claims to have ended.

        Events of other types, or that claim no end, are not sent (False). One round trip.
        Raises :class:`CoordinationError` if the database stays unreachable.
        """
        if isinstance(event, WebhookEvent):
            if not event.is_task_result or not event.claims_done or event.task_id is None:
                return False
            assert event.status is not None
            task_id, status = event.task_id, event.status
        else:
            task_id, status = event.task_id, event.status
        if not 0 < len(task_id) <= _MAX_TASK_ID_CHARS:
            raise InvalidRequestError("task_id", f"must be 1 to {_MAX_TASK_ID_CHARS} characters")
        payload = json.dumps({"t": task_id, "s": status.value, "from": self.sender})
        if len(payload.encode()) > _MAX_PAYLOAD_BYTES:
            raise InvalidRequestError("task_id", "too long for a notification")

        async def notify(connection: Connection) -> None:
            await connection.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

        await self._publisher.run("publishing a webhook event", notify)
        self.published += 1
        return True

    # -- listening -----------------------------------------------------------------------

    async def _listen(self) -> Connection:
        """Open the listening connection and ``LISTEN`` (raises CoordinationError if not)."""

        async def listen(connection: Connection) -> Connection:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            return connection

        return await self._listener.run("listening for webhook events", listen)

    async def _stay_connected(self, connection: Connection) -> None:
        """Runs for the bus's lifetime: listen, and listen again whenever the connection is lost."""
        while True:
            await self._read_until_lost(connection)
            await self._listener.discard(connection)
            connection = await self._reconnect()

    async def _read_until_lost(self, connection: Connection) -> None:
        """Hand over notices as they come, and check the connection whenever it is idle."""
        try:
            while True:
                notifies = connection.notifies(timeout=self._health_check_interval)
                async with aclosing(notifies):
                    async for notify in notifies:
                        self._on_notification(notify.payload)
                with anyio.fail_after(self._health_check_interval):
                    await connection.execute("SELECT 1")
        except (OSError, TimeoutError, psycopg.Error) as exc:
            _log.warning("push bus connection lost (%s)", type(exc).__name__)

    async def _reconnect(self) -> Connection:
        delay = 0.1
        while True:
            try:
                connection = await self._listen()
                break
            except CoordinationError as exc:
                _log.warning("push bus still disconnected: %s", exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.reconnects += 1
        _log.info("push bus listening again; notices sent meanwhile are lost")
        if self._on_gap is not None:
            try:
                await self._on_gap()
            except Exception:
                _log.exception("the push bus's gap handler failed")
        return connection

    def _on_notification(self, payload: str) -> None:
        notice = _parse(payload)
        if notice is None or notice.sender == self.sender:
            return
        try:
            self._send.send_nowait(notice)
        except anyio.WouldBlock:
            self.dropped += 1  # the watchers' backstop polls will find it
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _deliver_notices(self) -> None:
        async for notice in self._receive:
            self.received += 1
            try:
                await self._on_notice(notice)
            except Exception:
                _log.exception("handling a pushed event for task %s failed", notice.task_id)


def _parse(payload: object) -> PushNotice | None:
    try:
        data = json.loads(payload) if isinstance(payload, str) else {}
        task_id, status, sender = data["t"], data["s"], data["from"]
    except (ValueError, TypeError, KeyError):
        logger.warning("ignoring a malformed push notice")
        return None
    if (
        not isinstance(task_id, str)
        or not isinstance(status, str)
        or not isinstance(sender, str)
        or not 0 < len(task_id) <= _MAX_TASK_ID_CHARS
    ):
        logger.warning("ignoring a malformed push notice")
        return None
    return PushNotice(task_id=task_id, status=TaskStatus.parse(status), sender=sender)
