"""When to poll a task next: near its expected finish, then backing off, never on a fixed beat.

The service's own forecasts are taken with the error they showed earlier in the run: each
ended job teaches how far its forecasts were from its real end (the end the service reports,
``TaskResult.ended_after``, when the polls left it loosely known). An ``eta`` misses by a
factor (``real remaining / eta``); a ``progress_percent`` misses by some points (``real
fraction done - reported fraction``, the real fraction being the time processed over the
real processing time, processing taken to start when the answer says,
``TaskResult.started_after``, else at submission); which provider said it does not matter.
A task's next poll is then aimed inside the window those misses' quantiles give for its end,
intersected over all of its answers: at its far edge when an end there is seen within
``min_interval`` (less how late answers come), else one tolerance in. Until the run has
seen enough ends, a cautious prior window stands in (an eta off by -40 % to +60 %, a
progress off by a point); a schedule without a history polls at a fixed fraction of the eta.

An answer without any forecast is placed by the durations the run has seen instead: the next
poll comes when a share of the jobs seen running as long had ended (a quantile of the
remaining duration, the Munford-Shahani inspection rule), within ``max_interval``. When the
service has long sent no forecast, first polls skip the early one that would only bring none.
Before enough durations are seen, or past the longest, a geometric backoff stands in. When
polls wait long for the request budget, each one that finds a task running costs a job
started later: a task without forecasts is then polled only once it has run as long as any
job seen, ended or still running (the ends alone, early in a run, are the quick jobs'), and
that wait is checked again when the poll's turn comes; the oldest, until durations are
known, waits as long again as it has run.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
from collections import deque
from collections.abc import Mapping
from statistics import NormalDist
from typing import ClassVar, NamedTuple

import attrs

from ._checks import Number
from ._models import TaskResult

__all__ = ["DurationStats", "PollPolicy", "PollSchedule", "PollSchedules"]


@attrs.frozen(kw_only=True)
class PollPolicy:
    """The cadence of polls for one task, in seconds.

    The first poll comes ``first_poll_delay`` after submission (or just before the
    shortest finishes that durations seen earlier in the run predict). After that, a poll
    is aimed so that an end is seen at most ``min_interval`` late, inside the window the
    service's forecasts give once widened by how far such forecasts missed in the run (a
    cautious prior before it has seen them miss). Without a history to learn in, a poll
    comes at ``eta_fraction`` of the service's ``eta``. Without any forecast, a poll comes
    when a share of the jobs seen running as long had ended (durations seen earlier in the
    run), before those are known after a geometric backoff from ``min_interval`` by
    ``backoff``; while polls wait long for the request budget, not before the task has run
    as long as any job seen (the oldest, as long again as it has run). Each wait is
    jittered by +/- ``jitter`` and kept within [``min_interval``, ``max_interval``], except
    a wait aimed at an end the forecasts (or, for a first poll, the durations) place further
    out: that one may last up to ``max_aimed_interval``.

    A watched job that has not ended ``max_job_duration`` seconds after its submission
    (after it was first watched, when its submission time is unknown), or whose status
    stayed one this library does not know for ``max_unknown_duration``, ends its watch
    with :class:`~hailuo_async.JobTimeoutError`; ``None`` sets no such limit. A job past
    twice the longest duration seen in the run is polled on a backoff toward
    ``max_interval``, so a stuck job costs few requests.
    """

    first_poll_delay: float = attrs.field(default=10.0, validator=Number())
    min_interval: float = attrs.field(default=1.0, validator=Number(above=True))
    max_interval: float = attrs.field(default=30.0, validator=Number(above=True))
    backoff: float = attrs.field(default=1.5, validator=Number(low=1))
    eta_fraction: float = attrs.field(default=0.7, validator=Number(above=True, high=1))
    jitter: float = attrs.field(default=0.1, validator=Number(high=1, below=True))
    max_aimed_interval: float = attrs.field(default=300.0, validator=Number(above=True))
    max_job_duration: float | None = attrs.field(
        default=1800.0, validator=Number(above=True, optional=True)
    )
    max_unknown_duration: float | None = attrs.field(
        default=300.0, validator=Number(above=True, optional=True)
    )

    def scaled(self, factor: float) -> PollPolicy:
        """The same policy with every duration multiplied by ``factor`` (for scaled fakes)."""
        return attrs.evolve(
            self,
            first_poll_delay=self.first_poll_delay * factor,
            min_interval=self.min_interval * factor,
            max_interval=self.max_interval * factor,
            max_aimed_interval=self.max_aimed_interval * factor,
            max_job_duration=_times(self.max_job_duration, factor),
            max_unknown_duration=_times(self.max_unknown_duration, factor),
        )


def _times(seconds: float | None, factor: float) -> float | None:
    return None if seconds is None else seconds * factor


class _Sample:
    """The latest ``keep`` values of a quantity, kept sorted for quantiles."""

    __slots__ = ("_keep", "_recent", "_sorted")

    def __init__(self, keep: int) -> None:
        self._sorted: list[float] = []
        self._recent: deque[float] = deque()
        self._keep = keep

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, value: float) -> float | None:
        """Keep ``value``; return the one it pushed out, if any."""
        oldest = None
        if len(self._recent) >= self._keep:
            oldest = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(value)
        bisect.insort(self._sorted, value)
        return oldest

    def quantile(self, q: float) -> float:
        index = min(len(self._sorted) - 1, max(0, round(q * (len(self._sorted) - 1))))
        return self._sorted[index]

    def quantile_above(self, floor: float, q: float) -> float | None:
        """The q-quantile of the values above ``floor``; None when none is."""
        start = bisect.bisect_right(self._sorted, floor)
        above = len(self._sorted) - start
        return self._sorted[start + round(q * (above - 1))] if above else None


# The kinds of forecast an answer carries: the service's eta, and its progress.
ETA = "eta"
PROGRESS = "progress"


class _Forecast(NamedTuple):
    """One forecast of a running answer, as the seconds since submission measure it."""

    at: float  # when it was received
    kind: str
    value: float  # eta: seconds left; progress: the fraction done (0-1)
    since: float = 0.0  # progress: when processing started


class DurationStats:
    """What the run has seen of its jobs: how long they took, and how far forecasts missed.

    Shared by every schedule of a client: durations place first polls (and every poll of
    an answer without forecasts), forecast errors place the others.
    """

    #: Durations to see before they place first polls.
    MIN_DURATIONS = 5
    #: Forecast errors of one kind to see before they are trusted to aim polls.
    MIN_MISSES = 12
    #: The window of an end is taken between these quantiles of the forecast misses.
    WINDOW = (0.005, 0.995)
    #: ... widened on each side by this share of its width.
    MARGIN = 0.05

    #: The narrowest learnt window of misses (progress comes in whole points).
    MIN_WIDTH: ClassVar[Mapping[str, float]] = {ETA: 0.0, PROGRESS: 0.01}
    #: How far forecasts are taken to miss before the run has seen them miss.
    PRIOR: ClassVar[Mapping[str, tuple[float, float]]] = {
        ETA: (0.5, 1.6),
        PROGRESS: (-0.005, 0.015),
    }

    #: Answers' lateness kept, seen before its quantile is used, and the quantile used.
    KEPT_LATE = 256
    MIN_LATE = 16
    LATE_QUANTILE = 0.9

    #: Running answers in a row without a forecast after which the service is taken to give none.
    QUIET_ANSWERS = 64

    #: Weight of the latest poll in the running mean of how late polls come.
    LATENESS_WEIGHT = 0.05
    #: How fast the floor of that lateness (a round trip) may rise, per poll, by weight.
    FLOOR_RISE = 0.002

    def __init__(self, *, keep: int = 512) -> None:
        self._durations = _Sample(keep)
        # Ages at which jobs were seen still running: with the durations, how long a job may run.
        self._running = _Sample(keep)
        # Sums of the kept durations' logarithms and of their squares, for a log-normal fit.
        self._log_sums = [0.0, 0.0]
        self._misses = {ETA: _Sample(keep), PROGRESS: _Sample(keep)}
        self._lateness = 0.0
        self._late = _Sample(self.KEPT_LATE)
        self._floor: float | None = None
        self._silent = 0

    @property
    def quiet(self) -> bool:
        """True when the latest QUIET_ANSWERS running answers carried no forecast at all."""
        return self._silent >= self.QUIET_ANSWERS

    def observe_answer(self, *, forecast: bool) -> None:
        """Record whether a running answer carried a forecast (an eta or a progress)."""
        self._silent = 0 if forecast else min(self._silent + 1, self.QUIET_ANSWERS)

    @property
    def waiting(self) -> float:
        """How long polls wait for a slot or for the request budget (a running mean, s).

        Polls answer a round trip after the time they were aimed at when requests flow:
        that floor is the quickest answers' lateness (allowed to rise slowly, should the
        network slow down). Past it, polls queue, and every poll spent is a job started
        later.
        """
        return max(0.0, self._lateness - (self._floor or 0.0))

    @property
    def lateness(self) -> float:
        """How late polls answer after the time they were aimed at: most do within this (s).

        The LATE_QUANTILE of the latest answers' lateness (the running mean before enough
        were seen); on a busy machine the tail is what makes ends seen late.
        """
        if len(self._late) < self.MIN_LATE:
            return self._lateness
        return self._late.quantile(self.LATE_QUANTILE)

    def observe_lateness(self, seconds: float) -> None:
        """Record that a poll's answer came ``seconds`` after the time it was aimed at."""
        seconds = max(0.0, seconds)
        self._late.add(seconds)
        self._lateness += (seconds - self._lateness) * self.LATENESS_WEIGHT
        floor = self._floor
        if floor is None or seconds < floor:
            self._floor = seconds
        else:
            self._floor = floor + (seconds - floor) * self.FLOOR_RISE

    def observe(self, seconds: float) -> None:
        """Record that a job took ``seconds`` from submission to being seen finished."""
        log = math.log(max(seconds, _SHORTEST))
        self._log_sums[0] += log
        self._log_sums[1] += log * log
        oldest = self._durations.add(seconds)
        if oldest is not None:
            log = math.log(max(oldest, _SHORTEST))
            self._log_sums[0] -= log
            self._log_sums[1] -= log * log

    def observe_running(self, age: float) -> None:
        """Record that a job was seen still running ``age`` seconds after its submission
        (and the answer gave no forecast)."""
        self._running.add(age)

    @property
    def longest(self) -> float | None:
        """The longest a job was seen to run: ended (once MIN_DURATIONS have), or still
        running without a forecast; None before either.

        Unlike the durations alone, not biased short early in a run, when only the quick jobs
        have ended yet: the slow ones are seen running. A job seen running past twice the
        longest duration counts as running that long.
        """
        ended = self.quantile(1.0)
        if not self._running:
            return ended
        running = self._running.quantile(1.0)
        # A stuck job is seen running for long: past twice the longest duration, it says
        # nothing of the others.
        return running if ended is None else max(ended, min(running, 2 * ended))

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the recorded durations, or None before enough were seen."""
        if len(self._durations) < self.MIN_DURATIONS:
            return None
        return self._durations.quantile(q)

    def remaining_quantile(self, age: float, q: float) -> float | None:
        """The q-quantile of the recorded durations longer than ``age``: by then a share q of
        the jobs running that long ended, as far as the run has seen.

        None before enough durations were seen, or past the longest kept.
        """
        if len(self._durations) < self.MIN_DURATIONS:
            return None
        return self._durations.quantile_above(age, q)

    def low_quantile(self, q: float) -> float | None:
        """A low q-quantile of the durations, cautious while few were seen.

        Of a few durations the lowest stands for a quantile far above a small q (of five,
        for about the 15th percentile): a log-normal fitted to them says where q lies, and
        the lower of the two is taken.
        """
        seen = self.quantile(q)
        if seen is None:
            return None
        count = len(self._durations)
        mean = self._log_sums[0] / count
        spread = math.sqrt(max(0.0, self._log_sums[1] / count - mean * mean))
        return min(seen, math.exp(mean + _normal_quantile(q) * spread))

    def observe_miss(self, kind: str, miss: float) -> None:
        """Record how far a forecast of ``kind`` missed (a factor for eta, points for progress)."""
        self._misses[kind].add(miss)

    def miss_median(self, kind: str) -> float | None:
        """The median miss of forecasts of ``kind``, once enough were seen."""
        sample = self._misses[kind]
        return sample.quantile(0.5) if len(sample) >= self.MIN_MISSES else None

    def miss_bounds(self, kind: str) -> tuple[float, float]:
        """The learnt window of misses of ``kind``; the cautious prior before enough were seen."""
        return self.miss_window(kind) or self.PRIOR[kind]

    def miss_window(self, kind: str) -> tuple[float, float] | None:
        """The low and high misses of forecasts of ``kind``, once enough were seen."""
        sample = self._misses[kind]
        if len(sample) < self.MIN_MISSES:
            return None
        low, high = sample.quantile(self.WINDOW[0]), sample.quantile(self.WINDOW[1])
        # Ends are only known to within a poll, and the misses judged are those whose end was
        # seen soon: the window is widened against both.
        margin = (high - low) * self.MARGIN
        low, high = low - margin, high + margin
        # The censoring bias: a job that ended before its window is seen by a poll aimed at the
        # window, long after the previous answer, and its end is too loosely known to teach a
        # miss; the window could only narrow. It is kept at least a reported unit wide (a
        # progress point), the extra on the side of early ends.
        return low, max(high, low + self.MIN_WIDTH[kind])


@functools.lru_cache(maxsize=16)
def _normal_quantile(q: float) -> float:
    """The standard normal's q-quantile: worked out once per q, not on each first poll."""
    return NormalDist().inv_cdf(q)


