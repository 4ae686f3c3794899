"""When to poll a task next: near its expected finish, then backing off, never on a fixed beat."""

from __future__ import annotations

import bisect
import random

import attrs

from ._models import TaskResult

__all__ = ["DurationStats", "PollPolicy", "PollSchedule"]


@attrs.frozen(kw_only=True)
class PollPolicy:
    """The cadence of polls for one task, in seconds.

    The first poll comes ``first_poll_delay`` after submission (or near the finish that
    durations seen earlier in the run predict). After that, a poll comes at ``eta_fraction``
    of the service's ``eta`` when it gives one, else after a geometric backoff from
    ``min_interval`` by ``backoff`` up to ``max_interval``; each wait is jittered by
    +/- ``jitter``.
    """

    first_poll_delay: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    min_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    max_interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    backoff: float = attrs.field(default=1.5, validator=attrs.validators.ge(1))
    eta_fraction: float = attrs.field(
        default=0.7, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )

    def scaled(self, factor: float) -> PollPolicy:
        """The same policy with every duration multiplied by ``factor`` (for scaled fakes)."""
        return attrs.evolve(
            self,
            first_poll_delay=self.first_poll_delay * factor,
            min_interval=self.min_interval * factor,
            max_interval=self.max_interval * factor,
        )


class DurationStats:
    """Durations of jobs seen to finish in this run, to place the first poll of the next ones."""

    def __init__(self, *, keep: int = 512) -> None:
        self._sorted: list[float] = []
        self._recent: list[float] = []
        self._keep = keep

    def observe(self, seconds: float) -> None:
        """Record that a job took ``seconds`` from submission to being seen finished."""
        if len(self._recent) >= self._keep:
            oldest = self._recent.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the recorded durations, or None before enough were seen."""
        if len(self._sorted) < 5:
            return None
        index = min(len(self._sorted) - 1, max(0, round(q * (len(self._sorted) - 1))))
        return self._sorted[index]


# One generator for every schedule: a Random each would cost 2.5 KB per watched task.
_SHARED_RNG = random.Random()


class PollSchedule:
    """The poll timing of one task; ``history`` learns from it when ``timed`` (its age known).

    With ``backstop`` (seconds) the task's end is expected by push (a webhook): polls are only
    a slow backstop, the first well after the slowest jobs seen end, then every ``backstop``.
    """

    __slots__ = (
        "_backstop",
        "_expected_end",
        "_history",
        "_last_poll",
        "_policy",
        "_rng",
        "_timed",
        "_unguided",
    )

    def __init__(
        self,
        policy: PollPolicy,
        *,
        history: DurationStats | None = None,
        rng: random.Random | None = None,
        timed: bool = True,
        backstop: float | None = None,
    ) -> None:
        self._policy = policy
        self._backstop = backstop
        self._history = history
        self._rng = rng or _SHARED_RNG
        self._timed = timed
        self._unguided = 0
        self._last_poll: float | None = None
        self._expected_end: float | None = None

    @property
    def pushed(self) -> bool:
        """True when the task's end is expected by push, so polls are only a backstop."""
        return self._backstop is not None

    def first_delay(self) -> float:
        """Seconds from submission to the first poll."""
        if self._backstop is not None:
            slow = self._history.quantile(0.95) if self._history is not None else None
            return self._jittered(max(self._backstop, 1.5 * slow) if slow else self._backstop)
        policy = self._policy
        delay = policy.first_poll_delay
        if self._history is not None:
            # Aim a little before the typical finish: an early poll costs one request,
            # a late one costs the caller's time.
            typical = self._history.quantile(0.1)
            if typical is not None:
                delay = typical
        return self._clamped(self._jittered(delay))

    def next_delay(self, result: TaskResult, *, elapsed: float | None = None) -> float:
        """Seconds until the next poll, given the latest answer and the seconds since submission."""
        if self._backstop is not None:
            return self._jittered(self._backstop)
        policy = self._policy
        remaining = self._remaining_estimate(result, elapsed)
        if elapsed is not None:
            self._last_poll = elapsed
            self._expected_end = None if remaining is None else elapsed + remaining
        if remaining is not None and remaining > policy.min_interval:
            self._unguided = 0
            # Short of the estimate: the next answer's estimate is closer, and an eta that
            # ran long costs a fraction of it, not the whole error.
            delay = remaining * policy.eta_fraction
        else:
            delay = policy.min_interval * policy.backoff**self._unguided
            if (
                delay < policy.max_interval
            ):  # past the cap the exponent need not (and must not) grow
                self._unguided += 1
        return self._clamped(self._jittered(delay))

    def ended(self, elapsed: float) -> None:
        """A poll ``elapsed`` seconds after submission found the task ended: learn from it.

        The job really ended between the previous poll and this one; the service's last
        estimate places it inside that span. Seen ended at the first poll, it ended some
        time before it: the middle is taken, so first polls move earlier until they meet
        running jobs again.
        """
        if self._history is None or not self._timed or self._backstop is not None:
            return  # a backstop poll sees the end late: nothing to learn from it
        if self._last_poll is None:
            self._history.observe(elapsed / 2)
            return
        estimate = self._expected_end if self._expected_end is not None else elapsed
        self._history.observe(min(max(estimate, self._last_poll), elapsed))

    def _remaining_estimate(self, result: TaskResult, elapsed: float | None) -> float | None:
        if result.eta is not None and result.eta > 0:
            return result.eta
        progress = result.progress_percent
        if elapsed is not None and progress is not None and 0 < progress < 100:
            return elapsed * (100 - progress) / progress
        return None

    def _clamped(self, delay: float) -> float:
        return min(max(delay, self._policy.min_interval), self._policy.max_interval)

    def _jittered(self, delay: float) -> float:
        spread = self._policy.jitter
        return delay * self._rng.uniform(1 - spread, 1 + spread) if spread else delay
