"""The gateway's dialect (API.md): its two paths, JSON errors and 429s, and its webhook events."""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from aiohttp import web

from ._service import FakeService, Handler, RateLimited
from ._stats import bump
from ._tasks import FAILED, SUCCEED, FakeTask, eta_factor, new_task_id, result_body
from ._validation import RequestError, parse_submit_body

__all__ = ["RESULT_PATH", "SUBMIT_PATH", "WEBHOOK_EVENT_TYPE", "GatewayDialect"]

SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
RESULT_PATH = "/v3/async/task-result"
WEBHOOK_EVENT_TYPE = "ASYNC_TASK_RESULT"
_WEBHOOK_HEADERS = {"Content-Type": "application/json", "User-Agent": "fake-hailuo-webhook/1"}


class GatewayDialect:
    """Submit and task-result endpoints, answering as API.md documents."""

    def __init__(self, service: FakeService) -> None:
        self._service = service

    def routes(self) -> list[web.RouteDef]:
        """POST the submission, GET the task result."""
        return [web.post(SUBMIT_PATH, self._submit), web.get(RESULT_PATH, self._result)]

    def new_task_id(self, rng: random.Random) -> str:
        """A UUID4-shaped id."""
        return new_task_id(rng)

    def status_of(self, task: FakeTask, now: float) -> str:
        """A ``TASK_STATUS_*`` value."""
        return task.status_at(now)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refusals as the gateway's JSON errors, with their HTTP status."""
        try:
            return await handler(request)
        except RateLimited as refusal:
            return self._too_many(refusal)
        except RequestError as error:
            if error.status in (400, 413):
                bump(self._service.stats.rejected_by_field, error.field)
            response = web.json_response(error.body(), status=error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        except web.HTTPException as error:
            # Unknown paths and methods still answer in the gateway's JSON style.
            reason = error.reason.upper().replace(" ", "_")
            body = {"code": error.status, "reason": reason, "message": error.text or ""}
            response = web.json_response(body, status=error.status)
            if "Allow" in error.headers:
                response.headers["Allow"] = error.headers["Allow"]
            return response

    def _too_many(self, refusal: RateLimited) -> web.Response:
        body = {
            "code": 429,
            "reason": "RATE_LIMIT_EXCEEDED",
            "message": refusal.message,
            "metadata": {},
        }
        response = web.json_response(body, status=429)
        if self._service.config.retry_after:
            response.headers["Retry-After"] = self._retry_after_value(refusal.wait)
        return response

    def _retry_after_value(self, wait_real: float) -> str:
        if self._service.config.time_scale == 1.0:
            return str(max(1, math.ceil(wait_real)))
        # A scaled service waits fractions of a second; say so to the millisecond.
        return f"{max(0.001, math.ceil(wait_real * 1000.0) / 1000.0):.3f}"

    # -- endpoints ------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        service.stats.submission_attempts += 1
        key = service.admit(request)
        submission = parse_submit_body(
            await service.read_body(request), max_image_bytes=service.config.max_image_bytes
        )
        service.check_active_cap(key)
        fault, early = service.strike(request, submit=True)
        if early is not None:
            return early
        task = service.create_task(key, submission)
        return await service.answer_created(request, task, fault, {"task_id": task.task_id})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        service.stats.polls_total += 1
        key = service.admit(request)
        unknown = RequestError(404, "task_id", "task not found", "NOT_FOUND")
        task = service.polled_task(request, key, unknown=unknown)
        fault, early = service.strike(request, submit=False)
        if early is not None:
            return early
        return await service.answer(fault, self._result_body(task, time.monotonic()))

    def _result_body(self, task: FakeTask, now: float) -> dict[str, Any]:
        service = self._service
        config = service.config
        succeeded = now >= task.finished_at and not task.fails
        return result_body(
            task,
            now,
            eta_noise=eta_factor(service.eta_rng, config.eta_error),
            forecasts=config.forecasts,
            wall_offset=service.wall_offset,
            time_scale=config.time_scale,
            videos=[service.storage.mint(task.task_id, now)] if succeeded else [],
            profile=config.profile,
        )

    # -- webhooks (API.md section 3) -----------------------------------------------------

    def task_created(self, task: FakeTask, now: float) -> None:
        """test_mode: one simulated event at once, and none when the task really ends."""
        hook = _webhook_of(task)
        if hook is not None and hook[1] is not None:
            self._send(hook[0], self._webhook_body(task, now, force_status=hook[1]))

    def task_ended(self, task: FakeTask) -> None:
        """The task's ASYNC_TASK_RESULT event, if it asked for one."""
        hook = _webhook_of(task)
        if hook is not None and hook[1] is None:
            self._send(hook[0], self._webhook_body(task, time.monotonic()))

    def _send(self, url: str, body: bytes) -> None:
        """Deliver one event in the background: maybe dropped, maybe twice, with retries."""
        service = self._service
        for _ in range(service.webhook_copies()):
            service.spawn(self._deliver(url, body))

    async def _deliver(self, url: str, body: bytes) -> None:
        await self._service.deliver_webhook(url, body, _WEBHOOK_HEADERS)

    def _webhook_body(
        self, task: FakeTask, now: float, *, force_status: str | None = None
    ) -> bytes:
        """The ASYNC_TASK_RESULT event: the task-result body, its `extra` naming the webhook."""
        if force_status is None:
            payload = self._result_body(task, now)
        else:
            payload = self._result_body(task, max(now, task.finished_at))
            payload["task"].update(
                status=force_status,
                eta=0,
                progress_percent=100 if force_status == SUCCEED else 0,
                reason="" if force_status == SUCCEED else (task.reason or "test mode: simulated"),
            )
            payload["videos"] = (
                [self._service.storage.mint(task.task_id, now)] if force_status == SUCCEED else []
            )
        extra = task.request.extra or {}
        payload["extra"]["webhook"] = extra.get("webhook")
        event = {"event_type": WEBHOOK_EVENT_TYPE, "payload": payload}
        return json.dumps(event, ensure_ascii=False).encode("utf-8")


def _webhook_of(task: FakeTask) -> tuple[str, str | None] | None:
    """The task's webhook URL and, in test mode, the status its simulated event reports."""
    webhook = (task.request.extra or {}).get("webhook")
    if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
        return None
    test_mode = webhook.get("test_mode")
    if isinstance(test_mode, dict) and test_mode.get("enabled") is True:
        status = test_mode.get("return_task_status")
        return webhook["url"], status if status in (SUCCEED, FAILED) else SUCCEED
    return webhook["url"], None