# Durations are taken to be at least this long (s) for their logarithm.
_SHORTEST = 1e-3

# One generator for every schedule: a Random each would cost 2.5 KB per watched task.
_SHARED_RNG = random.Random()

# A task's running answers kept to learn from when it ends (its latest few are the useful ones).
_KEPT_FORECASTS = 8


@attrs.frozen
class _ScheduleSettings:
    """What the schedules of one kind of task share: made once per watcher, not per task id."""

    policy: PollPolicy
    history: DurationStats | None
    rng: random.Random
    # The task's age is counted from its submission (so it can teach durations).
    timed: bool
    # Seconds between backstop polls, for a task whose end comes by push; else None.
    backstop: float | None


class PollSchedules:
    """Makes the schedules of one watcher's tasks: their settings are made once per kind of
    task (timed or not, pushed or not) and shared, so a task id holds only its own state."""

    __slots__ = ("_kinds",)

    def __init__(
        self, policy: PollPolicy, *, history: DurationStats | None, backstop: float
    ) -> None:
        # Indexed by 2 * pushed + timed.
        self._kinds = tuple(
            _ScheduleSettings(policy, history, _SHARED_RNG, timed, backstop if pushed else None)
            for pushed in (False, True)
            for timed in (False, True)
        )

    def fresh(self, *, timed: bool, pushed: bool) -> PollSchedule:
        """The schedule of a task whose submission time is known (``timed``) or not, whose end
        comes by push (``pushed``) or not."""
        schedule = PollSchedule.__new__(PollSchedule)
        schedule._begin(self._kinds[2 * pushed + timed])
        return schedule


