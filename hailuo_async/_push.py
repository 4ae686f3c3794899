"""Push plumbing: webhook events parsed, confirmed and handed to whoever waits for the task.

The public receivers live in :mod:`hailuo_async.webhooks`; this module holds what they and
the client share: the event's shape (:func:`parse_webhook`), the registry of interest in
task ids (:class:`PushRegistry`, kept in the client's shared state), and the confirmation
of an event by one task-result GET (:class:`WebhookConfirmer`).
"""

from __future__ import annotations

import enum
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Protocol

import anyio
import attrs

from ._decoding import json_type
from ._exceptions import HailuoError, InvalidRequestError, WebhookError
from ._models import TaskResult, TaskStatus
from ._task_ids import task_id_problem

__all__ = [
    "BUSY_MESSAGE",
    "MAX_CONCURRENT_CONFIRMATIONS",
    "MAX_WAITING_CONFIRMATIONS",
    "MAX_WEBHOOK_BYTES",
    "WEBHOOK_EVENT_TYPE",
    "WEBHOOK_SECRET_ENV",
    "Admission",
    "InMemoryPushRegistry",
    "PushRegistry",
    "PushSubscriber",
    "WebhookConfirmer",
    "WebhookEvent",
    "WebhookSecret",
    "admit_delivery",
    "error_body",
    "parse_webhook",
    "read_capped",
]

logger = logging.getLogger("hailuo_async.webhooks")

WEBHOOK_EVENT_TYPE = "ASYNC_TASK_RESULT"
"""The one event type the gateway documents; receivers ignore any other."""
MAX_WEBHOOK_BYTES = 1024 * 1024
"""Bodies larger than this are refused unread: a task-result event is a few kilobytes."""
# How many task ids' last confirmation times are remembered for the cool-down.
_CONFIRMED_MEMORY = 4096
MAX_CONCURRENT_CONFIRMATIONS = 8
"""Confirmation GETs a client runs at once for the receivers, whatever the burst."""
MAX_WAITING_CONFIRMATIONS = 64
"""Deliveries a receiver lets wait for a confirmation slot; past it, it answers 503."""
WEBHOOK_SECRET_ENV = "HAILUO_WEBHOOK_SECRET"  # noqa: S105 - a variable name
"""The variable a shared webhook secret is read from (several processes behind one URL)."""
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,256}")


# The loggers where web servers write each request's path (their access logs).
_ACCESS_LOGGERS = ("aiohttp.access", "uvicorn.access", "hypercorn.access", "gunicorn.access")


