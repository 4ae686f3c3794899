"""Push delivery: read the gateway's webhook events, confirm each one, hand it to the watchers.

A submission made with ``VideoRequest(..., webhook_url=...)`` asks the gateway to POST an
``ASYNC_TASK_RESULT`` event to that URL when the task ends (API.md, section 3). No signature
scheme is documented, so an event is never trusted by itself:

1. :func:`parse_webhook` checks the shape of the body (a :class:`WebhookError` otherwise);
2. :meth:`HailuoClient.handle_webhook <hailuo_async.HailuoClient.handle_webhook>` ignores
   events of other types, events that do not claim an end, ids no open watcher is watching
   (unknown, or already ended) and duplicates of an event being confirmed; then
3. it confirms the event with one task-result GET and hands the *confirmed* result to every
   open watcher watching that id, so ``async for`` over a watcher (or a ``generate_many``
   batch) yields pushed and polled results alike.

The gateway retries a delivery that is not answered 2xx within 5 seconds, so a receiver
must answer at once and do the confirmation afterwards: :func:`aiohttp_handler` (here) and
:func:`hailuo_async.fastapi.webhook_router` do exactly that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs

from ._exceptions import HailuoError, WebhookError
from ._models import TaskResult, TaskStatus

if TYPE_CHECKING:
    from aiohttp import web

    from ._client import HailuoClient
    from ._watcher import TaskWatcher

__all__ = [
    "MAX_WEBHOOK_BYTES",
    "WEBHOOK_EVENT_TYPE",
    "AiohttpWebhookHandler",
    "AiohttpWebhookReceiver",
    "WebhookError",
    "WebhookEvent",
    "aiohttp_handler",
    "parse_webhook",
]

logger = logging.getLogger("hailuo_async.webhooks")

WEBHOOK_EVENT_TYPE = "ASYNC_TASK_RESULT"
"""The one event type the gateway documents; receivers ignore any other."""
MAX_WEBHOOK_BYTES = 1024 * 1024
"""Bodies larger than this are refused unread: a task-result event is a few kilobytes."""
_MAX_TASK_ID_CHARS = 256
# How many task ids' last confirmation times are remembered for the cool-down.
_CONFIRMED_MEMORY = 4096


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """A webhook body whose shape was checked; nothing in it is confirmed yet.

    ``task_id`` and ``status`` are what the body *claims*; they are ``None`` for events of
    a type other than ``ASYNC_TASK_RESULT`` (whose payload is not read).
    """

    event_type: str
    task_id: str | None = None
    status: TaskStatus | None = None
    payload: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def is_task_result(self) -> bool:
        """True for the ``ASYNC_TASK_RESULT`` events this library acts on."""
        return self.event_type == WEBHOOK_EVENT_TYPE

    @property
    def claims_done(self) -> bool:
        """True when the body says the task has ended (which a GET must still confirm)."""
        return self.status is not None and self.status.is_terminal


def parse_webhook(body: bytes | str | Mapping[str, Any]) -> WebhookEvent:
    """Check a webhook body's shape and return what it claims, or raise :class:`WebhookError`.

    ``body`` is the raw request body (bytes or text) or the JSON object already decoded.
    Only the fields needed to route the event are read; it is confirmed later, by a GET.
    """
    data: object
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
        if len(raw) > MAX_WEBHOOK_BYTES:
            raise WebhookError("body", f"larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise WebhookError("body", "not valid JSON") from None
    elif isinstance(body, Mapping):
        data = body
    else:
        raise WebhookError("body", f"must be bytes, text or a mapping, not {type(body).__name__}")
    if not isinstance(data, Mapping):
        raise WebhookError("body", f"must be a JSON object, not {_kind(data)}")
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookError("event_type", "must be a non-empty string")
    if event_type != WEBHOOK_EVENT_TYPE:
        return WebhookEvent(event_type=event_type[:200])
    payload = data.get("payload")
    if not isinstance(payload, Mapping):
        raise WebhookError("payload", f"must be an object, not {_kind(payload)}")
    task = payload.get("task")
    if not isinstance(task, Mapping):
        raise WebhookError("payload.task", f"must be an object, not {_kind(task)}")
    task_id = task.get("task_id")
    if (
        not isinstance(task_id, str)
        or not task_id.strip()
        or len(task_id) > _MAX_TASK_ID_CHARS
        or not task_id.isprintable()
    ):
        raise WebhookError(
            "payload.task.task_id", f"must be 1 to {_MAX_TASK_ID_CHARS} printable characters"
        )
    status = task.get("status", "")
    if not isinstance(status, str):
        raise WebhookError("payload.task.status", f"must be a string, not {_kind(status)}")
    return WebhookEvent(
        event_type=event_type, task_id=task_id, status=TaskStatus.parse(status), payload=payload
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


class WebhookInbox:
    """One client's side of push delivery: its open watchers and the events being confirmed.

    Internal: the client owns one; watchers register on entry and leave on exit.
    """

    def __init__(self) -> None:
        self.watchers: set[TaskWatcher] = set()
        self._confirming: set[str] = set()
        self._confirmed_at: OrderedDict[str, float] = OrderedDict()
        self.confirmed = 0

    def watching(self, task_id: str) -> list[TaskWatcher]:
        """The open watchers that watch ``task_id``."""
        return [watcher for watcher in self.watchers if task_id in watcher]

    def _wanted(self, event: WebhookEvent, cool_down: float) -> bool:
        if not event.is_task_result or not event.claims_done or event.task_id is None:
            return False
        task_id = event.task_id
        if task_id in self._confirming or not self.watching(task_id):
            return False  # a duplicate under confirmation, or nobody waits for it
        confirmed_at = self._confirmed_at.get(task_id)
        # A task confirmed a moment ago and found running: a replay or a forgery, not news.
        return confirmed_at is None or time.monotonic() - confirmed_at >= cool_down

    def _remember(self, task_id: str) -> None:
        self._confirmed_at[task_id] = time.monotonic()
        self._confirmed_at.move_to_end(task_id)
        while len(self._confirmed_at) > _CONFIRMED_MEMORY:
            self._confirmed_at.popitem(last=False)

    async def handle(
        self, client: HailuoClient, body: bytes | str | Mapping[str, Any] | WebhookEvent
    ) -> TaskResult | None:
        """See :meth:`HailuoClient.handle_webhook`."""
        event = body if isinstance(body, WebhookEvent) else parse_webhook(body)
        if not self._wanted(event, client.poll_policy.min_interval):
            return None
        task_id = event.task_id
        assert task_id is not None
        self._confirming.add(task_id)
        try:
            result = await client.get_task(task_id)
        except HailuoError as exc:
            # The watchers' own (backstop) polls will find the end; nothing is lost.
            logger.warning("could not confirm the webhook event for task %s: %s", task_id, exc)
            return None
        finally:
            self._confirming.discard(task_id)
            self._remember(task_id)
        if not result.is_done:
            logger.info("webhook event for task %s not confirmed: %s", task_id, result.raw_status)
            return None
        # Every watcher gets it (a list, not a generator: each must be offered the result).
        delivered = [watcher.deliver(result) for watcher in self.watching(task_id)]
        if not any(delivered):
            return None
        self.confirmed += 1
        return result


# -- aiohttp -------------------------------------------------------------------------------


class AiohttpWebhookReceiver:
    """The state behind :func:`aiohttp_handler`: the confirmations running in the background."""

    def __init__(self, client: HailuoClient, *, max_body_bytes: int = MAX_WEBHOOK_BYTES) -> None:
        self._client = client
        self._max_body_bytes = max_body_bytes
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        """Answer at once: 202 for an event, 400 for garbage, 413 for a huge body."""
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            return _error(413, "body", f"larger than {self._max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > self._max_body_bytes:
                return _error(413, "body", f"larger than {self._max_body_bytes} bytes")
        try:
            event = parse_webhook(bytes(body))
        except WebhookError as exc:
            return _error(400, exc.field, exc.message)
        confirm = asyncio.get_running_loop().create_task(self._confirm(event))
        self._background.add(confirm)
        confirm.add_done_callback(self._background.discard)
        return _json({"accepted": True}, 202)

    async def _confirm(self, event: WebhookEvent) -> None:
        try:
            await self._client.handle_webhook(event)
        except Exception:  # a background task must not die silently, nor kill the app
            logger.exception("webhook event for task %s could not be handled", event.task_id)

    @property
    def pending(self) -> int:
        """Confirmations running in the background."""
        return len(self._background)

    async def aclose(self) -> None:
        """Cancel the confirmations under way and wait for them to end."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: on shutdown, cancel the confirmations under way."""
        try:
            yield
        finally:
            await self.aclose()