class PollSchedule:
    """The poll timing of one task; ``history`` learns from it when ``timed`` (its age known).

    With ``backstop`` (seconds) the task's end is expected by push (a webhook): polls are only
    a slow backstop, the first well after the slowest jobs seen end, then every ``backstop``.
    """

    __slots__ = (
        "_attempt",
        "_due",
        "_expected_end",
        "_forecasts",
        "_last_poll",
        "_overruns",
        "_settings",
        "_unguided",
        "_window",
    )

    #: The share of jobs a first poll may find already ended (seen late) once durations
    #: are known: each costs a late end, and a p95 delay is spent by 5 %.
    FIRST_POLL_QUANTILE = 0.015
    #: The share of a loosely known end's bound on an eta's miss recorded as its miss.
    CENSORED_SHARE = 0.95
    #: Without forecasts, the share of the jobs seen running as long as a task that its next
    #: poll is aimed to find ended: about 1 / 0.35 polls a job. Each wait is kept within
    #: max_interval, which bounds how late an end is seen where durations are dense.
    REMAINING_SHARE = 0.35

    def __init__(
        self,
        policy: PollPolicy,
        *,
        history: DurationStats | None = None,
        rng: random.Random | None = None,
        timed: bool = True,
        backstop: float | None = None,
    ) -> None:
        self._begin(_ScheduleSettings(policy, history, rng or _SHARED_RNG, timed, backstop))

    def _begin(self, settings: _ScheduleSettings) -> None:
        self._settings = settings
        self._unguided = 0
        # The pending poll was aimed one tolerance into a wide window, not at its far edge.
        self._attempt = False
        # Polls that found the task running past the end its learnt forecasts placed.
        self._overruns = 0
        self._last_poll: float | None = None
        self._expected_end: float | None = None
        # The running answers' forecasts, to learn from when the task ends.
        self._forecasts: list[_Forecast] | None = None
        # Where the end lies (seconds since submission), as far as the answers tell.
        self._window: tuple[float, float] | None = None
        # When (seconds since submission) the pending poll was aimed at.
        self._due: float | None = None

    @property
    def pushed(self) -> bool:
        """True when the task's end is expected by push, so polls are only a backstop."""
        return self._settings.backstop is not None

    def first_delay(self) -> float:
        """Seconds from submission to the first poll."""
        delay = self._first_delay()
        self._due = delay if self._settings.timed else None
        return delay

    def next_delay(self, result: TaskResult, *, elapsed: float | None = None) -> float:
        """Seconds until the next poll, given the latest answer and the seconds since submission."""
        self._note_lateness(elapsed)
        self._attempt = False
        delay = self._next_delay(result, elapsed)
        if self._overruns:
            delay = max(delay, self._overdue_wait())
        self._due = None if elapsed is None else elapsed + delay
        return delay

    def _overdue_wait(self) -> float:
        """A wait on a backoff toward ``max_interval``: each overrun forecast costs less.

        A stuck job's forecasts keep placing its end a moment away; aimed polls would then
        come every ``min_interval`` for as long as it is watched.
        """
        policy = self._settings.policy
        return min(policy.max_interval, policy.min_interval * policy.backoff**self._overruns)

    def _note_lateness(self, elapsed: float | None) -> None:
        if self._settings.history is not None and self._due is not None and elapsed is not None:
            self._settings.history.observe_lateness(elapsed - self._due)

    def _frugal(self) -> bool:
        """True when polls wait long for a slot or the request budget: each one is dear."""
        history = self._settings.history
        return history is not None and history.waiting > self._settings.policy.min_interval

    def _first_delay(self) -> float:
        if self._settings.backstop is not None:
            slow = (
                self._settings.history.quantile(0.95)
                if self._settings.history is not None
                else None
            )
            return self._jittered(
                max(self._settings.backstop, 1.5 * slow) if slow else self._settings.backstop
            )
        policy = self._settings.policy
        delay = policy.first_poll_delay
        if self._settings.history is not None:
            # Aim before nearly every finish: an early poll costs one request (and brings
            # forecasts), a late one costs the caller's time. When requests are what limits
            # the run, a poll costs a job started later: aim after nearly every finish, as
            # far as the longest a job was seen to run.
            frugal = self._frugal()
            history = self._settings.history
            q = self.FIRST_POLL_QUANTILE
            typical = history.longest if frugal else history.low_quantile(q)
            if typical is not None:
                delay = self._jittered(typical)
                if history.quiet and not frugal:
                    # That poll would bring no forecast and find few jobs ended: the one
                    # the durations would aim after it is taken instead.
                    delay += self._learnt_delay(delay) or 0.0
                return min(max(delay, policy.min_interval), policy.max_aimed_interval)
        return self._clamped(self._jittered(delay))

    def _next_delay(self, result: TaskResult, elapsed: float | None) -> float:
        if self._settings.backstop is not None:
            return self._jittered(self._settings.backstop)
        policy = self._settings.policy
        forecasts = self._forecasts_of(result, elapsed)
        remaining = _remaining(forecasts, elapsed)
        if elapsed is not None:
            self._last_poll = elapsed
            self._expected_end = None if remaining is None else elapsed + remaining
            self._remember(forecasts)
            if self._settings.history is not None:
                self._settings.history.observe_answer(forecast=bool(forecasts))
                if self._settings.timed and not forecasts:  # forecasts place polls better
                    self._settings.history.observe_running(elapsed)
            aimed = self._aimed_delay(elapsed, forecasts)
            if aimed is not None:
                self._unguided = 0
                return min(max(aimed, policy.min_interval), policy.max_aimed_interval)
        learnt = None
        if remaining is None:
            learnt = (
                self._unseen_wait(elapsed)
                or self._learnt_delay(elapsed)
                or self._frontier_wait(elapsed)
            )
        if learnt is not None:
            return learnt
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

    def _unseen_wait(self, elapsed: float | None) -> float | None:
        """When requests are what limits the run, the wait until a task without forecasts has
        run as long as any job seen (ended, or still running); None when it has, or polls
        are cheap.

        Each poll that finds a task running then costs a job started later; tasks younger
        than the oldest seen running wait while the oldest are polled, so the run learns
        its durations from few requests, and polls stay past nearly every end.
        """
        if elapsed is None:
            return None
        left = self._until_longest(elapsed)
        if left is None:
            return None
        wait = self._jittered(left)
        return min(
            max(wait, self._settings.policy.min_interval), self._settings.policy.max_aimed_interval
        )

    def _until_longest(self, elapsed: float) -> float | None:
        """When requests are what limits the run, the seconds until a timed task has run as long
        as any job seen; None when it has (within ``min_interval``), or polls are cheap."""
        history = self._settings.history
        if history is None or not self._settings.timed or not self._frugal():
            return None
        longest = history.longest
        if longest is None or longest <= elapsed + self._settings.policy.min_interval:
            return None
        return longest - elapsed

    def _frontier_wait(self, elapsed: float | None) -> float | None:
        """When requests are what limits the run, the wait of a task without forecasts that has
        run as long as any job seen, before the durations place polls: as long as it has run.

        It leads the others (they wait until they are as old): its polls, spaced as its age
        doubles, are what every younger task's are then spaced by, not a backoff from
        ``min_interval`` that each would follow in its turn.
        """
        if elapsed is None or self._until_longest(elapsed) is not None or not self._frugal():
            return None
        if self._settings.history is None or not self._settings.timed:
            return None
        policy = self._settings.policy
        return min(max(elapsed, policy.min_interval), policy.max_aimed_interval)

    def postponed(self, elapsed: float) -> float | None:
        """Seconds to put a poll off by when its turn comes ``elapsed`` after submission; None
        to make it now.

        A task without forecasts waits, when requests are what limits the run, until it has
        run as long as any job seen; polls then wait long for their turn, and the oldest
        seen running may have grown older meanwhile: the wait is checked again when the
        poll's turn comes, not only when it was scheduled.
        """
        if self._forecasts or self._settings.backstop is not None:
            return None
        left = self._until_longest(elapsed)
        if left is not None:
            self._due = elapsed + left
        return left

    def _learnt_delay(self, elapsed: float | None) -> float | None:
        """Without a forecast: the wait until REMAINING_SHARE of the jobs seen running this long
        had ended, as the durations learnt in the run say (the Munford-Shahani inspection rule).

        None until enough durations are known, for an untimed task (its age is not counted
        from submission), and past the longest duration kept: there the backoff goes on from
        where it was, as for a job of a kind the run has not seen.
        """
        history = self._settings.history
        if history is None or elapsed is None or not self._settings.timed:
            return None
        end = history.remaining_quantile(elapsed, self.REMAINING_SHARE)
        return None if end is None else self._clamped(self._jittered(end - elapsed))

    def ended(self, elapsed: float, result: TaskResult | None = None) -> None:
        """A poll ``elapsed`` seconds after submission found the task ended: learn from it.

        The job really ended between the previous poll and this one. When that span is long
        and the ending answer (``result``) says when, by the service's clock
        (``result.ended_after``), that end is taken; else the service's
        forecasts place it inside the span. Seen ended at the first poll without it, it ended
        some time before: the middle is taken, so first polls move earlier until they meet
        running jobs again.
        """
        self._note_lateness(elapsed)
        if (
            self._settings.history is None
            or not self._settings.timed
            or self._settings.backstop is not None
        ):
            return  # a backstop poll sees the end late: nothing to learn from it
        low = self._last_poll if self._last_poll is not None else 0.0
        reported = None if result is None else result.ended_after
        # The service's clock starts when it took the submission, ours when its answer came
        # back: the end it reports is that much late by ours. That matters only where our
        # polls left the end loosely known (a poll came long after the previous one): a job
        # ended before where its forecasts placed it is then still judged, so the learnt
        # window can widen toward early ends, not only narrow.
        tolerance = self._settings.policy.min_interval
        if reported is not None and elapsed - low > 2 * tolerance:
            end = min(max(reported, low), elapsed)
            self._settings.history.observe(end)
            if self._forecasts is not None:  # else nothing to judge: no call per job
                self._learn(end, tolerance)
            return
        if self._last_poll is None:
            self._settings.history.observe(elapsed / 2)
            return
        high = elapsed
        estimate = self._expected_end if self._expected_end is not None else (low + high) / 2
        self._settings.history.observe(min(max(estimate, low), high))
        # Forecasts are judged against where the last progress forecast puts the end with its
        # typical miss, else the last eta at its word (the nearest to the end), within the
        # span; never against the learnt window's edges, as an end outside it must teach a
        # wider one. Only where the span is short against what they forecast.
        point = self._point_end()
        if point is None:
            point = (low + high) / 2
            if self._expected_end is not None and self._answered_eta():
                point = self._expected_end
        end = min(max(point, low), high)
        self._learn(end, high - low)
        if high - low > 2 * tolerance and self._attempt:
            self._learn_censored(high)

    def _learn_censored(self, seen: float) -> None:
        """Teach that the last answer's eta missed by less than seeing the end ``seen`` says.

        Seen by a poll one tolerance into a wide window, after a long wait, the end is too
        loosely known to judge a forecast, and a window placing ends too late (an eta that
        runs long, before the run knew it) would then see every end late and learn nothing.
        A share of that bound is recorded instead: while the window is right few ends fall
        so early, but if it is wrong every end does, and the window moves toward them.
        """
        if self._forecasts is None or self._settings.history is None:
            return
        last = self._forecasts[-1].at
        for at, kind, value, _ in self._forecasts:
            if kind == ETA and at == last and seen > at:
                self._settings.history.observe_miss(ETA, self.CENSORED_SHARE * (seen - at) / value)

    def _learn(self, end: float, uncertainty: float) -> None:
        """Record how far each remembered forecast missed ``end`` (known within ``uncertainty``)."""
        if self._forecasts is None or self._settings.history is None:
            return
        for forecast in self._forecasts:
            at, kind, value, since = forecast
            if kind == ETA and end > at and end - at >= 4 * uncertainty:
                self._settings.history.observe_miss(kind, (end - at) / value)
            elif kind == PROGRESS and end > since and end - since >= 50 * uncertainty:
                self._settings.history.observe_miss(kind, (at - since) / (end - since) - value)

    def _answered_eta(self) -> bool:
        """True when the last answer gave an eta."""
        if not self._forecasts:
            return False
        last = self._forecasts[-1].at
        return any(at == last and kind == ETA for at, kind, _, _ in self._forecasts)

    def _point_end(self) -> float | None:
        """Where the last progress forecast puts the end, with its typical miss."""
        if self._forecasts is None or self._settings.history is None:
            return None
        last = self._forecasts[-1]
        typical = self._settings.history.miss_median(PROGRESS)
        if last.kind != PROGRESS or typical is None or last.value + typical <= 0:
            return None
        return last.since + (last.at - last.since) / (last.value + typical)

    def _forecasts_of(self, result: TaskResult, elapsed: float | None) -> list[_Forecast]:
        """The answer's forecasts, eta first."""
        at = 0.0 if elapsed is None else elapsed
        forecasts: list[_Forecast] = []
        if result.eta is not None and result.eta > 0:
            forecasts.append(_Forecast(at, ETA, result.eta))
        done = None if result.progress_percent is None else result.progress_percent / 100
        if elapsed is not None and done is not None and 0 < done < 1:
            since = min(result.started_after or 0.0, elapsed)
            forecasts.append(_Forecast(at, PROGRESS, done, since))
        return forecasts

    def _remember(self, forecasts: list[_Forecast]) -> None:
        if not forecasts or self._settings.history is None or not self._settings.timed:
            return
        if self._forecasts is None:
            self._forecasts = []
        self._forecasts.extend(forecasts)
        del self._forecasts[:-_KEPT_FORECASTS]

    def _aimed_delay(self, elapsed: float, forecasts: list[_Forecast]) -> float | None:
        """The wait that sees the end at most ``min_interval`` late, once errors are learnt.

        Each forecast whose errors the run knows places the end in a window; the windows of
        every answer so far are intersected. A window narrower than ``min_interval`` is
        polled at its far edge; a wider one just past its near edge, for a closer forecast,
        unless requests are what limits the run: then at its far edge too.
        """
        if self._settings.history is None:
            return None
        fresh: tuple[float, float] | None = None
        for forecast in forecasts:
            if forecast.kind == PROGRESS and not self._settings.timed:
                continue  # its age is counted from when it was first watched, not submitted
            misses = self._settings.history.miss_bounds(forecast.kind)
            window = _end_window(forecast, misses)
            if window is not None:
                fresh = window if fresh is None else _overlap(fresh, window) or fresh
        if fresh is None:
            self._window = None
            return None
        # Still running now, so the end is later; an empty overlap means an earlier window
        # was wrong: the latest answer is the better guide.
        known = self._window
        window = _overlap(fresh, known) if known is not None else fresh
        if window is not None:
            self._overruns = 0
        elif (
            known is not None
            and fresh[0] > known[1]
            and self._overdue_wait() < self._settings.policy.max_interval
        ):
            # The end moved past where the last answer's forecast placed it: a stuck job's
            # forecasts keep doing so, each a moment away.
            self._overruns += 1
        low, high = window or fresh
        low = max(low, elapsed)
        high = max(high, low)
        self._window = (low, high)
        # An answer comes some time after the poll was aimed (a round trip, a wait for a slot):
        # an end seen within the tolerance must be aimed at within the tolerance less that.
        tolerance = self._settings.policy.min_interval
        tolerance -= min(self._settings.history.lateness, tolerance / 2)
        self._attempt = not (high - low <= tolerance or self._frugal())
        # A window wider than that (when polls are cheap) is entered one tolerance in: an end
        # there is seen in time, and a later one leaves a window the next answer, closer to
        # the end, narrows. Of a window under two tolerances this catches more ends at once
        # than a poll one tolerance before its far edge.
        aim = low + tolerance if self._attempt else high
        # Jitter spreads polls, by a share of the tolerance (a share of a long wait would
        # throw it out of a narrow window): a poll at the far edge only later, within what the
        # tolerance leaves (earlier, it would find an exactly forecast job still running); any
        # other only earlier.
        spread = self._settings.policy.jitter
        delay = aim - elapsed
        if not spread:
            return delay
        if not self._attempt:
            return delay + self._settings.rng.uniform(
                0, spread * max(0.0, tolerance - (high - low))
            )
        return delay - self._settings.rng.uniform(0, spread * min(delay, tolerance))

    def _clamped(self, delay: float) -> float:
        return min(
            max(delay, self._settings.policy.min_interval), self._settings.policy.max_interval
        )

    def _jittered(self, delay: float) -> float:
        spread = self._settings.policy.jitter
        return delay * self._settings.rng.uniform(1 - spread, 1 + spread) if spread else delay


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if low <= high else None


def _remaining(forecasts: list[_Forecast], elapsed: float | None) -> float | None:
    """Seconds left by the first forecast, taken at its word (eta, else progress)."""
    for forecast in forecasts:
        if forecast.kind == ETA:
            return forecast.value
        if elapsed is not None:
            return elapsed * (1 - forecast.value) / forecast.value
    return None


def _end_window(forecast: _Forecast, misses: tuple[float, float]) -> tuple[float, float] | None:
    """Where a forecast, missing as much as forecasts of its kind did, places the end."""
    at, kind, value, since = forecast
    low, high = misses
    if kind == ETA:
        return at + low * value, at + high * value
    # The real fraction done lies in value + [low, high]: the processing time is the time
    # processed over it.
    processed = at - since
    least, most = value + low, value + high
    if most <= 0 or processed <= 0:
        return None
    latest = since + processed / least if least > 0 else float("inf")
    return since + processed / min(most, 1.0), latest
