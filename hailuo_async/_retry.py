"""The one home of retries: which failures are tried again, how often, after how long.

:class:`RetryPolicy` owns the counts and the waits; :meth:`RetryPolicy.retries` decides, by
kind of request and kind of failure, as this table says; :func:`call_with_retries` is the one
loop every request runs in (API calls, downloads). Nothing else retries HTTP requests.
Database work has one loop of its own, :meth:`hailuo_async.postgres._connection.Session.run`
(the journal's and the coordination's): a lost connection or a deadlock is tried again on a
new connection under its ``RECONNECT`` policy for ``reconnect_for`` (journal) or
``give_up_after`` (coordination) seconds; any other database error is raised at once.

=====================================  ===================  ===============  =================
failure                                submit (POST)        poll: query,     download
                                                            retrieve,        (storage host)
                                                            refresh (GET)
=====================================  ===================  ===============  =================
connection never opened                retry (nothing       retry            retry
                                       sent)
reset or timeout after sending         unknown outcome:     retry            retry
                                       see below
2xx whose body cannot be read          unknown outcome      retry            --
body cut short                         --                   --               retry
5xx (408, 425 for a download)          retry (answered:     retry            retry
                                       nothing started)
429, or a rate-limit code              retry; in a batch,   retry            retry
                                       wait for a free
                                       place instead
404                                    raise                retry within     a fresh URL
                                                            not_found_grace
401, 403 (410 for a download)          raise                raise            a fresh URL
other 4xx, a refused body              raise                raise            raise
=====================================  ===================  ===============  =================

**Money rule.** A submission whose outcome is unknown (it left, and no readable answer came
back) may have started a paid job: it is raised as :class:`SubmissionUnknownError` and never
sent again, unless the caller chose ``on_unknown_submission="resubmit"``; then it is retried
as a 5xx is.

**Counts.** ``max_retries`` retries per request after its first attempt (a rate-limited POST
of a batch, which gives its place among the active jobs back and waits for a free one,
spends ``rate_limited_waits`` instead; a download's fresh URLs spend ``max_refreshes``). A
watched task whose polls still fail after their retries is polled again on a backoff from
the poll policy's ``min_interval`` to its ``max_interval``; ``max_failed_polls`` such polls
in a row end its watch with the last error.

**Waits.** Capped exponential backoff with full jitter; a ``Retry-After`` header (seconds or
an HTTP date) is honoured up to ``max_retry_after``. A batch's rate-limited POST waits for a
free place, not for a timer (the limiter's shared pause spaces the tries).

One exception, off unless asked for (the CLI asks): with ``unreachable_after`` set, a
connection that never opened to a service that has not answered this client once is tried
for that many seconds only, then raised as :class:`ServiceUnreachableError`. A wrong address
says so at once; once the service has answered, a refused connection is a blip, and gets
the usual retries.
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

from ._checks import Number
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServiceUnreachableError,
)
from ._limits import RequestKind

__all__ = [
    "STORAGE_EXPIRED",
    "STORAGE_RETRIED",
    "RetryPolicy",
    "StorageHiccup",
    "UnknownSubmissionPolicy",
    "call_with_retries",
    "parse_retry_after",
]

T = TypeVar("T")

UnknownSubmissionPolicy = Literal["raise", "resubmit"]
"""What to do with a submission whose outcome cannot be known: raise, or send it again."""

STORAGE_RETRIED = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses of a storage host that another attempt may not meet."""
STORAGE_EXPIRED = frozenset({401, 403, 404, 410})
"""Statuses of a storage host that say the URL itself is done for: a fresh one is needed."""