class _MaskSecrets(logging.Filter):
    """Masks webhook secrets in the records of the servers' access logs."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._masked(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._masked(arg) for arg in record.args)
        return True

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, "***")
        return value


_ACCESS_LOG_MASK = _MaskSecrets()


class WebhookSecret:
    """The secret last path segment of the webhook URL: the gateway signs nothing else.

    The library puts it in the ``webhook_url`` it sends (``https://host/hailuo/webhook/<secret>``)
    and the receivers compare it in constant time before anything else; a wrong or missing
    one gets 404 and costs no request. A path segment rather than a query parameter: every
    sender keeps a URL's path as given, and a route without it is simply not found. Its
    ``repr`` and ``str`` never show it; :meth:`reveal` does, for building the URL.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or _SECRET_PATTERN.fullmatch(value) is None:
            # The value is never echoed: it may be a real secret with one bad character.
            raise InvalidRequestError(
                "webhook_secret", "must be 16 to 256 characters of A-Z, a-z, 0-9, '_' and '-'"
            )
        self._value = value

    @classmethod
    def generate(cls) -> WebhookSecret:
        """A fresh random secret (256 bits), for one application process."""
        return cls(secrets.token_urlsafe(32))

    @classmethod
    def resolve(cls, setting: str | bool | WebhookSecret | None) -> WebhookSecret | None:
        """The secret a setting asks for: given, ``None``/``True`` for the
        ``HAILUO_WEBHOOK_SECRET`` variable or else a generated one, ``False`` for none."""
        if isinstance(setting, WebhookSecret):
            return setting
        if setting is False:
            return None
        if isinstance(setting, str):
            return cls(setting)
        shared = os.environ.get(WEBHOOK_SECRET_ENV)
        return cls(shared) if shared else cls.generate()

    def mask_in_access_logs(self) -> None:
        """Show the secret as ``***`` in the access logs of aiohttp, uvicorn, hypercorn and
        gunicorn, which write each request's path (the receivers call this)."""
        _ACCESS_LOG_MASK.secrets.add(self._value)
        for name in _ACCESS_LOGGERS:
            access = logging.getLogger(name)
            if _ACCESS_LOG_MASK not in access.filters:
                access.addFilter(_ACCESS_LOG_MASK)

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def matches(self, candidate: str | None) -> bool:
        """True when ``candidate`` is the secret; compared in constant time."""
        given = (candidate or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, self._value.encode("ascii"))

    def url(self, base: str) -> str:
        """``base`` (the receiver's public URL) with the secret as its last path segment."""
        return f"{base.rstrip('/')}/{self._value}"

    def __repr__(self) -> str:
        return "WebhookSecret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a WebhookSecret is not pickled")


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
        raise WebhookError("body", f"must be a JSON object, not {json_type(data)}")
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookError("event_type", "must be a non-empty string")
    if event_type != WEBHOOK_EVENT_TYPE:
        return WebhookEvent(event_type=event_type[:200])
    payload = data.get("payload")
    if not isinstance(payload, Mapping):
        raise WebhookError("payload", f"must be an object, not {json_type(payload)}")
    task = payload.get("task")
    if not isinstance(task, Mapping):
        raise WebhookError("payload.task", f"must be an object, not {json_type(task)}")
    task_id = task.get("task_id")
    problem = task_id_problem(task_id)
    if problem is not None:
        raise WebhookError("payload.task.task_id", problem)
    assert isinstance(task_id, str)
    status = task.get("status", "")
    if not isinstance(status, str):
        raise WebhookError("payload.task.status", f"must be a string, not {json_type(status)}")
    return WebhookEvent(
        event_type=event_type, task_id=task_id, status=TaskStatus.parse(status), payload=payload
    )


class PushSubscriber(Protocol):
    """Whatever waits for pushed results (a watcher)."""

    def deliver(self, result: TaskResult) -> bool:
        """Take a confirmed terminal result; True if it ended a task this subscriber watched."""


class PushRegistry(Protocol):
    """Who waits for which task id's pushed result.

    Contract: a subscriber registers its interest in a task id while it is open and watches
    that id, and unregisters it when the task ends or the subscriber closes. :meth:`deliver`
    hands a confirmed terminal result to every subscriber registered for its id at that
    moment. A shared implementation (a webhook received by another process) must deliver
    to the subscribers of this process exactly as this in-memory one does.
    """

    def register(self, task_id: str, subscriber: PushSubscriber) -> None:
        """Note that ``subscriber`` waits for ``task_id``'s end."""

    def unregister(self, task_id: str, subscriber: PushSubscriber) -> None:
        """Forget that interest (nothing happens when there was none)."""

    def is_wanted(self, task_id: str) -> bool:
        """True when some subscriber waits for ``task_id``."""

    def deliver(self, result: TaskResult) -> int:
        """Hand a confirmed result to its subscribers; return how many took it."""


class InMemoryPushRegistry:
    """A :class:`PushRegistry` for one process: task id -> the subscribers waiting for it."""

    def __init__(self) -> None:
        # A lone subscriber is held as it is, a set only from the second one on: nearly every
        # id has one watcher, and a set per watched id would be most of a watch's memory.
        self._interest: dict[str, PushSubscriber | set[PushSubscriber]] = {}

    def register(self, task_id: str, subscriber: PushSubscriber) -> None:
        """See :meth:`PushRegistry.register`."""
        held = self._interest.setdefault(task_id, subscriber)
        if isinstance(held, set):
            held.add(subscriber)
        # A second one, unless a set would take it for the one held (the same, or equal).
        elif held is not subscriber and held != subscriber:
            self._interest[task_id] = {held, subscriber}

    def unregister(self, task_id: str, subscriber: PushSubscriber) -> None:
        """See :meth:`PushRegistry.unregister`."""
        held = self._interest.get(task_id)
        if held is None:
            return
        if not isinstance(held, set):
            if held is subscriber or held == subscriber:
                del self._interest[task_id]
            return
        held.discard(subscriber)
        if len(held) == 1:
            (self._interest[task_id],) = held

    def is_wanted(self, task_id: str) -> bool:
        """See :meth:`PushRegistry.is_wanted`."""
        return task_id in self._interest

    def wanted_ids(self) -> list[str]:
        """Every task id some subscriber waits for now (to poll them after lost pushes)."""
        return list(self._interest)

    def deliver(self, result: TaskResult) -> int:
        """See :meth:`PushRegistry.deliver`."""
        held = self._interest.get(result.task_id)
        if held is None:
            return 0
        if not isinstance(held, set):
            return 1 if held.deliver(result) else 0
        # A copy: a subscriber that takes the result unregisters while we go through them.
        return sum(1 for subscriber in list(held) if subscriber.deliver(result))


