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
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Literal, TypeVar

import anyio
import attrs
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
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
    service not having caught up yet, rather than as an unknown id.
    """

    initial_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    not_found_grace: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))

    def backoff(self, attempt: int) -> float:
        """Full-jitter wait before retry number ``attempt`` (1 for the first retry)."""
        # A float exponent, capped: 2 ** 1024 and more cannot be made a float at all.
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt - 1, 1000))
        return random.uniform(0, ceiling)

    def wait_for(self, exc: BaseException | None, attempt: int) -> float:
        """Seconds to wait after ``exc``: the server's Retry-After if it sent one, else backoff."""
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        return self.backoff(attempt)


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
    failure tenacity runs the rest.
    """
    if max_retries == 0 or not should_retry(failure):
        raise failure
    await anyio.sleep(policy.wait_for(failure, 1))

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return policy.wait_for(exc, state.attempt_number + 1)

    retrying = AsyncRetrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(max_retries),
        wait=wait,
        sleep=anyio.sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call(attempt.retry_state.attempt_number + 1)
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


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
