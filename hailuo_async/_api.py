"""The HTTP/API layer: one submission, one task-result GET, status codes mapped to errors.

Only here is the API key attached to a request, and only here are error answers masked of
any echo of it. Every request passes through the shared :class:`RequestLimits`; a 429 on a
submission made under an active-job limit teaches that limit (and only that one).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import urlsplit

import attrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._decoding import DecodeError, decode_json, decode_submission, decode_task_result
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
)
from ._limits import ActiveJobs, RequestKind, RequestLimiter, RequestLimits
from ._models import TaskResult, VideoRequest
from ._retry import (
    RetryPolicy,
    UnknownSubmissionPolicy,
    parse_retry_after,
    poll_should_retry,
    retry_after,
    submit_should_retry,
)
from ._task_ids import check_task_id, is_plain_task_id
from ._transport import Response, Transport

__all__ = [
    "DEFAULT_BASE_URL",
    "HailuoAPI",
    "SubmissionRecorder",
    "check_api_key",
    "check_base_url",
]

DEFAULT_BASE_URL = "https://api.highwayapi.ai"
SUBMIT_PATH = "/v3/async/minimax-hailuo-02"
TASK_RESULT_PATH = "/v3/async/task-result"

# Made once: json.dumps with options builds a new encoder on every call.
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False)

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


class HailuoAPI:
    """The two endpoints, with retries, limits, key masking and typed errors.

    ``api_key`` and ``base_url`` must have passed :func:`check_api_key` and
    :func:`check_base_url`.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        transport: Transport,
        limiter: RequestLimits,
        retry_policy: RetryPolicy,
        max_retries: int,
        on_unknown_submission: UnknownSubmissionPolicy,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url
        self._transport = transport
        self.limiter = limiter
        # The in-process limiter lends a free place without a coroutine (see _call_api).
        self._local_limiter = limiter if type(limiter) is RequestLimiter else None
        self.retry_policy = retry_policy
        self.max_retries = max_retries
        self.on_unknown_submission: UnknownSubmissionPolicy = on_unknown_submission
        # Made once: aiohttp copies a request's headers, so one dict serves every request.
        self._get_headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._post_headers = {**self._get_headers, "Content-Type": "application/json"}
        # Parsed once: aiohttp takes a URL as it is, where a string is parsed per request.
        self._urls = {path: URL(base_url + path) for path in (SUBMIT_PATH, TASK_RESULT_PATH)}
        # Submission times of recent tasks: a 404 for one of them is the service catching up.
        self._recent_submissions: OrderedDict[str, float] = OrderedDict()

    async def _call_api(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        attempt: int,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        target: URL | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        active_jobs: ActiveJobs | None = None,
    ) -> Response:
        """Send one request to the API (never elsewhere: only here is the key attached).

        ``target`` is the whole URL when already made (``path`` with its query): no
        ``params`` then. ``before_send`` is awaited once the request's turn has come, just
        before it leaves. ``active_jobs`` is the limit a submission was made under: it alone
        learns from a 429.
        """
        headers = self._get_headers if body is None else self._post_headers
        url: URL | str | None = target if target is not None else self._urls.get(path)
        if url is None:
            url = self.base_url + path
        local = self._local_limiter
        if local is not None and local.take_now(kind):
            # A free place, taken at once: the same as the slot below, less two coroutines.
            try:
                if before_send is not None:
                    await before_send()
                response = await self._transport.send(
                    method, url, headers, body, params, log_path=path, attempt=attempt
                )
            finally:
                local.give_back()
        else:
            async with self.limiter.slot(kind):
                if before_send is not None:
                    await before_send()
                response = await self._transport.send(
                    method, url, headers, body, params, log_path=path, attempt=attempt
                )
        if response.status < 300:
            self.limiter.on_success(kind)
            return response
        # An error's body and headers end up in messages and logs: no echo of the key may go
        # with them. (A good answer is read as sent: masking could corrupt it.)
        response = _without_secret(response, self._api_key)
        where = self.base_url + path  # the query left out, as aiohttp's params were
        if response.status == 429:
            retry_after = parse_retry_after(response.headers)
            # A 429 on a submit that reveals the cap on active jobs says nothing of the rate.
            # A submission made under no active-job limit teaches none: its 429 is put down
            # to the cap too (pausing submits only); the many polls reveal a rate limit.
            active_cap = kind == "submit" and (active_jobs is None or active_jobs.on_rate_limited())
            self.limiter.on_rate_limited(kind, retry_after, rate_exceeded=not active_cap)
            raise _status_error(response, method=method, url=where, retry_after=retry_after)
        # Redirects are not followed (they could take the key elsewhere): an error too.
        raise _status_error(response, method=method, url=where)

    async def aclose(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        await self._transport.aclose()

    # -- submit ----------------------------------------------------------------------------

    async def submit(
        self,
        request: VideoRequest,
        *,
        recorder: SubmissionRecorder | None = None,
        retry_rate_limited: bool = True,
        active_jobs: ActiveJobs | None = None,
    ) -> str:
        """Start a paid generation job and return its task id.

        Retried only where the job certainly did not start. When the request left but no
        readable answer came back, raises :class:`SubmissionUnknownError`, unless the client
        was made with ``on_unknown_submission="resubmit"``. ``recorder`` (a journal) is told
        just before each POST leaves and after each one the service certainly refused.
        ``retry_rate_limited=False`` hands a 429 back at once, for a caller that waits for a
        free place among its active jobs instead (as ``generate_many`` does);
        ``active_jobs`` is the limit the submission was made under.
        """
        if not isinstance(request, VideoRequest):
            raise TypeError(f"submit() takes a VideoRequest, not {type(request).__name__}")
        body = _BODY_ENCODER.encode(request.to_payload()).encode("utf-8")
        raise_unknown = self.on_unknown_submission != "resubmit"
        try:
            # The first attempt here, not in a retry loop: nearly every submission succeeds
            # at once, and the loop's closures and frame cost more than its bookkeeping.
            task_id = await self._submit_once(
                request,
                body,
                attempt=1,
                raise_unknown=raise_unknown,
                recorder=recorder,
                active_jobs=active_jobs,
            )
        except Exception as exc:
            failure = exc  # retried outside the handler: no first failure chained to the last
        else:
            self._remember_submission(task_id)
            return task_id
        return await self._submit_again(
            failure,
            request,
            body,
            recorder=recorder,
            retry_rate_limited=retry_rate_limited,
            active_jobs=active_jobs,
        )

    async def _submit_again(
        self,
        failure: Exception,
        request: VideoRequest,
        body: bytes,
        *,
        recorder: SubmissionRecorder | None,
        retry_rate_limited: bool,
        active_jobs: ActiveJobs | None,
    ) -> str:
        """Go on from a first attempt that raised ``failure``: retry what may be retried."""
        resubmit = self.on_unknown_submission == "resubmit"
        try:
            task_id = await retry_after(
                failure,
                lambda attempt: self._submit_once(
                    request,
                    body,
                    attempt=attempt,
                    raise_unknown=not resubmit,
                    recorder=recorder,
                    active_jobs=active_jobs,
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
        active_jobs: ActiveJobs | None,
    ) -> str:
        try:
            response = await self._call_api(
                "POST",
                SUBMIT_PATH,
                kind="submit",
                attempt=attempt,
                body=body,
                before_send=recorder.before_send if recorder is not None else None,
                active_jobs=active_jobs,
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
        target: URL | None = None
        params: dict[str, str] | None = None
        if type(task_id) is str and is_plain_task_id(task_id):  # a valid id: checked too
            # Its URL made from a string, with none of the parsing and encoding a query of
            # parameters costs (most of a poll's URL work).
            target = self._urls[TASK_RESULT_PATH].with_query("task_id=" + task_id)
        else:
            check_task_id(task_id)
            params = {"task_id": task_id}  # aiohttp quotes it
        try:
            # The first attempt here, not in a retry loop, its request awaited here too: two
            # frames less on every poll.
            response = await self._call_api(
                "GET", TASK_RESULT_PATH, kind="poll", attempt=1, params=params, target=target
            )
            return self._read_task(response, task_id)
        except Exception as exc:
            failure = exc  # retried outside the handler: no first failure chained to the last
        return await retry_after(
            failure,
            lambda attempt: self._poll_once(task_id, target, params, attempt=attempt),
            self.retry_policy,
            max_retries=self.max_retries,
            should_retry=poll_should_retry(lambda: self._in_not_found_grace(task_id)),
        )

    async def _poll_once(
        self, task_id: str, target: URL | None, params: dict[str, str] | None, *, attempt: int
    ) -> TaskResult:
        response = await self._call_api(
            "GET", TASK_RESULT_PATH, kind="poll", attempt=attempt, params=params, target=target
        )
        return self._read_task(response, task_id)

    def _read_task(self, response: Response, task_id: str) -> TaskResult:
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
            url=self.base_url + path,
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


def check_api_key(api_key: object) -> str:
    """Return ``api_key`` if it can be sent in a header; never echo it in the error."""
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


def check_base_url(base_url: str, *, allow_insecure: bool) -> str:
    """Return the API's base URL without a trailing slash, if it is safe to send the key to."""
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