class Admission(enum.Enum):
    """What a receiver does with an event: ignore it, confirm it, or ask for it later."""

    IGNORED = "ignored"
    ADMITTED = "admitted"
    BUSY = "busy"


class WebhookConfirmer:
    """Confirms webhook events with one GET each and delivers the confirmed results.

    Events of other types, events that do not claim an end, ids nobody waits for and
    duplicates of an event being confirmed are ignored; so is a task confirmed running a
    moment ago (a replay or a forgery, not news).

    At most ``max_concurrent`` confirmations run at once, so a burst of deliveries cannot
    take over the request budget. Receivers :meth:`admit` each event first: past
    ``max_concurrent + max_waiting`` admitted ones, an event is refused (BUSY) and the
    receiver answers 503, which the gateway retries later.

    A coordinated receiver relays an event nobody here waits for to the other processes
    (one ``NOTIFY``); relays are admitted the same way (:meth:`admit_relay`), share the
    same cap, and each id is relayed once per cool-down, so a flood of deliveries costs
    the database no more than it would cost the service.
    """

    def __init__(
        self,
        registry: PushRegistry,
        *,
        max_concurrent: int = MAX_CONCURRENT_CONFIRMATIONS,
        max_waiting: int = MAX_WAITING_CONFIRMATIONS,
    ) -> None:
        self._registry = registry
        self._confirming: set[str] = set()
        self._confirmed_at: OrderedDict[str, float] = OrderedDict()
        self._relaying: set[str] = set()
        self._relayed_at: OrderedDict[str, float] = OrderedDict()
        self._max_concurrent = max_concurrent
        self._max_admitted = max_concurrent + max_waiting
        # Made on first use, inside the event loop that confirms.
        self._slots: anyio.Semaphore | None = None
        self._admitted = 0
        self.confirmed = 0
        self.refused = 0

    def admit(self, event: WebhookEvent, *, cool_down: float) -> Admission:
        """Whether a receiver should confirm ``event`` now: an ADMITTED one holds a place
        until :meth:`release`."""
        if not self._wanted(event, cool_down):
            return Admission.IGNORED
        return self._take_place(event)

    def admit_relay(self, event: WebhookEvent, *, cool_down: float) -> Admission:
        """Whether a coordinated receiver should relay ``event`` (one ``NOTIFY``) now.

        Events that claim no end, an id being relayed or relayed within ``cool_down`` are
        IGNORED; past the cap shared with confirmations, BUSY. An ADMITTED relay holds a
        place until :meth:`relayed`.
        """
        task_id = event.task_id
        if not event.is_task_result or not event.claims_done or task_id is None:
            return Admission.IGNORED
        relayed_at = self._relayed_at.get(task_id)
        if task_id in self._relaying or (
            relayed_at is not None and time.monotonic() - relayed_at < cool_down
        ):
            return Admission.IGNORED
        admission = self._take_place(event)
        if admission is Admission.ADMITTED:
            self._relaying.add(task_id)
        return admission

    async def relay(
        self, event: WebhookEvent, send: Callable[[WebhookEvent], Awaitable[object]]
    ) -> None:
        """Send an admitted relay, within the cap on what runs at once."""
        if self._slots is None:
            self._slots = anyio.Semaphore(self._max_concurrent)
        task_id = event.task_id
        assert task_id is not None
        try:
            async with self._slots:
                await send(event)
        finally:
            self._relaying.discard(task_id)
            _remember(self._relayed_at, task_id)

    def _take_place(self, event: WebhookEvent) -> Admission:
        if self._admitted >= self._max_admitted:
            self.refused += 1
            logger.warning(
                "webhook event for task %s refused with 503: %d confirmations already"
                " running or waiting",
                event.task_id,
                self._admitted,
            )
            return Admission.BUSY
        self._admitted += 1
        return Admission.ADMITTED

    async def handle(
        self,
        event: WebhookEvent,
        *,
        get_task: Callable[[str], Awaitable[TaskResult]],
        cool_down: float,
    ) -> TaskResult | None:
        """Confirm ``event`` and deliver its result; the result when it ended a watched task."""
        if not self._wanted(event, cool_down):
            return None
        task_id = event.task_id
        assert task_id is not None
        self._confirming.add(task_id)
        if self._slots is None:
            self._slots = anyio.Semaphore(self._max_concurrent)
        try:
            async with self._slots:
                result = await get_task(task_id)
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
        if not self._registry.deliver(result):
            return None
        self.confirmed += 1
        return result

    def release(self) -> None:
        """Give back the place :meth:`admit` took, once its confirmation is over."""
        self._admitted -= 1

    def _wanted(self, event: WebhookEvent, cool_down: float) -> bool:
        if not event.is_task_result or not event.claims_done or event.task_id is None:
            return False
        task_id = event.task_id
        if task_id in self._confirming or not self._registry.is_wanted(task_id):
            return False  # a duplicate under confirmation, or nobody waits for it
        confirmed_at = self._confirmed_at.get(task_id)
        return confirmed_at is None or time.monotonic() - confirmed_at >= cool_down

    def _remember(self, task_id: str) -> None:
        _remember(self._confirmed_at, task_id)