class AiohttpWebhookHandler(Protocol):
    """What :func:`aiohttp_handler` returns: an aiohttp handler, plus its shutdown hook.

    ``receiver`` holds the confirmations running in the background; ``cleanup_ctx`` (for
    ``app.cleanup_ctx``) cancels them when the application shuts down.
    """

    receiver: AiohttpWebhookReceiver

    async def __call__(self, request: web.Request) -> web.Response: ...

    def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]: ...


def aiohttp_handler(
    client: HailuoClient, *, max_body_bytes: int = MAX_WEBHOOK_BYTES
) -> AiohttpWebhookHandler:
    """An aiohttp handler that feeds webhook events to ``client``'s open watchers.

    It answers 202 at once and confirms the event in the background (one task-result GET),
    so the gateway never times out and retries; replays and duplicates are harmless::

        hook = aiohttp_handler(client)
        app.router.add_post("/hailuo/webhook", hook)
        app.cleanup_ctx.append(hook.cleanup_ctx)  # cancel confirmations on shutdown

    A body that is not a webhook event gets 400 naming the field; one larger than
    ``max_body_bytes`` gets 413.
    """
    receiver = AiohttpWebhookReceiver(client, max_body_bytes=max_body_bytes)

    # A plain coroutine function: aiohttp refuses callable objects as handlers.
    async def hailuo_webhook(request: web.Request) -> web.Response:
        return await receiver.handle(request)

    handler = cast(AiohttpWebhookHandler, hailuo_webhook)
    handler.receiver = receiver
    handler.cleanup_ctx = receiver.cleanup_ctx  # type: ignore[method-assign]
    return handler


def _json(body: dict[str, Any], status: int) -> web.Response:
    # aiohttp.web is imported here, not at the top: the core client never needs the server.
    from aiohttp.web import json_response  # noqa: PLC0415

    return json_response(body, status=status)


def _error(status: int, field: str, message: str) -> web.Response:
    return _json({"error": f"{field}: {message}", "field": field}, status)
