"""HailuoClient: submit jobs, poll them, wait for them; one connection pool per client."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._batch import JobStream, RequestSource
from ._callbacks import call_back
from ._decoding import DecodeError, decode_json, decode_submission, decode_task_result
from ._download import DEFAULT_MAX_BYTES, DownloadProgress, download_video
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SubmissionUnknownError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._limits import ActiveJobLimit, RequestKind, RequestLimiter
from ._models import TaskResult, TaskStatus, Video, VideoRequest
from ._polling import DurationStats, PollPolicy, PollSchedule
from ._retry import (
    RetryPolicy,
    UnknownSubmissionPolicy,
    parse_retry_after,
    poll_should_retry,
    submit_should_retry,
    with_retries,
)
from ._transport import Response, Timeouts, Transport
from ._watcher import EventCallback, TaskWatcher
from .journal import JobStore
from .webhooks import WebhookEvent, WebhookInbox

__all__ = [
    "DEFAULT_BASE_URL",
    "HailuoClient",
    "ProgressCallback",
    "SubmissionRecorder",
    "UnknownSubmissionPolicy",
]

DEFAULT_BASE_URL = "https://api.highwayapi.ai"
SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
TASK_RESULT_PATH = "/v3/async/task-result"

ProgressCallback = Callable[[TaskResult], "Awaitable[None] | None"]

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


class SubmissionRecorder(Protocol):
    """Keeps a durable record of one submission's POSTs (a batch's journal does)."""

    async def before_send(self) -> None:
        """The POST is about to leave: once this returns, the record must survive a crash."""

    async def not_sent(self) -> None:
        """The POST certainly started nothing (refused, or never sent)."""


class HailuoClient:
    """An asyncio client for the Hailuo-02 API.

    Use it as an async context manager, or call :meth:`aclose` when done. The key comes from
    ``api_key`` or the ``HAILUO_API_KEY`` variable; the base URL from ``base_url``, the
    ``HAILUO_BASE_URL`` variable, or the public gateway.

    Limits: ``max_concurrency`` caps HTTP requests in flight. ``requests_per_minute`` and
    ``max_active_jobs`` are the account's limits when known; left ``None``, they are
    discovered from the 429s met (see :mod:`hailuo_async._limits`). ``rate_window`` is the
    length of a rate-limit "minute" in seconds: only a time-scaled fake service needs another.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | Timeouts = 60.0,
        max_retries: int = 5,
        retry_policy: RetryPolicy | None = None,
        poll_policy: PollPolicy | None = None,
        max_concurrency: int = 64,
        requests_per_minute: float | None = None,
        max_active_jobs: int | None = None,
        rate_window: float = 60.0,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
        allow_insecure: bool = False,
        max_response_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._api_key = _check_api_key(api_key or os.environ.get("HAILUO_API_KEY"))
        self._base_url = _check_base_url(
            base_url or os.environ.get("HAILUO_BASE_URL") or DEFAULT_BASE_URL,
            allow_insecure=allow_insecure,
        )
        if max_retries < 0:
            raise InvalidRequestError("max_retries", "must be 0 or more")
        if max_concurrency < 1:
            raise InvalidRequestError("max_concurrency", "must be 1 or more")
        if on_unknown_submission not in ("raise", "resubmit"):
            raise InvalidRequestError("on_unknown_submission", "must be 'raise' or 'resubmit'")
        timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(total=timeout)
        self.max_retries = max_retries
        self.retry_policy = retry_policy or RetryPolicy()
        self.poll_policy = poll_policy or PollPolicy()
        self.on_unknown_submission: UnknownSubmissionPolicy = on_unknown_submission
        self.limiter = RequestLimiter(
            max_in_flight=max_concurrency,
            requests_per_minute=requests_per_minute,
            rate_window=rate_window,
            initial_pause=self.retry_policy.initial_delay,
            max_pause=self.retry_policy.max_retry_after,
        )
        self.active_jobs = ActiveJobLimit(known=max_active_jobs)
        self.durations = DurationStats()
        self._transport = Transport(
            timeouts=timeouts,
            max_connections=max_concurrency,
            max_response_bytes=max_response_bytes,
        )
        # Submission times of recent tasks: a 404 for one of them is the service catching up.
        self._recent_submissions: OrderedDict[str, float] = OrderedDict()
        # The open watchers, and the webhook events being confirmed for them.
        self._webhooks = WebhookInbox()

    def __repr__(self) -> str:
        return f"<HailuoClient base_url={self._base_url!r}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    async def __aenter__(self) -> HailuoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. The client can be used again; it then opens a new one."""
        await self._transport.aclose()

    # -- one request -----------------------------------------------------------------------

    async def _call_api(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        attempt: int,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """Send one request to the API (never elsewhere: only here is the key attached).

        ``before_send`` is awaited once the request's turn has come, just before it leaves.
        """
        url = self._base_url + path
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self.limiter.slot(kind):
            if before_send is not None:
                await before_send()
            response = await self._transport.send(
                method,
                url,
                headers=headers,
                body=body,
                params=params,
                log_path=path,
                attempt=attempt,
            )
        if response.status >= 300:
            # An error's body and headers end up in messages and logs: no echo of the key
            # may go with them. (A good answer is read as sent: masking could corrupt it.)
            response = _without_secret(response, self._api_key)
        if response.status == 429:
            retry_after = parse_retry_after(response.headers)
            # A 429 on a submit that reveals the cap on active jobs says nothing of the rate.
            active_cap = kind == "submit" and self.active_jobs.on_rate_limited()
            self.limiter.on_rate_limited(kind, retry_after, rate_exceeded=not active_cap)
            raise _status_error(response, method=method, url=url, retry_after=retry_after)
        if response.status >= 300:
            # Redirects are not followed (they could take the key elsewhere): an error too.
            raise _status_error(response, method=method, url=url)
        self.limiter.on_success(kind)
        return response

    # -- submit ----------------------------------------------------------------------------

    async def submit(
        self,
        request: VideoRequest,
        *,
        recorder: SubmissionRecorder | None = None,
        retry_rate_limited: bool = True,
    ) -> str:
        """Start a paid generation job and return its task id.

        Retried only where the job certainly did not start. When the request left but no
        readable answer came back, raises :class:`SubmissionUnknownError`, unless the client
        was made with ``on_unknown_submission="resubmit"``. ``recorder`` (a journal) is told
        just before each POST leaves and after each one the service certainly refused.
        ``retry_rate_limited=False`` hands a 429 back at once, for a caller that waits for a
        free place among its active jobs instead (as ``generate_many`` does).
        """
        if not isinstance(request, VideoRequest):
            raise TypeError(f"submit() takes a VideoRequest, not {type(request).__name__}")
        body = json.dumps(request.to_payload(), ensure_ascii=False).encode("utf-8")
        resubmit = self.on_unknown_submission == "resubmit"
        try:
            task_id = await with_retries(
                lambda attempt: self._submit_once(
                    request, body, attempt=attempt, raise_unknown=not resubmit, recorder=recorder
                ),
                self.retry_policy,
                max_retries=self.max_retries,
                should_retry=submit_should_retry(
                    resubmit_unknown=resubmit, retry_rate_limited=retry_rate_limited
                ),
            )
        except (APIConnectionError, APIResponseValidationError) as exc:
            if isinstance(exc, APIConnectionError) and not exc.request_sent:
                raise
            raise SubmissionUnknownError(request, reason=exc.message, resent=resubmit) from exc
        self._remember_submission(task_id)
        return task_id

    async def _submit_once(
        self,
        request: VideoRequest,
        body: bytes,
        *,
        attempt: int,
        raise_unknown: bool,
        recorder: SubmissionRecorder | None,
    ) -> str:
        try:
            response = await self._call_api(
                "POST",
                SUBMIT_PATH,
                kind="submit",
                attempt=attempt,
                body=body,
                before_send=recorder.before_send if recorder is not None else None,
            )
            try:
                return decode_submission(decode_json(response.body))
            except DecodeError as exc:
                raise self._unreadable(
                    response, "POST", SUBMIT_PATH, "the submission's answer", exc
                ) from exc
        except APIStatusError:
            # An answered refusal: nothing started.
            if recorder is not None:
                await recorder.not_sent()
            raise
        except (APIConnectionError, APIResponseValidationError) as exc:
            ambiguous = not isinstance(exc, APIConnectionError) or exc.request_sent
            if not ambiguous and recorder is not None:
                await recorder.not_sent()
            if ambiguous and raise_unknown:
                raise SubmissionUnknownError(request, reason=exc.message) from exc
            raise

    def _remember_submission(self, task_id: str) -> None:
        now = time.monotonic()
        self._recent_submissions[task_id] = now
        horizon = now - self.retry_policy.not_found_grace
        while self._recent_submissions:
            oldest_id, submitted = next(iter(self._recent_submissions.items()))
            if submitted >= horizon:
                break
            del self._recent_submissions[oldest_id]

    def _in_not_found_grace(self, task_id: str) -> bool:
        submitted = self._recent_submissions.get(task_id)
        return (
            submitted is not None
            and time.monotonic() - submitted < self.retry_policy.not_found_grace
        )

    # -- poll ------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskResult:
        """Poll a task once (retrying transient failures) and return what the service says."""
        _check_task_id(task_id)
        return await with_retries(
            lambda attempt: self._poll_once(task_id, attempt=attempt),
            self.retry_policy,
            max_retries=self.max_retries,
            should_retry=poll_should_retry(lambda: self._in_not_found_grace(task_id)),
        )

    async def _poll_once(self, task_id: str, *, attempt: int) -> TaskResult:
        response = await self._call_api(
            "GET", TASK_RESULT_PATH, kind="poll", attempt=attempt, params={"task_id": task_id}
        )
        received_at = datetime.now(timezone.utc)
        try:
            return decode_task_result(
                decode_json(response.body), task_id=task_id, received_at=received_at
            )
        except DecodeError as exc:
            raise self._unreadable(
                response, "GET", TASK_RESULT_PATH, f"the task result for {task_id}", exc
            ) from exc

    def _unreadable(
        self, response: Response, method: str, path: str, subject: str, exc: DecodeError
    ) -> APIResponseValidationError:
        return APIResponseValidationError(
            f"{subject} cannot be read: {exc}",
            status_code=response.status,
            body=_without_secret(response, self._api_key).body[:2000].decode("utf-8", "replace"),
            method=method,
            url=self._base_url + path,
        )

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TaskResult:
        """Poll until the task ends and return its result.

        Raises :class:`TaskFailedError` if it failed and :class:`WaitTimeoutError` if it has
        not ended after ``timeout`` seconds (the job goes on at the service).
        ``on_progress`` is called (or awaited) with each answer whose status or progress moved.
        """
        return await self._wait(
            task_id, timeout=timeout, on_progress=on_progress, submitted_at=None
        )

    async def generate(
        self,
        request: VideoRequest,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TaskResult:
        """Submit a job and wait for it to end; see :meth:`submit` and :meth:`wait`."""
        task_id = await self.submit(request)
        return await self._wait(
            task_id, timeout=timeout, on_progress=on_progress, submitted_at=time.monotonic()
        )

    async def _wait(
        self,
        task_id: str,
        *,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        submitted_at: float | None,
    ) -> TaskResult:
        _check_task_id(task_id)
        latest: list[TaskResult] = []  # the last answer, still there when the timeout strikes
        with anyio.move_on_after(timeout) as scope:
            await self._poll_until_done(task_id, on_progress, submitted_at, latest)
        last = latest[0] if latest else None
        if scope.cancelled_caught or last is None or not last.is_done:
            assert timeout is not None
            raise WaitTimeoutError(task_id, last, timeout)
        if last.status is TaskStatus.FAILED:
            raise TaskFailedError(last)
        return last

    async def _poll_until_done(
        self,
        task_id: str,
        on_progress: ProgressCallback | None,
        submitted_at: float | None,
        latest: list[TaskResult],
    ) -> TaskResult:
        schedule = PollSchedule(
            self.poll_policy, history=self.durations, timed=submitted_at is not None
        )
        started = submitted_at if submitted_at is not None else time.monotonic()
        if submitted_at is not None:
            await anyio.sleep(schedule.first_delay())
        previous: TaskResult | None = None
        while True:
            result = await self.get_task(task_id)
            latest[:] = [result]
            if on_progress is not None and _moved(previous, result):
                await call_back(on_progress, result)
            previous = result
            if result.is_done:
                schedule.ended(time.monotonic() - started)
                return result
            await anyio.sleep(schedule.next_delay(result, elapsed=time.monotonic() - started))

    # -- push ------------------------------------------------------------------------------

    async def handle_webhook(
        self, body: bytes | str | Mapping[str, Any] | WebhookEvent
    ) -> TaskResult | None:
        """Take a webhook event the gateway pushed; return the result it delivered, if any.

        ``body`` is the request body as received (or already decoded). A body that is not an
        event of the documented shape raises :class:`~hailuo_async.webhooks.WebhookError`.
        Events of other types, events that do not claim an end, task ids no open watcher is
        watching (unknown, or ended already) and duplicates are ignored: None. Otherwise the
        event is confirmed with one task-result GET (the body is never trusted: no signature
        is documented) and the confirmed result goes to every open watcher watching the id.
        A failed confirmation is logged and ignored; the watchers' backstop polls catch up.
        """
        return await self._webhooks.handle(self, body)

    # -- many ------------------------------------------------------------------------------

    def watch(
        self,
        task_ids: Iterable[str] = (),
        *,
        on_event: EventCallback | None = None,
        keep_open: bool = False,
        poll_policy: PollPolicy | None = None,
    ) -> TaskWatcher:
        """A watcher over ``task_ids`` (more can be added); use it with ``async with``.

        ``async for result in watcher`` yields each task's TaskResult as it ends.
        """
        return TaskWatcher(
            self, task_ids, on_event=on_event, keep_open=keep_open, poll_policy=poll_policy
        )

    def generate_many(
        self,
        requests: RequestSource,
        *,
        max_active_jobs: int | None = None,
        on_event: EventCallback | None = None,
        journal: JobStore | str | os.PathLike[str] | None = None,
        download_to: str | os.PathLike[str] | None = None,
        retry_failed: bool = False,
    ) -> JobStream:
        """Run a batch: submit each request, poll the jobs, yield each JobOutcome as it ends.

        ``requests`` (an iterable or async iterable of VideoRequest, or of ``(key,
        VideoRequest)`` pairs) is read lazily. At most ``max_active_jobs`` jobs are submitted
        and unfinished at once; without it, the client's limit (given, or discovered from
        429s) applies. One failed job never stops the others.

        ``journal`` (a SQLite file path, or an open :class:`~hailuo_async.journal.JobStore`)
        makes the batch durable and resumable: run it again and finished jobs are skipped,
        submitted ones watched again, none paid twice; ``retry_failed`` submits failed ones
        again. ``download_to`` downloads each video into that folder as its job ends.
        Use it as ``async with client.generate_many(...) as outcomes``.
        """
        active_jobs = (
            self.active_jobs if max_active_jobs is None else ActiveJobLimit(known=max_active_jobs)
        )
        return JobStream(
            self,
            requests,
            active_jobs=active_jobs,
            on_event=on_event,
            journal=journal,
            download_to=download_to,
            retry_failed=retry_failed,
        )

    # -- downloads -------------------------------------------------------------------------

    async def download(
        self,
        source: TaskResult | Video,
        dest: str | os.PathLike[str],
        *,
        task_id: str | None = None,
        progress: DownloadProgress | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verify: bool = True,
    ) -> Path:
        """Download a finished task's video to ``dest`` (a file, or a folder to name it in).

        The file appears complete or not at all; the storage host never gets the API key;
        an expired URL is renewed by polling the task again. ``verify`` checks the MP4
        structure. Raises :class:`DownloadError`.
        """
        return await download_video(
            self._transport.session,
            source,
            dest,
            task_id=task_id,
            refresh=self.get_task,
            progress=progress,
            max_bytes=max_bytes,
            retry_policy=self.retry_policy,
            max_retries=self.max_retries,
            verify=verify,
            limiter=self.limiter,
        )


def _moved(previous: TaskResult | None, result: TaskResult) -> bool:
    return (
        previous is None
        or previous.status is not result.status
        or previous.progress_percent != result.progress_percent
    )


def _without_secret(response: Response, secret: str) -> Response:
    """The response with any echo of the API key masked, so no error or log can carry it."""
    token = secret.encode("utf-8")
    if token not in response.body and not any(secret in v for v in response.headers.values()):
        return response
    headers = CIMultiDict(
        (name, value.replace(secret, "[redacted]")) for name, value in response.headers.items()
    )
    return attrs.evolve(
        response,
        headers=CIMultiDictProxy(headers),
        body=response.body.replace(token, b"[redacted]"),
    )


def _status_error(
    response: Response, *, method: str, url: str, retry_after: float | None = None
) -> APIStatusError:
    text = response.body.decode("utf-8", "replace")
    body: object = text
    message = ""
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(text)
    if isinstance(body, dict):
        for key in ("message", "reason", "error", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                message = value
                break
    summary = f"{response.status} from {method} {urlsplit(url).path}"
    if message:
        summary = f"{summary}: {message[:500]}"
    kwargs = {
        "status_code": response.status,
        "body": body,
        "headers": response.headers,
        "method": method,
        "url": url,
    }
    if response.status == 429:
        return RateLimitError(summary, retry_after=retry_after, **kwargs)
    if response.status >= 500:
        return InternalServerError(summary, **kwargs)  # type: ignore[arg-type]
    error_class = _STATUS_ERRORS.get(response.status, APIStatusError)
    return error_class(summary, **kwargs)  # type: ignore[arg-type]


def _check_api_key(api_key: str | None) -> str:
    if not api_key:
        raise InvalidRequestError(
            "api_key", "no API key: pass api_key=... or set the HAILUO_API_KEY variable"
        )
    if not isinstance(api_key, str) or any(ch.isspace() or not ch.isprintable() for ch in api_key):
        # Never echo the value: it is a secret even when malformed.
        raise InvalidRequestError(
            "api_key", "must be a string without spaces or control characters"
        )
    return api_key


def _check_base_url(base_url: str, *, allow_insecure: bool) -> str:
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError:
        raise InvalidRequestError("base_url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not echoed: a malformed URL may still hold credentials.
        raise InvalidRequestError("base_url", "must be an http(s) URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequestError("base_url", "must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise InvalidRequestError(
            "base_url",
            "plain http would send the API key unencrypted; use https, or pass allow_insecure=True",
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_task_id(task_id: object) -> None:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidRequestError("task_id", "must be a non-empty string")
    if len(task_id) > 256 or any(not ch.isprintable() for ch in task_id):
        raise InvalidRequestError("task_id", "must be at most 256 printable characters")
