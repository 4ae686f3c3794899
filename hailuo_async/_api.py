"""The HTTP/API layer: a provider's calls sent with limits, retries, key masking and typed errors.

Only here is the API key attached to a request, and only here are error answers masked of
any echo of it. Every request passes through the shared :class:`RequestLimits`; a
rate-limit answer to a submission made under an active-job limit teaches that limit (and
only that one), when the provider's service caps active jobs. What each call is, and how
its answer reads, is the provider's (:mod:`hailuo_async.providers`).
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

import attrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._decoding import DecodeError
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    SubmissionUnknownError,
)
from ._limits import ActiveJobs, RequestLimits
from ._models import TaskResult, VideoRequest
from ._retry import RetryPolicy, UnknownSubmissionPolicy, call_with_retries
from ._task_ids import check_task_id, is_plain_task_id
from ._transport import Response, Transport
from .providers._gateway import DEFAULT_BASE_URL
from .providers._protocol import Call, Provider, Step

__all__ = [
    "DEFAULT_BASE_URL",
    "HailuoAPI",
    "SubmissionRecorder",
    "check_api_key",
    "check_base_url",
]


class SubmissionRecorder(Protocol):
    """Keeps a durable record of one submission's POSTs (a batch's journal does)."""

    async def before_send(self) -> None:
        """The POST is about to leave: once this returns, the record must survive a crash."""

    async def not_sent(self) -> None:
        """The POST certainly started nothing (refused, or never sent)."""


class HailuoAPI:
    """A provider's calls, with retries, limits, key masking and typed errors.

    ``api_key`` and ``base_url`` must have passed :func:`check_api_key` and
    :func:`check_base_url`.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        provider: Provider,
        transport: Transport,
        limiter: RequestLimits,
        retry_policy: RetryPolicy,
        on_unknown_submission: UnknownSubmissionPolicy,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url
        self.provider = provider
        self._transport = transport
        self.limiter = limiter
        self.retry_policy = retry_policy
        self.on_unknown_submission: UnknownSubmissionPolicy = on_unknown_submission
        # Made once: aiohttp copies a request's headers, so one dict serves every request.
        self._get_headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._post_headers = {**self._get_headers, "Content-Type": "application/json"}
        # The base URL as sent (a host in IDNA, escapes made): each call's URL is this and
        # its path and query, taken as encoded, which is cheaper than a URL built of parts.
        self._origin = str(URL(base_url))
        # Parsed once per path: aiohttp takes a URL as it is, where a string is parsed.
        self._paths: dict[str, URL] = {}
        # Submission times of recent tasks: a 404 for one of them is the service catching up.
        self._recent_submissions: OrderedDict[str, float] = OrderedDict()

    async def _send(
        self,
        call: Call,
        *,
        attempt: int,
        before_send: Callable[[], Awaitable[None]] | None = None,
        active_jobs: ActiveJobs | None = None,
    ) -> Response:
        """Send one call to the API (never elsewhere: only here is the key attached).

        ``before_send`` is awaited once the request's turn has come, just before it leaves.
        ``active_jobs`` is the limit a submission was made under: it alone learns from a
        rate-limit answer. Raises the provider's error for an error answer.
        """
        kind = call.kind
        headers = self._get_headers if call.body is None else self._post_headers
        url = self._url(call)
        limiter = self.limiter
        if limiter.take_now(kind):
            # A free place taken at once, outside the slot below: 24,000 fewer instructions
            # per job (1.9 %, benchmarks.profile --instructions); the CPU guard needs it.
            try:
                if before_send is not None:
                    await before_send()
                response = await self._transport.send(
                    call.method, url, headers, call.body, log_path=call.path, attempt=attempt
                )
            finally:
                limiter.give_back(kind)
        else:
            async with limiter.slot(kind):
                if before_send is not None:
                    await before_send()
                response = await self._transport.send(
                    call.method, url, headers, call.body, log_path=call.path, attempt=attempt
                )
        if self.provider.answer_error(call, response, base_url=self.base_url) is None:
            limiter.on_success(kind)
            return response
        # An error's body and headers end up in messages and logs: no echo of the key may go
        # with them. (A good answer is read as sent: masking could corrupt it.) Redirects are
        # not followed (they could take the key elsewhere): an error too.
        error = self.provider.answer_error(
            call, _without_secret(response, self._api_key), base_url=self.base_url
        )
        assert error is not None
        if isinstance(error, RateLimitError):
            # A refused submit that may reveal the cap on active jobs says nothing of the
            # rate. A submission made under no active-job limit teaches none: its refusal is
            # put down to the cap too (pausing submits only); the many polls reveal a rate
            # limit. A service without such a cap refuses only for the rate.
            active_cap = (
                kind == "submit"
                and self.provider.caps_active_jobs
                and (active_jobs is None or active_jobs.on_rate_limited())
            )
            limiter.on_rate_limited(kind, error.retry_after, rate_exceeded=not active_cap)
        raise error

    def _url(self, call: Call) -> URL:
        url = self._paths.get(call.path)
        if url is None:
            url = self._paths[call.path] = URL(self._origin + call.path, encoded=True)
        query = call.query
        if not query:
            return url
        if "%" in query or "+" in query:
            # Escapes made already: the whole URL taken as encoded (with_query would escape
            # them again). A URL parsed whole costs more; ids of the usual kind need none.
            return URL(f"{self._origin}{call.path}?{query}", encoded=True)
        return url.with_query(query)

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

        The provider's rules are checked first (:class:`InvalidRequestError`, nothing sent).
        Retried only where the job certainly did not start. When the request left but no
        readable answer came back, raises :class:`SubmissionUnknownError`, unless the client
        was made with ``on_unknown_submission="resubmit"``. ``recorder`` (a journal) is told
        just before each POST leaves and after each one the service certainly refused.
        ``retry_rate_limited=False`` hands a rate-limit answer back at once.
        ``active_jobs`` is the limit the submission was made under, its place taken: a
        rate-limit answer then gives the place back and waits for a free one before the
        next try (as ``generate_many`` does), ``retry_policy.rate_limited_waits`` times.
        """
        if not isinstance(request, VideoRequest):
            raise TypeError(f"submit() takes a VideoRequest, not {type(request).__name__}")
        call = self.provider.submit_call(request)
        raise_unknown = self.on_unknown_submission != "resubmit"
        try:
            # The first attempt inline, the retries after it (see call_with_retries).
            task_id = await self._submit_once(
                request,
                call,
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
            call,
            recorder=recorder,
            retry_rate_limited=retry_rate_limited,
            active_jobs=active_jobs,
        )

    async def _submit_again(
        self,
        failure: Exception,
        request: VideoRequest,
        call: Call,
        *,
        recorder: SubmissionRecorder | None,
        retry_rate_limited: bool,
        active_jobs: ActiveJobs | None,
    ) -> str:
        """Go on from a first attempt that raised ``failure``: retry what may be retried."""
        policy = self.retry_policy
        resubmit = self.on_unknown_submission == "resubmit"

        def retries(exc: BaseException) -> bool:
            if isinstance(exc, RateLimitError) and not retry_rate_limited:
                return False
            return policy.retries("submit", exc, resubmit=resubmit)

        waits = 0

        async def wait_for_place(exc: Exception) -> bool:
            # A 429 started nothing: rather than meet more of them at once, give the place
            # back and wait for a job to end (the limiter's pause spaces the tries too).
            nonlocal waits
            if not (isinstance(exc, RateLimitError) and retry_rate_limited):
                return False
            if waits >= policy.rate_limited_waits:
                return False
            assert active_jobs is not None
            waits += 1
            active_jobs.release(submitted=False)
            await active_jobs.acquire()
            return True

        try:
            task_id = await call_with_retries(
                lambda attempt: self._submit_once(
                    request,
                    call,
                    attempt=attempt,
                    raise_unknown=not resubmit,
                    recorder=recorder,
                    active_jobs=active_jobs,
                ),
                policy,
                "submit",
                failure=failure,
                retries=retries,
                instead_of_waiting=wait_for_place if active_jobs is not None else None,
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
        call: Call,
        *,
        attempt: int,
        raise_unknown: bool,
        recorder: SubmissionRecorder | None,
        active_jobs: ActiveJobs | None,
    ) -> str:
        try:
            response = await self._send(
                call,
                attempt=attempt,
                before_send=recorder.before_send if recorder is not None else None,
                active_jobs=active_jobs,
            )
            try:
                return self.provider.read_submission(response)
            except DecodeError as exc:
                raise self._unreadable(response, call, exc) from exc
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
        """Poll a task once (retrying transient failures) and return what the service says.

        One call for the gateway; a query, then one retrieve once the task has succeeded,
        for MiniMax. Each call is retried on its own.
        """
        if type(task_id) is not str or not is_plain_task_id(task_id):
            check_task_id(task_id)
        step = self.provider.poll(task_id)
        try:
            outcome = self._read(step, await self._send(step.call, attempt=1))
        except Exception as exc:
            failure = exc  # retried outside the handler: no first failure chained to the last
        else:
            return outcome if not isinstance(outcome, Step) else await self._run(outcome, task_id)
        return await self._run(step, task_id, failure)

    async def refresh_video(self, result: TaskResult) -> TaskResult:
        """A finished task's result with fresh video URLs (for a download whose URL expired).

        The gateway polls the task again; MiniMax retrieves the file's URL again (one call).
        """
        return await self._run(self.provider.refresh(result), result.task_id)

    async def _run(self, step: Step, task_id: str, failure: Exception | None = None) -> TaskResult:
        """Run a poll's steps, each retried on its own, until one gives the result.

        ``failure`` is what a first attempt at ``step``, made by the caller, raised.
        """
        while True:
            if failure is None:
                try:
                    outcome = self._read(step, await self._send(step.call, attempt=1))
                except Exception as exc:
                    failure = exc  # retried outside the handler: no first failure chained
            if failure is not None:
                outcome = await call_with_retries(
                    functools.partial(self._step, step),
                    self.retry_policy,
                    "poll",
                    failure=failure,
                    retries=functools.partial(self._poll_retries, task_id),
                )
                failure = None
            if not isinstance(outcome, Step):
                return outcome
            step = outcome

    def _poll_retries(self, task_id: str, exc: BaseException) -> bool:
        grace = isinstance(exc, NotFoundError) and self._in_not_found_grace(task_id)
        return self.retry_policy.retries("poll", exc, in_not_found_grace=grace)

    async def _step(self, step: Step, attempt: int) -> TaskResult | Step:
        return self._read(step, await self._send(step.call, attempt=attempt))

    def _read(self, step: Step, response: Response) -> TaskResult | Step:
        try:
            return step.read(response)
        except DecodeError as exc:
            raise self._unreadable(response, step.call, exc) from exc

    def _unreadable(
        self, response: Response, call: Call, exc: DecodeError
    ) -> APIResponseValidationError:
        return APIResponseValidationError(
            f"{call.subject} cannot be read: {exc}",
            status_code=response.status,
            body=_without_secret(response, self._api_key).body[:2000].decode("utf-8", "replace"),
            method=call.method,
            url=self.base_url + call.path,
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
