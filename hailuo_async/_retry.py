"""When a failed call is tried again, and after how long.

Two policies, because the two calls differ in what a retry can cost:

==========================================  ===========  =========================
failure                                     poll (GET)   submit (POST)
==========================================  ===========  =========================
400, 401, 403                               raise        raise
404                                         retry during  raise
                                            the grace
                                            after submit
429                                         retry        retry (nothing started)
500, 502, 503, 504                          retry        retry (answered: refused)
connection never opened                     retry        retry (nothing sent)
reset / timeout after sending               retry        SubmissionUnknownError,
                                                         or retry when the caller
                                                         chose "resubmit"
2xx with a body that cannot be read         retry        as reset / timeout
==========================================  ===========  =========================

Waits are capped exponential backoff with full jitter; a ``Retry-After`` header (seconds or
an HTTP date) is honoured up to ``max_retry_after``. The loop after a first failure is
tenacity's.

One exception to the table, off unless asked for (the CLI asks): with ``unreachable_after``
set, a connection that never opened to a service that has not answered this client once
is tried for that many seconds only, then raised as :class:`ServiceUnreachableError`.
A wrong address says so at once; once the service has answered, a refused connection is
a blip, and gets the usual retries.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Literal, TypeVar

import anyio
import attrs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base

from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServiceUnreachableError,
)

__all__ = [
    "RetryPolicy",
    "UnknownSubmissionPolicy",
    "parse_retry_after",
    "poll_should_retry",
    "retry_after",
    "submit_should_retry",
]

T = TypeVar("T")

UnknownSubmissionPolicy = Literal["raise", "resubmit"]
"""What to do with a submission whose outcome cannot be known: raise, or send it again."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How patiently failed requests are tried again (the client's ``max_retries`` says how often).

    ``not_found_grace`` is how long after its submission a task's 404 is taken as the
    service not having caught up yet, rather than as an unknown id. ``unreachable_after``
    (None: off) is how long a connection that never opens is tried while the service has
    not answered this client once; then :class:`ServiceUnreachableError` is raised.
    """

    initial_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    not_found_grace: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    unreachable_after: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    def never_reached(self, exc: BaseException | None) -> bool:
        """True for a connection that never opened, to a service that never answered yet,
        when this policy gives such a service up early (``unreachable_after``)."""
        return (
            self.unreachable_after is not None
            and isinstance(exc, APIConnectionError)
            and exc.first_contact
            and not exc.request_sent
        )

    def backoff(self, attempt: int) -> float:
        """Full-jitter wait before retry number ``attempt`` (1 for the first retry)."""
        # A float exponent, capped: 2 ** 1024 and more cannot be made a float at all.
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt - 1, 1000))
        return random.uniform(0, ceiling)

    def wait_for(self, exc: BaseException | None, attempt: int, failing_for: float = 0.0) -> float:
        """Seconds to wait after ``exc``: the server's Retry-After if it sent one, else backoff.

        ``failing_for``: seconds since the call's first failure (a service never reached
        is not waited for past ``unreachable_after``).
        """
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        wait = self.backoff(attempt)
        if self.unreachable_after is not None and self.never_reached(exc):
            wait = min(wait, max(0.0, self.unreachable_after - failing_for))
        return wait

    def gives_up(self, exc: BaseException | None, failing_for: float) -> bool:
        """True when ``exc``, ``failing_for`` seconds after the first failure, ends the tries."""
        return (
            self.unreachable_after is not None
            and self.never_reached(exc)
            and failing_for >= self.unreachable_after
        )

    def unreachable(self, exc: APIConnectionError, failing_for: float) -> ServiceUnreachableError:
        """The error a call that never reached the service ends with."""
        return ServiceUnreachableError(
            f"{exc.message}; no answer from the service in {failing_for:.1f} s",
            request_sent=False,
            first_contact=True,
            method=exc.method,
            url=exc.url,
        )


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header given as a number or an HTTP date; None if absent."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


async def retry_after(
    failure: Exception,
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    max_retries: int,
    should_retry: Callable[[BaseException], bool],
) -> T:
    """Go on from a first attempt that raised ``failure``: ``await call(attempt)`` until it
    succeeds, retrying the failures ``should_retry`` allows.

    Callers make the first attempt themselves, because almost every call succeeds at once
    and building a retry loop costs more than the request's own bookkeeping; after a first
    failure tenacity runs the rest. A service never reached ends the call as
    :class:`ServiceUnreachableError` (see :meth:`RetryPolicy.gives_up`).
    """
    started = time.monotonic()
    try:
        if max_retries == 0 or not should_retry(failure):
            raise failure
        await anyio.sleep(policy.wait_for(failure, 1))

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return policy.wait_for(exc, state.attempt_number + 1, time.monotonic() - started)

        retrying = AsyncRetrying(
            retry=retry_if_exception(should_retry),
            stop=stop_any(stop_after_attempt(max_retries), _GivenUp(policy, started)),
            wait=wait,
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call(attempt.retry_state.attempt_number + 1)
    except APIConnectionError as exc:
        if policy.never_reached(exc):
            raise policy.unreachable(exc, time.monotonic() - started) from exc
        raise
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


class _GivenUp(stop_base):
    """Tenacity's stop for :meth:`RetryPolicy.gives_up`: a service never reached, long enough."""

    def __init__(self, policy: RetryPolicy, started: float) -> None:
        self._policy = policy
        self._started = started

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        return self._policy.gives_up(exc, time.monotonic() - self._started)


def poll_should_retry(retry_not_found: Callable[[], bool]) -> Callable[[BaseException], bool]:
    """Which poll failures are retried; ``retry_not_found`` says if a 404 is in its grace."""

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, NotFoundError):
            return retry_not_found()
        return isinstance(
            exc,
            (RateLimitError, InternalServerError, APIConnectionError, APIResponseValidationError),
        )

    return should_retry


def submit_should_retry(
    *, resubmit_unknown: bool, retry_rate_limited: bool = True
) -> Callable[[BaseException], bool]:
    """Which submit failures are retried; an unknown outcome only by the caller's choice."""

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, RateLimitError):
            return retry_rate_limited
        if isinstance(exc, InternalServerError):
            return True
        if isinstance(exc, APIConnectionError):
            return resubmit_unknown or not exc.request_sent
        return resubmit_unknown and isinstance(exc, APIResponseValidationError)

    return should_retry
