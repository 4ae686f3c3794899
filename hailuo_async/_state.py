"""The state a client's requests, watchers and batches share, as one explicit object.

Each part is a small protocol (see :mod:`hailuo_async._limits` and
:mod:`hailuo_async._push`), so another back end (several processes sharing one account's
limits through PostgreSQL, say) plugs in here without touching the watcher or the batch.
"""

from __future__ import annotations

import attrs

from ._limits import ActiveJobLimit, ActiveJobs, Limits, RequestLimiter, RequestLimits
from ._polling import DurationStats
from ._push import InMemoryPushRegistry, PushRegistry
from ._retry import RetryPolicy

__all__ = ["SharedState"]


@attrs.frozen(kw_only=True)
class SharedState:
    """What every request and watcher of a client (or of several clients) shares.

    ``limiter`` paces and pauses requests; ``active_jobs`` is the limit on unfinished jobs
    that batches without their own ``max_active_jobs`` share; ``durations`` learns how long
    jobs take, to aim first polls; ``push`` routes confirmed webhook results to watchers.
    """

    limiter: RequestLimits
    active_jobs: ActiveJobs
    durations: DurationStats = attrs.field(factory=DurationStats)
    push: PushRegistry = attrs.field(factory=InMemoryPushRegistry)

    @classmethod
    def in_memory(
        cls, limits: Limits | None = None, *, retry: RetryPolicy | None = None
    ) -> SharedState:
        """The state of one process: limits kept (and learnt) in memory."""
        limits = limits or Limits()
        retry = retry or RetryPolicy()
        return cls(
            limiter=RequestLimiter(
                max_in_flight=limits.max_in_flight,
                requests_per_minute=limits.requests_per_minute,
                rate_window=limits.rate_window,
                initial_pause=retry.initial_delay,
                max_pause=retry.max_retry_after,
            ),
            active_jobs=ActiveJobLimit(known=limits.max_active_jobs),
        )
