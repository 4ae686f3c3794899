"""A small video service on FastAPI: submit jobs, read their status, stream their progress.

Run it (``pip install -e '.[fastapi]'`` in a checkout)::

    export HAILUO_API_KEY=...                      # the Hailuo key
    export HAILUO_BASE_URL=...                     # optional: another gateway, or a fake
    export HAILUO_WEBHOOK_URL=https://my.host/hailuo/webhook   # optional: push delivery
    export HAILUO_WEBHOOK_SECRET=...               # its secret, the same for every worker
    export VIDEO_APP_TOKEN=...                     # the bearer token callers must send
    uvicorn examples.fastapi_app:app --timeout-graceful-shutdown 5

Routes (their OpenAPI document is at ``/docs`` and ``/openapi.json``); the ``/videos``
routes answer 401 unless the request carries ``Authorization: Bearer $VIDEO_APP_TOKEN``
(every request, when the variable is unset). Swap :func:`authenticated` for your own
scheme (OAuth2, API keys, sessions), but keep one: every job is paid for.

- ``POST /videos`` takes a JSON :class:`~hailuo_async.fastapi.VideoRequestBody` (``prompt``,
  ``image``, ``end_image``, ``duration``, ``resolution``, ``enable_prompt_expansion``,
  ``fast_pretreatment``): 422 naming the field, and nothing submitted, when it breaks a rule;
  else it is submitted and the answer is 202 ``{"task_id": ...}``.
- ``GET /videos/{task_id}`` answers the task's status from what the app's watcher holds
  (no request to the service); 404 for a task this app did not submit.
- ``GET /videos/{task_id}/events`` streams the task's progress as server-sent events until
  it ends (events ``status``, ``progress``, ``done`` and ``error``, each with a JSON body);
  404, before any stream, for a task this app did not submit.
- ``POST /hailuo/webhook/{secret}`` takes the gateway's webhook events (when
  ``HAILUO_WEBHOOK_URL`` points here; the jobs are sent with the secret appended): 404 for
  a wrong or missing secret, else 202 at once, confirmed in the background, idempotent.
  The gateway sends no bearer token: the secret in the URL is its authentication.

Errors from the video service are answered 400, 429 or 502, as each route's OpenAPI entry
says. Reads cost the account nothing, however many: the app answers them from its watcher
(every task it follows, and the latest ``keep_results`` to end).

Several workers (``uvicorn --workers 4``, replicas, machines) share the account's limits
and the webhooks when they are given one PostgreSQL database (``pip install -e
'.[fastapi,postgres]'``)::

    export HAILUO_COORDINATION=postgresql://app@db.internal:5432/hailuo

Then every worker paces its requests and counts its active jobs with all the others, and
a webhook that lands on any worker ends the watch (and the event stream) of the worker
that submitted the job. Without the variable, each worker keeps its limits in memory.
Each worker answers reads for the tasks it submitted: route a task's reads to the worker
that answered its POST, or keep what you show in your own database.

Try it against the fake service, in two shells from the checkout (the fake on port 8001,
the app on uvicorn's 8000; ``--time-scale 0.02`` makes a job take seconds, not minutes, and
``HAILUO_TIME_SCALE`` tells the app's client to poll at the same pace)::

    hailuo fake-server --port 8001 --time-scale 0.02

    HAILUO_API_KEY=fake-hailuo-key HAILUO_BASE_URL=http://127.0.0.1:8001 \
    HAILUO_TIME_SCALE=0.02 VIDEO_APP_TOKEN=try-it-token \
    uvicorn examples.fastapi_app:app --port 8000

then, in a third::

    curl -s -X POST localhost:8000/videos -H 'authorization: Bearer try-it-token' \
        -H 'content-type: application/json' \
        -d '{"prompt": "a red fox trotting through fresh snow"}'
    curl -sN localhost:8000/videos/TASK_ID/events -H 'authorization: Bearer try-it-token'

``tests/test_examples.py`` runs these steps as written.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from hailuo_async import HailuoClient, HailuoError, Limits, PollPolicy, TaskEvent
from hailuo_async.fastapi import (
    STATE_KEY,
    SUBMIT_ERROR_RESPONSES,
    TASK_ERROR_RESPONSES,
    ErrorDetail,
    Hailuo,
    VideoRequestBody,
    event_json,
    http_error,
    open_hailuo,
    webhook_router,
)

WEBHOOK_PATH = "/hailuo/webhook"


def make_client(*, coordination: str | None = None) -> HailuoClient:
    """The app's one client; ``HailuoClient()`` reads HAILUO_API_KEY and HAILUO_BASE_URL.

    HAILUO_TIME_SCALE (real seconds per service second) is only for a time-scaled fake:
    the client then polls at the fake's pace.
    """
    scale = float(os.environ.get("HAILUO_TIME_SCALE") or 1.0)
    if scale == 1.0:
        return HailuoClient(coordination=coordination)
    return HailuoClient(
        poll_policy=PollPolicy().scaled(scale),
        limits=Limits(rate_window=60.0 * scale),
        coordination=coordination,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """One client, watcher and task group for the app's life; the variables are read now."""
    webhook_url = os.environ.get("HAILUO_WEBHOOK_URL") or None
    coordination = os.environ.get("HAILUO_COORDINATION") or None
    async with open_hailuo(
        make_client, webhook_url=webhook_url, coordination=coordination
    ) as hailuo:
        yield {STATE_KEY: hailuo}


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_bearer = HTTPBearer(auto_error=False, description="The app's token (VIDEO_APP_TOKEN).")


