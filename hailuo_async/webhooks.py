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
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._exceptions import WebhookError
from ._push import (
    MAX_WEBHOOK_BYTES,
    WEBHOOK_EVENT_TYPE,
    WebhookEvent,
    error_body,
    parse_webhook,
    read_capped,
)

if TYPE_CHECKING:
    from aiohttp import web

    from ._client import HailuoClient

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


# -- aiohttp -------------------------------------------------------------------------------


class AiohttpWebhookReceiver:
    """The state behind :func:`aiohttp_handler`: the confirmations running in the background."""

    def __init__(self, client: HailuoClient, *, max_body_bytes: int = MAX_WEBHOOK_BYTES) -> None:
        self._client = client
        self._max_body_bytes = max_body_bytes
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        """Answer at once: 202 for an event, 400 for garbage, 413 for a huge body."""
        body = await read_capped(
            request.content.iter_any(),
            declared=request.content_length,
            max_bytes=self._max_body_bytes,
        )
        if body is None:
            return _error(413, "body", f"larger than {self._max_body_bytes} bytes")
        try:
            event = parse_webhook(body)
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
    return _json(dict(error_body(field, message)), status)