class StorageHiccup(Exception):
    """A download attempt's failure that another attempt may not meet (connection trouble,
    a status in :data:`STORAGE_RETRIED`, a body cut short). Never leaves the download: it
    ends as a :class:`DownloadError`."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


_RETRIED_READS = (
    RateLimitError,
    InternalServerError,
    APIConnectionError,
    APIResponseValidationError,
)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently failed requests are tried again (see the module's table).

    ``max_retries`` is how many times one request is tried again after its first attempt.
    ``not_found_grace`` is how long after its submission a task's 404 is taken as the
    service not having caught up yet, rather than as an unknown id. ``unreachable_after``
    (None: off) is how long a connection that never opens is tried while the service has
    not answered this client once; then :class:`ServiceUnreachableError` is raised.
    ``rate_limited_waits``, ``max_refreshes`` and ``max_failed_polls`` bound a batch's
    waits for a free place, a download's fresh URLs and a watch's failed polls in a row.
    """

    max_retries: int = attrs.field(default=5, validator=Number(whole=True))
    initial_delay: float = attrs.field(default=0.5, validator=Number())
    max_delay: float = attrs.field(default=30.0, validator=Number())
    max_retry_after: float = attrs.field(default=120.0, validator=Number())
    not_found_grace: float = attrs.field(default=10.0, validator=Number())
    unreachable_after: float | None = attrs.field(default=None, validator=Number(optional=True))
    rate_limited_waits: int = attrs.field(default=30, validator=Number(whole=True))
    max_refreshes: int = attrs.field(default=3, validator=Number(whole=True))
    max_failed_polls: int = attrs.field(default=8, validator=Number(low=1, whole=True))

    def retries(
        self,
        kind: RequestKind,
        exc: BaseException,
        *,
        resubmit: bool = False,
        in_not_found_grace: bool = False,
    ) -> bool:
        """True when the table says ``exc`` ends a ``kind`` request's attempt but not the
        request. ``resubmit``: the caller chose to send a submission of unknown outcome
        again; ``in_not_found_grace``: the polled task was submitted moments ago."""
        if kind == "download":
            return isinstance(exc, StorageHiccup)
        if kind == "submit":
            if isinstance(exc, (RateLimitError, InternalServerError)):
                return True
            if isinstance(exc, APIConnectionError):
                return resubmit or not exc.request_sent
            return resubmit and isinstance(exc, APIResponseValidationError)
        if isinstance(exc, NotFoundError):
            return in_not_found_grace
        return isinstance(exc, _RETRIED_READS)

    def after_failed_poll(self, failures: int, *, floor: float, cap: float) -> float | None:
        """Seconds until a watched task is polled again after ``failures`` failed polls in
        a row (each after its own retries); None once its watch should end."""
        if failures >= self.max_failed_polls:
            return None
        return min(cap, floor * 2.0 ** min(failures, 1000))

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
        if isinstance(exc, (RateLimitError, StorageHiccup)) and exc.retry_after is not None:
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


async def call_with_retries(
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    kind: RequestKind,
    *,
    failure: Exception | None = None,
    retries: Callable[[BaseException], bool] | None = None,
    instead_of_waiting: Callable[[Exception], Awaitable[bool]] | None = None,
) -> T:
    """``await call(attempt)`` (attempt 1, 2, ...) until it succeeds or the policy gives up;
    raise the last failure then.

    ``failure``: what a first attempt the caller made itself raised; the loop goes on from
    attempt 2. (The API's calls make their first attempt inline, where nearly every call
    succeeds: 41,000 fewer instructions per job, 3.1 %, by ``python -m benchmarks.profile
    throughput --instructions``; the CPU-per-job guard needs it.) ``retries`` replaces
    the policy's decision (a caller that knows the request's context, such as a 404's
    grace). ``instead_of_waiting(exc)`` is asked first after each failure: True means it
    made the next attempt worth making at once (a free place taken, a fresh URL got) and
    spends none of ``max_retries``. A service never reached ends the call as
    :class:`ServiceUnreachableError` (see :meth:`RetryPolicy.gives_up`).
    """
    started = time.monotonic()
    attempt = 1
    retried = 0
    if failure is None:
        try:
            return await call(attempt)
        except Exception as exc:
            failure = exc  # retried outside the handler: no failure chained to the next
    should_retry = retries or (lambda exc: policy.retries(kind, exc))
    while True:
        failing_for = time.monotonic() - started
        if instead_of_waiting is not None and await instead_of_waiting(failure):
            pass
        elif (
            retried < policy.max_retries
            and should_retry(failure)
            and not policy.gives_up(failure, failing_for)
        ):
            retried += 1
            await anyio.sleep(policy.wait_for(failure, retried, failing_for))
        elif isinstance(failure, APIConnectionError) and policy.never_reached(failure):
            raise policy.unreachable(failure, failing_for) from failure
        else:
            raise failure
        attempt += 1
        try:
            return await call(attempt)
        except Exception as exc:
            failure = exc
