"""A small video service on FastAPI: submit jobs, read their status, stream their progress.

Run it (``pip install 'hailuo-async[fastapi]'``)::

    export HAILUO_API_KEY=...                      # the Hailuo key
    export HAILUO_BASE_URL=...                     # optional: another gateway, or a fake
    export HAILUO_WEBHOOK_URL=https://my.host/hailuo/webhook   # optional: push delivery
    uvicorn examples.fastapi_app:app --timeout-graceful-shutdown 5

Routes:

- ``POST /videos`` takes a JSON request (``prompt``, ``image``, ``end_image``, ``duration``,
  ``resolution``, ``enable_prompt_expansion``, ``fast_pretreatment``), checks it with the
  library's :class:`~hailuo_async.VideoRequest` (422 naming the field, and nothing is
  submitted, when it breaks a rule), submits it and answers 202 ``{"task_id": ...}``.
- ``GET /videos/{task_id}`` answers the task's status (one task-result GET).
- ``GET /videos/{task_id}/events`` streams the task's progress as server-sent events until
  it ends (events ``status``, ``progress``, ``done`` and ``error``, each with a JSON body).
- ``POST /hailuo/webhook`` takes the gateway's webhook events (when ``HAILUO_WEBHOOK_URL``
  points here): 202 at once, confirmed in the background, idempotent.

Try it against the fake service: ``python -m hailuo_async.testing --port 8000`` in one shell,
then ``HAILUO_API_KEY=fake-hailuo-key HAILUO_BASE_URL=http://127.0.0.1:8000 uvicorn
examples.fastapi_app:app`` in another.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse

from hailuo_async import (
    APIError,
    BadRequestError,
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    SubmissionUnknownError,
    TaskEvent,
    VideoRequest,
)
from hailuo_async.fastapi import STATE_KEY, Hailuo, open_hailuo, result_json, webhook_router

WEBHOOK_PATH = "/hailuo/webhook"
# What a caller may set; the webhook is the service's business, not the caller's.
REQUEST_FIELDS = frozenset(
    {
        "prompt",
        "image",
        "end_image",
        "duration",
        "resolution",
        "enable_prompt_expansion",
        "fast_pretreatment",
    }
)


def make_client() -> HailuoClient:
    """The app's one client; ``HailuoClient()`` reads HAILUO_API_KEY and HAILUO_BASE_URL."""
    return HailuoClient()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """One client, watcher and task group for the app's life; the variables are read now."""
    webhook_url = os.environ.get("HAILUO_WEBHOOK_URL") or None
    async with open_hailuo(make_client, webhook_url=webhook_url) as hailuo:
        yield {STATE_KEY: hailuo}


app = FastAPI(title="Hailuo video service", lifespan=lifespan)
app.include_router(webhook_router(path=WEBHOOK_PATH))


def _invalid(field: str, message: str) -> HTTPException:
    # The shape of FastAPI's own validation errors, so clients read both alike.
    detail = [{"type": "value_error", "loc": ["body", field], "msg": message}]
    return HTTPException(status_code=422, detail=detail)


def _video_request(body: dict[str, Any]) -> VideoRequest:
    for field in body:
        if field not in REQUEST_FIELDS:
            raise _invalid(field, "unknown field")
    if "prompt" not in body:
        raise _invalid("prompt", "field required")
    try:
        return VideoRequest(**body)
    except InvalidRequestError as exc:
        raise _invalid(exc.field, exc.message) from None


def _service_error(exc: HailuoError) -> HTTPException:
    if isinstance(exc, BadRequestError):
        return HTTPException(status_code=400, detail=exc.message)
    if isinstance(exc, RateLimitError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after or 1)))}
        return HTTPException(status_code=429, detail="rate limited; retry later", headers=headers)
    if isinstance(exc, SubmissionUnknownError):
        # The job may have started: the caller must not simply resubmit.
        return HTTPException(status_code=502, detail=str(exc))
    if isinstance(exc, APIError):
        return HTTPException(status_code=502, detail="the video service failed; retry later")
    return HTTPException(status_code=500, detail=type(exc).__name__)


@app.post("/videos", status_code=202)
async def create_video(hailuo: Hailuo, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Check the request with the library's rules, submit it, answer its task id."""
    request = _video_request(body)
    try:
        task_id = await hailuo.submit(request)
    except HailuoError as exc:
        raise _service_error(exc) from None
    return JSONResponse({"task_id": task_id}, status_code=202)


@app.get("/videos/{task_id}")
async def video_status(task_id: str, hailuo: Hailuo) -> dict[str, Any]:
    """The task's status now."""
    try:
        result = await hailuo.client.get_task(task_id)
    except NotFoundError:
        raise HTTPException(status_code=404, detail=f"no task {task_id}") from None
    except InvalidRequestError as exc:
        raise _invalid(exc.field, exc.message) from None
    except HailuoError as exc:
        raise _service_error(exc) from None
    return result_json(result)


def _sse(event: TaskEvent) -> str:
    if event.result is not None:
        data: dict[str, Any] = result_json(event.result)
    else:
        data = {"task_id": event.task_id, "error": str(event.error)}
    return f"event: {event.kind}\ndata: {json.dumps(data)}\n\n"


@app.get("/videos/{task_id}/events")
async def video_events(task_id: str, hailuo: Hailuo) -> StreamingResponse:
    """Server-sent events: the task's state now, then each change, until it ends."""
    events = hailuo.follow(task_id)
    try:
        first = await events.__anext__()
    except NotFoundError:
        await events.aclose()
        raise HTTPException(status_code=404, detail=f"no task {task_id}") from None
    except InvalidRequestError as exc:
        await events.aclose()
        raise _invalid(exc.field, exc.message) from None
    except HailuoError as exc:
        await events.aclose()
        raise _service_error(exc) from None

    async def stream() -> AsyncIterator[str]:
        try:
            yield _sse(first)
            async for event in events:
                yield _sse(event)
        finally:
            await events.aclose()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