def _remember(times: OrderedDict[str, float], task_id: str) -> None:
    """Note ``task_id`` was handled now, forgetting the oldest past the memory's size."""
    times[task_id] = time.monotonic()
    times.move_to_end(task_id)
    while len(times) > _CONFIRMED_MEMORY:
        times.popitem(last=False)


# -- what both receivers (aiohttp and FastAPI) share ------------------------------------------


async def read_capped(
    chunks: AsyncIterable[bytes], *, declared: int | None, max_bytes: int
) -> bytes | None:
    """A request body read up to ``max_bytes``; None when it is (or claims to be) larger."""
    if declared is not None and declared > max_bytes:
        return None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def admit_delivery(
    confirmer: WebhookConfirmer,
    event: WebhookEvent,
    *,
    cool_down: float,
    handle: Callable[[WebhookEvent], Awaitable[object]],
    relay: Callable[[WebhookEvent], Awaitable[object]] | None = None,
) -> Callable[[], Coroutine[Any, Any, None]] | Admission:
    """For a receiver: the confirmation (``handle``) to start in the background at once, or
    why there is none (IGNORED: answer 202; BUSY: answer 503, so the gateway delivers it
    again later). With ``relay`` (a coordinated client), an event nobody here waits for is
    relayed to the other processes instead, admitted under the same cap."""
    admission = confirmer.admit(event, cool_down=cool_down)
    if admission is Admission.IGNORED and relay is not None:
        admission = confirmer.admit_relay(event, cool_down=cool_down)
        if admission is not Admission.ADMITTED:
            return admission
        work: Callable[[], Awaitable[object]] = partial(confirmer.relay, event, relay)
    elif admission is Admission.ADMITTED:
        work = partial(handle, event)
    else:
        return admission

    async def confirm() -> None:
        try:
            await work()
        except Exception:  # a background task must not die silently, nor kill the app
            logger.exception("webhook event for task %s could not be handled", event.task_id)
        finally:
            confirmer.release()

    return confirm


BUSY_MESSAGE = "too many deliveries being confirmed; retry later"
"""The 503 answer's message when confirmations are at their cap."""


def error_body(field: str, message: str) -> dict[str, str]:
    """The JSON body of a receiver's 4xx answer, the same from every receiver."""
    return {"detail": f"{field}: {message}", "field": field}
