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

Since the gateway signs nothing, anyone who can reach the receiver and guesses a watched
task id could make it spend a GET per forged delivery. Give the receiver a
:class:`WebhookSecret`: it becomes the last path segment of the ``webhook_url`` the jobs
send, and a delivery without it gets 404 before anything else is done. At most
:data:`MAX_CONCURRENT_CONFIRMATIONS` confirmations run at once; past
:data:`MAX_WAITING_CONFIRMATIONS` waiting ones a delivery gets 503, which the gateway
retries later (a 2xx would drop the push for good, leaving the job to the slow backstop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._exceptions import WebhookError
from ._push import (
    BUSY_MESSAGE,
    MAX_CONCURRENT_CONFIRMATIONS,
    MAX_WAITING_CONFIRMATIONS,
    MAX_WEBHOOK_BYTES,
    WEBHOOK_EVENT_TYPE,
    WEBHOOK_SECRET_ENV,
    Admission,
    WebhookEvent,
    WebhookSecret,
    admit_delivery,
    error_body,
    parse_webhook,
    read_capped,
)

if TYPE_CHECKING:
    from aiohttp import web

    from ._client import HailuoClient

__all__ = [
    "MAX_CONCURRENT_CONFIRMATIONS",
    "MAX_WAITING_CONFIRMATIONS",
    "MAX_WEBHOOK_BYTES",
    "SECRET_SEGMENT",
    "WEBHOOK_EVENT_TYPE",
    "WEBHOOK_SECRET_ENV",
    "AiohttpWebhookHandler",
    "AiohttpWebhookReceiver",
    "WebhookError",
    "WebhookEvent",
    "WebhookSecret",
    "aiohttp_handler",
    "parse_webhook",
]

logger = logging.getLogger("hailuo_async.webhooks")

SECRET_SEGMENT = "secret"  # noqa: S105 - the name of a route parameter, not a secret
"""The route parameter that holds the secret: ``app.router.add_post("/hook/{secret}", ...)``."""


# -- aiohttp -------------------------------------------------------------------------------


class AiohttpWebhookReceiver:
    """The state behind :func:`aiohttp_handler`: the confirmations running in the background."""

    def __init__(
        self,
        client: HailuoClient,
        *,
        max_body_bytes: int = MAX_WEBHOOK_BYTES,
        secret: str | WebhookSecret | None = None,
    ) -> None:
        self._client = client
        self._max_body_bytes = max_body_bytes
        self._secret = WebhookSecret(secret) if isinstance(secret, str) else secret
        if self._secret is not None:
            self._secret.mask_in_access_logs()
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<AiohttpWebhookReceiver secret={'set' if self._secret else 'none'}>"

    async def handle(self, request: web.Request) -> web.Response:
        """Answer at once: 202 for an event, 400 for garbage, 413 for a huge body.

        With a secret, a request whose ``{secret}`` route segment is wrong or missing gets
        404 first, before its body is read; 503 when confirmations are at their cap.
        """
        if self._secret is not None and not self._secret.matches(
            request.match_info.get(SECRET_SEGMENT)
        ):
            return _not_found()
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
        confirm = admit_for(self._client, event)
        if confirm is Admission.BUSY:
            return _error(503, "body", BUSY_MESSAGE)
        if not isinstance(confirm, Admission):
            task = asyncio.get_running_loop().create_task(confirm())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return _json({"accepted": True}, 202)

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
    client: HailuoClient,
    *,
    max_body_bytes: int = MAX_WEBHOOK_BYTES,
    secret: str | WebhookSecret | None = None,
) -> AiohttpWebhookHandler:
    """An aiohttp handler that feeds webhook events to ``client``'s open watchers.

    It answers 202 at once and confirms the event in the background (one task-result GET),
    so the gateway never times out and retries; replays and duplicates are harmless. With
    a ``secret`` (recommended), the route carries it as its ``{secret}`` segment and the
    jobs are sent with ``secret.url(...)`` as their webhook URL::

        secret = WebhookSecret.resolve(None)  # HAILUO_WEBHOOK_SECRET, or a fresh one
        hook = aiohttp_handler(client, secret=secret)
        app.router.add_post("/hailuo/webhook/{secret}", hook)
        app.cleanup_ctx.append(hook.cleanup_ctx)  # cancel confirmations on shutdown
        webhook_url = secret.url("https://my.host/hailuo/webhook")

    A wrong or missing secret gets 404 (nothing else is done); a body that is not a webhook
    event gets 400 naming the field; one larger than ``max_body_bytes`` gets 413; a
    delivery past the cap on confirmations gets 503, which the gateway retries.
    """
    receiver = AiohttpWebhookReceiver(client, max_body_bytes=max_body_bytes, secret=secret)

    # A plain coroutine function: aiohttp refuses callable objects as handlers.
    async def hailuo_webhook(request: web.Request) -> web.Response:
        return await receiver.handle(request)

    handler = cast(AiohttpWebhookHandler, hailuo_webhook)
    handler.receiver = receiver
    handler.cleanup_ctx = receiver.cleanup_ctx  # type: ignore[method-assign]
    return handler


def admit_for(
    client: HailuoClient, event: WebhookEvent
) -> Callable[[], Coroutine[Any, Any, None]] | Admission:
    """For the receivers: ``client``'s confirmation of ``event`` to start in the background,
    or why there is none (IGNORED: answer 202; BUSY: answer 503)."""
    # Nobody here watches the task, but a process sharing the coordination may: the event
    # is relayed (one NOTIFY, no GET, under the same cap), and the watching process
    # confirms it itself.
    relay = client._relay_webhook if client._coordinator is not None else None
    return admit_delivery(
        client._webhooks,
        event,
        cool_down=client.poll_policy.min_interval,
        handle=client.handle_webhook,
        relay=relay,
    )


def _json(body: dict[str, Any], status: int) -> web.Response:
    # aiohttp.web is imported here, not at the top: the core client never needs the server.
    from aiohttp.web import json_response  # noqa: PLC0415

    return json_response(body, status=status)


def _error(status: int, field: str, message: str) -> web.Response:
    return _json(dict(error_body(field, message)), status)


def _not_found() -> web.Response:
    # What aiohttp answers for a path it does not route: nothing tells a prober more.
    from aiohttp.web import Response  # noqa: PLC0415

    return Response(status=404, text="404: Not Found")