def authenticated(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The /videos routes' authentication: ``Authorization: Bearer $VIDEO_APP_TOKEN``.

    Every job is paid for, and every read could be too: no route of the app is open to
    anyone. Unset, the variable lets nobody in (compared in constant time).
    """
    expected = os.environ.get("VIDEO_APP_TOKEN", "")
    given = credentials.credentials if credentials is not None else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="a bearer token is needed", headers=_CHALLENGE)


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "No bearer token, or a wrong one."}
}

app = FastAPI(title="Hailuo video service", lifespan=lifespan)
app.include_router(webhook_router(path=WEBHOOK_PATH))
videos = APIRouter(dependencies=[Depends(authenticated)], responses=AUTH_RESPONSES)

# Task ids as the service makes them: URL-safe, printable, at most 256 characters.
TaskId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9._~-]{1,256}$")]
EVENTS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events until the task ends.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class TaskAccepted(BaseModel):
    """The answer to a submission."""

    task_id: str


@videos.post("/videos", status_code=202, responses=SUBMIT_ERROR_RESPONSES)
async def create_video(body: VideoRequestBody, hailuo: Hailuo) -> TaskAccepted:
    """Check the request with the library's rules, submit it, answer its task id."""
    request = body.to_request()
    try:
        task_id = await hailuo.submit(request)
    except HailuoError as exc:
        raise http_error(exc) from None
    return TaskAccepted(task_id=task_id)


@videos.get("/videos/{task_id}", responses=TASK_ERROR_RESPONSES)
async def video_status(task_id: TaskId, hailuo: Hailuo) -> dict[str, Any]:
    """The task's status now, as the app's watcher last saw it: no request to the service."""
    known = hailuo.current(task_id)
    if known is None:
        raise HTTPException(status_code=404, detail="no such task")
    return event_json(known)


def _sse(event: TaskEvent) -> str:
    return f"event: {event.kind}\ndata: {json.dumps(event_json(event))}\n\n"


@videos.get(
    "/videos/{task_id}/events",
    response_class=StreamingResponse,
    responses={**EVENTS_RESPONSE, **TASK_ERROR_RESPONSES},
)
async def video_events(task_id: TaskId, hailuo: Hailuo) -> StreamingResponse:
    """Server-sent events: the task's state now, then each change, until it ends."""
    events = hailuo.follow(task_id)
    try:
        first = await events.__anext__()
    except HailuoError as exc:
        await events.aclose()
        raise http_error(exc) from None

    async def stream() -> AsyncIterator[str]:
        try:
            yield _sse(first)
            async for event in events:
                yield _sse(event)
        finally:
            await events.aclose()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


app.include_router(videos)
