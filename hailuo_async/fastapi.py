"""FastAPI integration: one client per application, a dependency for routes, a webhook route.

Needs the ``[fastapi]`` extra (``pip install -e '.[fastapi]'`` in a checkout); the core package
never imports this module. A minimal service::

    from fastapi import FastAPI, HTTPException
    from hailuo_async import HailuoError
    from hailuo_async.fastapi import (
        SUBMIT_ERROR_RESPONSES,
        TASK_ERROR_RESPONSES,
        Hailuo,
        VideoRequestBody,
        event_json,
        hailuo_lifespan,
        http_error,
        webhook_router,
    )

    HOOK = "https://my.host/hailuo/webhook"  # the jobs get HOOK + "/<secret>"
    app = FastAPI(lifespan=hailuo_lifespan(webhook_url=HOOK))
    app.include_router(webhook_router())

    @app.post("/videos", status_code=202, responses=SUBMIT_ERROR_RESPONSES)
    async def create(body: VideoRequestBody, hailuo: Hailuo) -> dict[str, str]:
        try:
            task_id = await hailuo.submit(body.to_request())
        except HailuoError as exc:
            raise http_error(exc) from None
        return {"task_id": task_id}

    @app.get("/videos/{task_id}", responses=TASK_ERROR_RESPONSES)
    async def status(task_id: str, hailuo: Hailuo) -> dict[str, object]:
        known = hailuo.current(task_id)  # what the app knows: no request to the service
        if known is None:
            raise HTTPException(status_code=404, detail="no such task")
        return event_json(known)

:class:`VideoRequestBody` is :class:`~hailuo_async.VideoRequest` as a request model: its
OpenAPI schema lists every field with its type, limits, default and an example, all taken
from the constants ``VideoRequest`` checks against, so the two cannot disagree.

The lifespan opens one :class:`~hailuo_async.HailuoClient` (and its connection pool), one
keep-open :class:`~hailuo_async.TaskWatcher` and one task group for background work,
and closes them all on shutdown. The webhook route answers 202 at once and confirms each
event in that task group, so the gateway never waits on the confirmation GET.

Reads cost the account nothing: :meth:`HailuoState.current` and :meth:`HailuoState.follow`
answer from what the app's watcher already holds of the tasks it submitted, and know no
other task (a 404 with no request), so anyone who can reach a read route cannot spend the
account's request budget through it. Guard the routes with your own authentication all
the same (the example service shows a dependency).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

try:
    from fastapi import APIRouter, Depends, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "hailuo_async.fastapi needs the [fastapi] extra: in a checkout, "
        "python3.11 -m pip install -e '.[fastapi]'"
    ) from exc

from ._client import HailuoClient
from ._coordination import Coordination
from ._decoding import result_summary
from ._exceptions import (
    APIError,
    BadRequestError,
    HailuoError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    SubmissionUnknownError,
)
from ._images import IMAGE_REFERENCE_MAX_CHARS, IMAGE_REFERENCE_PATTERN
from ._models import (
    DURATIONS,
    MAX_PROMPT_CHARS,
    RESOLUTIONS,
    RESOLUTIONS_BY_DURATION,
    Duration,
    Resolution,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from ._push import BUSY_MESSAGE, Admission, WebhookSecret, error_body, read_capped
from ._watcher import TaskEvent, TaskWatcher
from .webhooks import (
    MAX_WEBHOOK_BYTES,
    SECRET_SEGMENT,
    WebhookError,
    admit_for,
    parse_webhook,
)

__all__ = [
    "STATE_KEY",
    "SUBMIT_ERROR_RESPONSES",
    "TASK_ERROR_RESPONSES",
    "ErrorDetail",
    "Hailuo",
    "HailuoState",
    "VideoRequestBody",
    "event_json",
    "get_client",
    "get_hailuo",
    "hailuo_lifespan",
    "http_error",
    "open_hailuo",
    "result_json",
    "webhook_router",
]

logger = logging.getLogger("hailuo_async.fastapi")

STATE_KEY = "hailuo"
"""The key of the :class:`HailuoState` in the lifespan state (``request.state.hailuo``)."""

Outcome = TaskResult | HailuoError


class HailuoState:
    """What the lifespan opens for one application.

    ``client`` is the application's one HailuoClient; ``watcher`` a keep-open watcher that
    follows every job submitted through :meth:`submit`; ``webhook_url`` the public URL of the
    app's webhook route, given to the jobs when set, with ``webhook_secret`` (when set) as
    its last path segment; the route answers 404 without it. The outcomes of the latest
    ``keep_results`` jobs to end are kept (see :meth:`outcome`).

    What the app knows of a task (:meth:`current`) is what its watcher holds: the tasks it
    submitted and follows, and the latest ``keep_results`` of them to end. Reads answer from
    it with no request; a task the app does not know (another app's, one ended long ago,
    with several workers another worker's) is unknown here.
    """

    def __init__(
        self,
        client: HailuoClient,
        watcher: TaskWatcher,
        task_group: TaskGroup,
        *,
        webhook_url: str | None = None,
        webhook_secret: WebhookSecret | None = None,
        keep_results: int = 1024,
    ) -> None:
        self.client = client
        self.watcher = watcher
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        # What the jobs are sent with: never shown, it holds the secret.
        self._hook_target = (
            webhook_secret.url(webhook_url)
            if webhook_url is not None and webhook_secret is not None
            else webhook_url
        )
        self._task_group = task_group
        self._keep = keep_results
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    async def submit(self, request: VideoRequest) -> str:
        """Submit a job and follow it with the app's watcher; return its task id.

        When the app has a ``webhook_url`` and the request none, the job asks for the
        webhook, and the watcher polls it only as a backstop.
        """
        if self._hook_target is not None and request.webhook_url is None:
            request = attrs.evolve(request, webhook_url=self._hook_target)
        task_id = await self.client.submit(request)
        self.watcher.add(
            task_id, submitted_at=time.monotonic(), pushed=request.webhook_url is not None
        )
        return task_id

    def outcome(self, task_id: str) -> Outcome | None:
        """How a job the watcher followed ended (its result, or the error that ended its
        watch), while it is among the latest ``keep_results``; None otherwise."""
        return self._outcomes.get(task_id)

    def current(self, task_id: str) -> TaskEvent | None:
        """What the app knows of a task now, with no request to the service; None if nothing.

        A task it follows gives a ``"status"`` event with the last answer seen (``result``
        None until the first poll); one that ended (among the latest ``keep_results``) a
        ``"done"`` or ``"error"`` event. :func:`event_json` is its JSON view.
        """
        if task_id in self.watcher:
            return TaskEvent(task_id, "status", self.watcher.latest(task_id))
        return self._ended_event(task_id)

    def start_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``await func(*args)`` in the background, until it ends or the app shuts down.

        An exception is logged, never raised: one failed job of the background must not
        bring the application down.
        """
        self._task_group.start_soon(_logged, func, args)

    async def follow(self, task_id: str) -> AsyncGenerator[TaskEvent, None]:
        """Yield the task's events from now until it ends, with no request of its own.

        The first event is :meth:`current` (``"status"``, or ``"done"``/``"error"`` when it
        has ended already); then come the changes the app's watcher sees, up to ``"done"``
        or ``"error"``. A task whose end comes by webhook shows few changes: it is polled
        only as a backstop. A task the app does not know raises
        :class:`~hailuo_async.NotFoundError` before anything is sent (any number of
        followers cost the account nothing).
        """
        watcher = self.watcher
        with watcher.events() as events:
            first = self.current(task_id)
            if first is None:
                raise NotFoundError(f"task {task_id} is not one this app follows", status_code=404)
            yield first
            if first.kind != "status":
                return
            check_every = self.client.poll_policy.max_interval
            while True:
                event: TaskEvent | None = None
                with anyio.move_on_after(check_every):
                    event = await _next_for(events, task_id)
                if event is None:
                    # No news for a while: make sure the end was not missed (a full buffer).
                    if task_id in watcher:
                        continue
                    event = self._ended_event(task_id)
                if event is None:
                    return  # the watcher is closing
                yield event
                if event.kind in ("done", "error"):
                    return

    def _ended_event(self, task_id: str) -> TaskEvent | None:
        outcome = self._outcomes.get(task_id)
        if isinstance(outcome, TaskResult):
            return TaskEvent(task_id, "done", outcome)
        if isinstance(outcome, HailuoError):
            return TaskEvent(task_id, "error", error=outcome)
        return None

    async def _collect(self) -> None:
        # The keep-open watcher queues every ended job; keep the latest, drop the rest.
        while True:
            task_id, outcome = await self.watcher.next_outcome()
            self._outcomes[task_id] = outcome
            self._outcomes.move_to_end(task_id)
            while len(self._outcomes) > self._keep:
                self._outcomes.popitem(last=False)


async def _next_for(events: MemoryObjectReceiveStream[TaskEvent], task_id: str) -> TaskEvent | None:
    try:
        while True:
            event: TaskEvent = await events.receive()
            if event.task_id == task_id:
                return event
    except anyio.EndOfStream:
        return None


async def _logged(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        await func(*args)
    except Exception:  # background work must not take the application down
        logger.exception("background work %r failed", getattr(func, "__name__", func))


@asynccontextmanager
async def open_hailuo(
    client_factory: Callable[..., HailuoClient] = HailuoClient,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | bool | WebhookSecret | None = None,
    keep_results: int = 1024,
    coordination: str | Coordination | None = None,
) -> AsyncIterator[HailuoState]:
    """Open a client, a keep-open watcher and a task group; close them all on exit.

    For applications that compose their own lifespan: yield ``{STATE_KEY: state}`` from it.
    ``client_factory`` is called on entry, so ``HailuoClient()`` reads ``HAILUO_API_KEY``
    and ``HAILUO_BASE_URL`` when the application starts, not when it is imported.

    ``coordination`` (a ``postgresql://`` URL or a :class:`~hailuo_async.Coordination`)
    makes the application's workers share the account's limits and webhooks: it is passed
    to ``client_factory(coordination=...)``, so a factory of your own takes that keyword.

    With a ``webhook_url``, the jobs are sent with a secret as the URL's last path segment
    and the webhook route refuses deliveries without it (404). ``webhook_secret`` is the
    secret (a string, or a :class:`~hailuo_async.webhooks.WebhookSecret`); by default it is
    read from ``HAILUO_WEBHOOK_SECRET`` or, if unset, generated for this process (set the
    variable when several processes serve the URL); ``False`` turns the check off.
    """
    secret = WebhookSecret.resolve(webhook_secret) if webhook_url is not None else None
    if secret is not None:
        secret.mask_in_access_logs()
    client = client_factory() if coordination is None else client_factory(coordination=coordination)
    async with (
        client,
        client.watch(keep_open=True) as watcher,
        anyio.create_task_group() as task_group,
    ):
        state = HailuoState(
            client,
            watcher,
            task_group,
            webhook_url=webhook_url,
            webhook_secret=secret,
            keep_results=keep_results,
        )
        task_group.start_soon(state._collect)
        try:
            yield state
        finally:
            task_group.cancel_scope.cancel()


def hailuo_lifespan(
    client_factory: Callable[..., HailuoClient] = HailuoClient,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | bool | WebhookSecret | None = None,
    keep_results: int = 1024,
    coordination: str | Coordination | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)``: one client per application (:func:`open_hailuo`).

    Routes reach it through the :data:`Hailuo` dependency (or :func:`get_client`).
    ``coordination`` shares limits and webhooks across the workers, and the webhook secret
    is on by default (see :func:`open_hailuo`).
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with open_hailuo(
            client_factory,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            keep_results=keep_results,
            coordination=coordination,
        ) as state:
            yield {STATE_KEY: state}

    return lifespan


def get_hailuo(request: Request) -> HailuoState:
    """The dependency that gives a route the application's :class:`HailuoState`."""
    state = getattr(request.state, STATE_KEY, None)
    if not isinstance(state, HailuoState):
        raise RuntimeError(  # noqa: TRY004 - a setup mistake, not a bad argument
            "no HailuoState in the lifespan state: make the app with "
            "FastAPI(lifespan=hailuo_lifespan(...))"
        )
    return state


def get_client(request: Request) -> HailuoClient:
    """The dependency that gives a route the application's :class:`~hailuo_async.HailuoClient`."""
    return get_hailuo(request).client


Hailuo = Annotated[HailuoState, Depends(get_hailuo)]
"""A route parameter annotated ``Hailuo`` receives the application's :class:`HailuoState`."""


def result_json(result: TaskResult) -> dict[str, Any]:
    """A task's result as plain JSON for an HTTP answer (the video's presigned URL included)."""
    return result_summary(result)


def event_json(event: TaskEvent) -> dict[str, Any]:
    """What a :class:`~hailuo_async.TaskEvent` says of its task, as plain JSON.

    A result's :func:`result_json`; before the first poll, the task queued (just submitted:
    nothing else is known yet); for an error that ended its watch, ``done`` with the
    ``error``'s message.
    """
    if event.result is not None:
        data = result_json(event.result)
    else:
        data = {"task_id": event.task_id, "status": TaskStatus.QUEUED.value, "raw_status": None}
        data.update(done=False, ok=False)
    if event.error is not None:
        data.update(done=True, ok=False, error=str(event.error))
    return data


def webhook_router(
    *, path: str = "/hailuo/webhook", max_body_bytes: int = MAX_WEBHOOK_BYTES
) -> APIRouter:
    """A router with the webhook route: ``POST path/{secret}`` takes the gateway's events.

    A delivery whose secret (the last path segment, see :func:`open_hailuo`) is wrong or
    missing gets 404 before anything else; ``POST path`` itself answers only when the app
    runs without a secret. It answers 202 at once for any well-formed event (400 naming the
    field for garbage, 413 for a body over ``max_body_bytes``) and confirms the event in the
    lifespan's task group with one task-result GET (at most
    :data:`~hailuo_async.webhooks.MAX_CONCURRENT_CONFIRMATIONS` at once; past the waiting
    ones, 503, which the gateway retries). Replays and duplicates are ignored, so the route
    is idempotent.
    """
    router = APIRouter()

    with_secret = f"{path.rstrip('/')}/{{{SECRET_SEGMENT}}}"

    @router.post(path, status_code=202, include_in_schema=False)
    @router.post(with_secret, status_code=202, include_in_schema=False)
    async def receive_webhook(request: Request) -> JSONResponse:
        state = get_hailuo(request)
        given = request.path_params.get(SECRET_SEGMENT)
        expected = state.webhook_secret
        if not (given is None if expected is None else expected.matches(given)):
            # What FastAPI answers for a path it does not route: nothing tells a prober more.
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        declared = request.headers.get("content-length", "")
        body = await read_capped(
            request.stream(),
            declared=int(declared) if declared.isdigit() else None,
            max_bytes=max_body_bytes,
        )
        if body is None:
            return _error(413, "body", f"larger than {max_body_bytes} bytes")
        try:
            event = parse_webhook(body)
        except WebhookError as exc:
            return _error(400, exc.field, exc.message)
        confirm = admit_for(state.client, event)
        if confirm is Admission.BUSY:
            return _error(503, "body", BUSY_MESSAGE)
        if not isinstance(confirm, Admission):
            state.start_soon(confirm)
        return JSONResponse({"accepted": True}, status_code=202)

    return router


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(field, message), status_code=status)


# -- the request model and the documented errors -------------------------------------------

_DEFAULTS: dict[str, Any] = {field.name: field.default for field in attrs.fields(VideoRequest)}


def _is(field: str, value: object) -> dict[str, Any]:
    """A JSON-schema clause: ``field`` has ``value`` (a missing field has its default)."""
    given = {"properties": {field: {"const": value}}, "required": [field]}
    if value != _DEFAULTS[field]:
        return given
    return {"anyOf": [given, {"not": {"required": [field]}}]}


def _schema_extra(schema: dict[str, Any]) -> None:
    schema["description"] = (
        "One Hailuo-02 video job. Every rule is checked before anything is submitted."
    )
    # The duration-resolution pairs VideoRequest refuses, said as JSON schema, so that
    # generated clients (and schema-driven tests) never build one.
    refused = [
        {"not": {"allOf": [_is("duration", duration), _is("resolution", resolution)]}}
        for duration in DURATIONS
        for resolution in RESOLUTIONS
        if resolution not in RESOLUTIONS_BY_DURATION[duration]
    ]
    if refused:
        schema["allOf"] = refused


_IMAGE_DOC = (
    "An http(s) URL of a JPEG, PNG or WebP image, or a data:image/...;base64, URI "
    "(at most 20 MB decoded)."
)


class VideoRequestBody(BaseModel):
    """A video request as a JSON body: :class:`~hailuo_async.VideoRequest`'s fields and rules.

    A route that takes it gets FastAPI's 422 for a body that breaks a rule, before any job is
    submitted; :meth:`to_request` makes the ``VideoRequest``. The webhook is left out: it is
    the application's business (``open_hailuo(webhook_url=...)``), not its callers'.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="VideoRequest",
        json_schema_extra=_schema_extra,
    )

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the video shows.",
        examples=["a red fox trotting through fresh snow"],
    )
    image: str | None = Field(
        default=_DEFAULTS["image"],
        pattern=IMAGE_REFERENCE_PATTERN,
        max_length=IMAGE_REFERENCE_MAX_CHARS,
        description="The first frame. " + _IMAGE_DOC,
        examples=["https://example.com/first-frame.png"],
    )
    end_image: str | None = Field(
        default=_DEFAULTS["end_image"],
        pattern=IMAGE_REFERENCE_PATTERN,
        max_length=IMAGE_REFERENCE_MAX_CHARS,
        description="The last frame. " + _IMAGE_DOC,
    )
    duration: Duration = Field(
        default=_DEFAULTS["duration"],
        description="Length in seconds; 10-second videos are made at 768P only.",
        examples=[6],
    )
    resolution: Resolution = Field(default=_DEFAULTS["resolution"], examples=["1080P"])
    enable_prompt_expansion: bool = Field(
        default=_DEFAULTS["enable_prompt_expansion"],
        description="Let the service rewrite the prompt.",
    )
    fast_pretreatment: bool = Field(
        default=_DEFAULTS["fast_pretreatment"],
        description="Spend less time on prompt optimisation.",
    )

    def to_request(self, *, webhook_url: str | None = None) -> VideoRequest:
        """The :class:`~hailuo_async.VideoRequest`.

        A rule the schema cannot state (a lone surrogate in the prompt) raises FastAPI's
        :class:`~fastapi.exceptions.RequestValidationError`: a 422 naming the field.
        """
        try:
            return VideoRequest(**self.model_dump(), webhook_url=webhook_url)
        except InvalidRequestError as exc:
            error = {"type": "value_error", "loc": ("body", exc.field), "msg": exc.message}
            raise RequestValidationError([error]) from None


class ErrorDetail(BaseModel):
    """The body of an error answer: ``{"detail": "..."}``, as FastAPI's ``HTTPException``."""

    detail: str


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description}


_SERVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    429: _documented("The video service is rate limiting this app; retry after Retry-After."),
    502: _documented("The video service failed or could not be reached; retry later."),
}

SUBMIT_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The video service refused the request."),
    **_SERVICE_ERRORS,
}
"""``responses=`` for a route that submits a job: the statuses :func:`http_error` answers."""

TASK_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _documented("No such task."),
    **_SERVICE_ERRORS,
}
"""``responses=`` for a route that reads a task: the statuses :func:`http_error` answers."""


def http_error(exc: HailuoError) -> HTTPException:
    """The HTTP answer for a library error, with a status in the documented responses.

    400 when the service refused the request, 404 for an unknown task, 429 (with
    ``Retry-After``) when rate limited, 502 for any other failure of the service, including
    a submission whose outcome is unknown (the job may have started: do not simply resubmit).
    """
    if isinstance(exc, BadRequestError):
        return HTTPException(status_code=400, detail=exc.message)
    if isinstance(exc, NotFoundError):
        return HTTPException(status_code=404, detail=exc.message)
    if isinstance(exc, RateLimitError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after or 1)))}
        return HTTPException(status_code=429, detail="rate limited; retry later", headers=headers)
    if isinstance(exc, SubmissionUnknownError):
        return HTTPException(status_code=502, detail=str(exc))
    if isinstance(exc, APIError):
        return HTTPException(status_code=502, detail="the video service failed; retry later")
    return HTTPException(status_code=502, detail=f"the video service failed ({type(exc).__name__})")
