"""PollSchedule learning from forecast errors, on a virtual clock (no sockets, no sleeps)."""

from __future__ import annotations

import heapq
import math
import random
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailuo_async import PollPolicy, TaskResult, TaskStatus
from hailuo_async._polling import ETA, PROGRESS, DurationStats, PollSchedule, _queued_seconds

EXACT = PollPolicy(jitter=0.0, min_interval=1.0, max_interval=30.0)


@pytest.fixture
def no_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Learnt windows exactly between the quantiles, for arithmetic a reader can check."""
    monkeypatch.setattr(DurationStats, "MARGIN", 0.0)


def running(
    *, eta: float | None = None, progress: float | None = None, queued_ms: int | None = None
) -> TaskResult:
    """A PROCESSING answer with the given forecasts (and debug_info times when queued_ms)."""
    extra = {}
    if queued_ms is not None:
        extra = {
            "debug_info": {
                "submit_time_ms": "1700000000000",
                "execute_time_ms": str(1700000000000 + queued_ms),
            }
        }
    return TaskResult(
        task_id="t",
        status=TaskStatus.PROCESSING,
        eta=eta,
        progress_percent=progress,
        extra=extra,
    )


def taught(kind: str, miss: float, times: int = DurationStats.MIN_MISSES) -> DurationStats:
    """A history that has seen ``times`` forecasts of ``kind`` miss by exactly ``miss``."""
    history = DurationStats()
    for _ in range(times):
        history.observe_miss(kind, miss)
    return history


@attrs.frozen
class Run:
    """What a simulated batch cost: polls per job and how late each end was seen."""

    polls_per_job: float
    delays: list[float]
    late_first_polls: int

    def share_seen_within(self, seconds: float) -> float:
        """The share of jobs whose end was seen at most ``seconds`` late."""
        return sum(delay <= seconds for delay in self.delays) / len(self.delays)


def simulate(
    policy: PollPolicy, *, jobs: int = 320, active: int = 32, seed: int = 7, learn: bool = True
) -> Run:
    """Log-normal jobs (median 75 s, sigma 0.45, 20 % queued) with an eta off by up to 30 %.

    Like the fake service: integer progress of the processing part, debug_info times, a
    fresh eta error at each answer. Time is virtual: each poll is an event on a heap.
    """
    rng = random.Random(seed)
    history = DurationStats() if learn else None
    schedule_rng = random.Random(seed + 1)
    events: list[tuple[float, int, float, float, PollSchedule]] = []
    polls = late_first = 0
    delays: list[float] = []
    started = 0

    def start(now: float) -> None:
        nonlocal started
        started += 1
        duration = 75.0 * math.exp(rng.gauss(0.0, 0.45))
        schedule = PollSchedule(policy, history=history, rng=schedule_rng)
        heapq.heappush(events, (now + schedule.first_delay(), started, now, duration, schedule))

    for _ in range(min(active, jobs)):
        start(0.0)
    while events:
        now, number, submitted, duration, schedule = heapq.heappop(events)
        polls += 1
        age = now - submitted
        if age >= duration:
            late_first += schedule._last_poll is None
            schedule.ended(age)
            delays.append(age - duration)
            if started < jobs:
                start(now)
            continue
        queued = 0.2 * duration
        processed = max(0.0, age - queued)
        noise = 1.3 ** max(-1.0, min(1.0, rng.gauss(0.0, 0.5)))
        answer = running(
            eta=(duration - age) * noise,
            progress=min(99, int(processed / (duration - queued) * 100)),
            queued_ms=round(queued * 1000) if processed > 0 else None,
        )
        wait = schedule.next_delay(answer, elapsed=age)
        heapq.heappush(events, (now + wait, number, submitted, duration, schedule))
    return Run(polls / jobs, delays, late_first)


def test_before_enough_ends_the_schedule_polls_at_a_fraction_of_the_eta() -> None:
    """With too few forecast errors seen, the next poll comes at eta_fraction of the eta."""
    history = taught(ETA, 1.0, times=DurationStats.MIN_MISSES - 1)
    schedule = PollSchedule(EXACT, history=history)
    assert schedule.next_delay(running(eta=20.0), elapsed=10.0) == pytest.approx(14.0)
    assert history.miss_window(ETA) is None


def test_an_eta_known_to_be_exact_is_polled_at_its_end() -> None:
    """Once etas have been seen to hit the end, the next poll lands on the eta itself."""
    schedule = PollSchedule(EXACT, history=taught(ETA, 1.0))
    assert schedule.next_delay(running(eta=12.0), elapsed=5.0) == pytest.approx(12.0)


def test_an_eta_known_to_run_long_is_scaled_by_its_learnt_error() -> None:
    """Etas seen to be twice the real remaining time aim the poll at half the eta."""
    schedule = PollSchedule(EXACT, history=taught(ETA, 0.5))
    assert schedule.next_delay(running(eta=20.0), elapsed=5.0) == pytest.approx(10.0)


@pytest.mark.usefixtures("no_margin")
def test_a_wide_window_is_polled_just_past_its_near_edge() -> None:
    """Etas seen to miss by 0.5x-1.5x: the end lies 10-30 s out, the poll comes at 11 s."""
    history = DurationStats()
    for miss in (0.5, 1.5) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    schedule = PollSchedule(EXACT, history=history)
    assert schedule.next_delay(running(eta=20.0), elapsed=5.0) == pytest.approx(11.0)


@pytest.mark.usefixtures("no_margin")
def test_a_window_under_twice_the_tolerance_is_polled_one_tolerance_before_its_far_edge() -> None:
    """A 1.5 s wide window: a poll at far edge - min_interval sees the end at most 1 s late."""
    history = DurationStats()
    for miss in (0.95, 1.1) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    schedule = PollSchedule(EXACT, history=history)
    # The end lies 9.5-11 s out: poll at 10 s.
    assert schedule.next_delay(running(eta=10.0), elapsed=0.0) == pytest.approx(10.0)


@pytest.mark.usefixtures("no_margin")
def test_windows_of_successive_answers_are_intersected() -> None:
    """A second answer's window is cut down by the first's, so the far edge is the earlier one."""
    history = DurationStats()
    for miss in (0.8, 1.2) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(eta=10.0), elapsed=0.0)  # the end lies in 8-12 s
    # The next answer alone places it in 9.4-12.6 s; both together in 9.4-12 s, polled at
    # 10.4 s (7.4 s after this answer).
    assert schedule.next_delay(running(eta=8.0), elapsed=3.0) == pytest.approx(7.4)
    assert schedule._window == pytest.approx((9.4, 12.0))


def test_an_answer_contradicting_the_window_replaces_it() -> None:
    """When the windows do not overlap, the latest answer is the guide."""
    schedule = PollSchedule(EXACT, history=taught(ETA, 1.0))
    schedule.next_delay(running(eta=5.0), elapsed=0.0)
    assert schedule.next_delay(running(eta=7.0), elapsed=4.0) == pytest.approx(7.0)
    assert schedule._window == pytest.approx((11.0, 11.0))


def test_progress_with_the_processing_start_places_the_end() -> None:
    """40 % done, 8 s processed after a 2 s queue: the processing lasts 20 s, the end is at 22 s."""
    schedule = PollSchedule(EXACT, history=taught(PROGRESS, 0.0))
    answer = running(progress=40, queued_ms=2_000)
    assert schedule.next_delay(answer, elapsed=10.0) == pytest.approx(12.0)


def test_progress_misses_are_learnt_in_points_of_the_processing() -> None:
    """A job seen ended between 21.5 s and 21.8 s teaches how far behind its progress was."""
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(progress=30, queued_ms=2_000), elapsed=10.0)
    schedule.next_delay(running(progress=95, queued_ms=2_000), elapsed=21.5)
    schedule.ended(21.8)
    # Judged against the middle of the span (21.65 s): 19.65 s of processing.
    expected = sorted([8 / 19.65 - 0.30, 19.5 / 19.65 - 0.95])
    assert history._misses[PROGRESS]._sorted == pytest.approx(expected)


def test_an_end_known_only_roughly_teaches_nothing_of_progress() -> None:
    """Seen ended 5 s after the last answer, the end is too vague to judge a progress forecast."""
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(progress=95, queued_ms=2_000), elapsed=21.5)
    schedule.ended(26.5)
    assert len(history._misses[PROGRESS]) == 0
    assert history._durations.quantile(0.5) == pytest.approx(22.5 - 0.0, abs=1.0)


def test_aimed_waits_are_bounded_by_min_interval_and_max_aimed_interval() -> None:
    """An aimed wait never drops under min_interval nor passes max_aimed_interval."""
    policy = attrs.evolve(EXACT, max_aimed_interval=50.0)
    history = taught(ETA, 1.0)
    assert PollSchedule(policy, history=history).next_delay(running(eta=0.2), elapsed=1.0) == 1.0
    far = PollSchedule(policy, history=history).next_delay(running(eta=400.0), elapsed=1.0)
    assert far == 50.0
    # The aimed bound scales with the rest of the policy.
    assert policy.scaled(0.5).max_aimed_interval == 25.0


def test_aimed_jitter_only_moves_a_poll_earlier_and_by_a_share_of_the_tolerance() -> None:
    """Jitter on an aimed poll stays within [aim - jitter x min_interval, aim]."""
    policy = attrs.evolve(EXACT, jitter=0.2)
    history = taught(ETA, 1.0)
    rng = random.Random(3)
    for _ in range(50):
        delay = PollSchedule(policy, history=history, rng=rng).next_delay(
            running(eta=40.0), elapsed=0.0
        )
        assert 40.0 - 0.2 <= delay <= 40.0


def test_a_pushed_task_keeps_its_backstop_and_teaches_nothing() -> None:
    """With a webhook backstop the learnt window is not used and its end is not learnt."""
    history = taught(ETA, 1.0)
    schedule = PollSchedule(EXACT, history=history, backstop=60.0)
    assert schedule.pushed
    assert schedule.next_delay(running(eta=5.0), elapsed=1.0) == 60.0
    schedule.ended(70.0)
    assert history.quantile(0.5) is None
    assert len(history._misses[ETA]) == DurationStats.MIN_MISSES


def test_unreadable_debug_info_reads_as_no_queue() -> None:
    """Missing, non-numeric or backwards debug_info times give 0 s queued."""
    ms = "1700000000000"
    for extra in (
        {},
        {"debug_info": "x"},
        {"debug_info": {"submit_time_ms": "soon", "execute_time_ms": ms}},
        {"debug_info": {"submit_time_ms": ms, "execute_time_ms": "0"}},
        {"debug_info": {"submit_time_ms": None, "execute_time_ms": ms}},
    ):
        assert _queued_seconds(extra) == 0.0
    assert _queued_seconds({"debug_info": {"submit_time_ms": 1000, "execute_time_ms": 3500}}) == 2.5


def test_learning_halves_the_polls_of_a_simulated_batch() -> None:
    """On noisy-eta log-normal jobs the learnt schedule makes under 60 % of the polls of the
    fixed eta fraction, still seeing 95 % of the ends within min_interval.
    """
    policy = PollPolicy()
    learnt = simulate(policy)
    fixed_fraction = simulate(policy, learn=False)
    assert fixed_fraction.share_seen_within(policy.min_interval * 1.05) >= 0.95
    assert learnt.polls_per_job < 0.6 * fixed_fraction.polls_per_job
    assert learnt.share_seen_within(policy.min_interval * 1.05) >= 0.95
    assert learnt.late_first_polls <= 0.03 * 320


def test_waiting_is_lateness_past_the_quickest_answers() -> None:
    """Polls answered 3 s after their aimed time, then on time: the wait is measured above
    the on-time floor, by the running mean's weight.
    """
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    first = schedule.first_delay()
    schedule.next_delay(running(eta=20.0), elapsed=first + 3.0)
    # The mean (from 0) is still under the only answer's 3 s, the floor: no waiting yet.
    assert history.waiting == 0.0
    # The next poll was aimed 14 s later (70 % of the eta); seen ended on time.
    schedule.ended(first + 3.0 + 14.0)
    assert history.waiting == pytest.approx(3.0 * DurationStats.LATENESS_WEIGHT * 0.95)


def test_a_slow_network_alone_does_not_make_polls_frugal() -> None:
    """Every answer 2 s late (a slow round trip, no queue): no waiting is seen."""
    history = DurationStats()
    for _ in range(500):
        history.observe_lateness(2.0)
    assert history.waiting == pytest.approx(0.0, abs=1e-6)


@pytest.mark.usefixtures("no_margin")
def test_when_polls_wait_for_the_budget_each_one_is_aimed_past_the_end() -> None:
    """Polls late by more than min_interval: first polls after the longest job seen, and the
    next at the far edge of a wide window, where an end is seen in one poll.
    """
    history = DurationStats()
    for miss in (0.5, 1.5) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    for seconds in (20.0, 30.0, 40.0, 50.0, 60.0):
        history.observe(seconds)
    relaxed = PollSchedule(EXACT, history=history)
    assert relaxed.first_delay() == pytest.approx(20.0)
    assert relaxed.next_delay(running(eta=20.0), elapsed=20.0) == pytest.approx(11.0)
    history.observe_lateness(0.0)  # a quick answer: the floor
    for _ in range(200):
        history.observe_lateness(5.0)
    frugal = PollSchedule(EXACT, history=history)
    assert frugal.first_delay() == pytest.approx(60.0)
    assert frugal.next_delay(running(eta=20.0), elapsed=65.0) == pytest.approx(30.0)


forecast_values = st.one_of(
    st.none(), st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
)
answers = st.lists(
    st.tuples(
        forecast_values,  # eta
        st.one_of(st.none(), st.floats(min_value=-5, max_value=105)),  # progress
        st.one_of(st.none(), st.integers(-(10**6), 10**12)),  # queued ms
        st.floats(min_value=0, max_value=1e4),  # seconds since the previous answer
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    misses=st.lists(st.floats(min_value=-3, max_value=5), max_size=40),
    lateness=st.floats(min_value=0, max_value=100),
    script=answers,
    ended_after=st.floats(min_value=0, max_value=1e4),
)
def test_any_answers_give_waits_within_the_policy_bounds(
    misses: list[float], lateness: float, script: list[Any], ended_after: float
) -> None:
    """Whatever the forecasts and the learnt misses, every wait is finite and within bounds."""
    policy = PollPolicy(max_aimed_interval=120.0)
    history = DurationStats()
    for miss in misses:
        history.observe_miss(ETA, miss)
        history.observe_miss(PROGRESS, miss / 10)
    for _ in range(50):
        history.observe_lateness(lateness)
    schedule = PollSchedule(policy, history=history, rng=random.Random(1))
    low, high = policy.min_interval * (1 - policy.jitter), 120.0 * (1 + policy.jitter)
    elapsed = schedule.first_delay()
    assert low <= elapsed <= high
    for eta, progress, queued_ms, gap in script:
        answer = running(eta=eta, progress=progress, queued_ms=queued_ms)
        wait = schedule.next_delay(answer, elapsed=elapsed + gap)
        assert math.isfinite(wait)
        assert low <= wait <= high
        elapsed += gap + wait
    schedule.ended(elapsed + ended_after)
