"""PollSchedule learning from forecast errors, on a virtual clock (no sockets, no sleeps)."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailuo_async import PollPolicy, TaskResult, TaskStatus
from hailuo_async._polling import (
    ETA,
    PROGRESS,
    DurationStats,
    PollSchedule,
    PollSchedules,
)
from hailuo_async.providers._gateway import read_task_result

EXACT = PollPolicy(jitter=0.0, min_interval=1.0, max_interval=30.0)


@pytest.fixture
def no_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Learnt windows exactly between the quantiles, for arithmetic a reader can check."""
    monkeypatch.setattr(DurationStats, "MARGIN", 0.0)


def running(
    *, eta: float | None = None, progress: float | None = None, queued_ms: int | None = None
) -> TaskResult:
    """A PROCESSING answer with the given forecasts (and the time queued when queued_ms)."""
    return TaskResult(
        task_id="t",
        status=TaskStatus.PROCESSING,
        eta=eta,
        progress_percent=progress,
        started_after=None if queued_ms is None else queued_ms / 1000,
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
    by_start: list[tuple[int, float]] = attrs.Factory(list)
    """Each job's polls and how late its end was seen, in the order the jobs started."""

    def share_seen_within(self, seconds: float) -> float:
        """The share of jobs whose end was seen at most ``seconds`` late."""
        return sum(delay <= seconds for delay in self.delays) / len(self.delays)


def lognormal_75(rng: random.Random) -> float:
    """A job's duration: log-normal, median 75 s, sigma 0.45 (90 % of them 36-157 s)."""
    return 75.0 * math.exp(rng.gauss(0.0, 0.45))


def noisy(rng: random.Random) -> float:
    """The fake service's eta error: off by up to 30 % either way, fresh at each answer."""
    return float(1.3 ** max(-1.0, min(1.0, rng.gauss(0.0, 0.5))))


def simulate(
    policy: PollPolicy,
    *,
    jobs: int = 320,
    active: int = 32,
    seed: int = 7,
    learn: bool = True,
    duration: Callable[[random.Random], float] = lognormal_75,
    eta: Callable[[random.Random], float] | None = noisy,
    progress: bool = True,
    reported: bool = False,
) -> Run:
    """Jobs (log-normal by default, 20 % queued) with an eta off by ``eta`` (a factor drawn at
    each answer; None: no eta), integer progress of the processing part with debug_info times
    (``progress``), and the end's time in the final answer (``reported``).

    Like the fake service. Time is virtual: each poll is an event on a heap.
    """
    rng = random.Random(seed)
    history = DurationStats() if learn else None
    schedule_rng = random.Random(seed + 1)
    events: list[tuple[float, int, float, float, PollSchedule]] = []
    polls = late_first = 0
    delays: list[float] = []
    by_start: dict[int, tuple[int, float]] = {}
    job_polls: dict[int, int] = {}
    started = 0

    def start(now: float) -> None:
        nonlocal started
        started += 1
        schedule = PollSchedule(policy, history=history, rng=schedule_rng)
        job = (now + schedule.first_delay(), started, now, duration(rng), schedule)
        heapq.heappush(events, job)

    for _ in range(min(active, jobs)):
        start(0.0)
    while events:
        now, number, submitted, length, schedule = heapq.heappop(events)
        polls += 1
        job_polls[number] = job_polls.get(number, 0) + 1
        age = now - submitted
        if age >= length:
            late_first += schedule._last_poll is None
            end = ended(length) if reported else None
            schedule.ended(age, end)
            delays.append(age - length)
            by_start[number] = (job_polls.pop(number), age - length)
            if started < jobs:
                start(now)
            continue
        queued = 0.2 * length
        processed = max(0.0, age - queued)
        answer = running(
            eta=None if eta is None else (length - age) * eta(rng),
            progress=min(99, int(processed / (length - queued) * 100)) if progress else None,
            queued_ms=round(queued * 1000) if processed > 0 and progress else None,
        )
        wait = schedule.next_delay(answer, elapsed=age)
        heapq.heappush(events, (now + wait, number, submitted, length, schedule))
    return Run(polls / jobs, delays, late_first, [by_start[number] for number in sorted(by_start)])


def ended(seconds: float) -> TaskResult:
    """A SUCCEED answer that says the job ended ``seconds`` after submission."""
    return TaskResult(task_id="t", status=TaskStatus.SUCCEED, ended_after=round(seconds, 3))


def test_before_enough_ends_a_cautious_prior_window_aims_the_poll() -> None:
    """With too few forecast errors seen, an eta is taken to be off by -50 % to +60 %: the end
    lies 10-32 s after the answer, and the poll comes one tolerance past the near edge.
    """
    history = taught(ETA, 1.0, times=DurationStats.MIN_MISSES - 1)
    schedule = PollSchedule(EXACT, history=history)
    assert history.miss_window(ETA) is None
    assert history.miss_bounds(ETA) == DurationStats.PRIOR[ETA] == (0.5, 1.6)
    assert schedule.next_delay(running(eta=20.0), elapsed=10.0) == pytest.approx(11.0)


def test_without_a_history_the_schedule_polls_at_a_fraction_of_the_eta() -> None:
    """A schedule that learns nothing (no history) polls at eta_fraction of the eta."""
    schedule = PollSchedule(EXACT)
    assert schedule.next_delay(running(eta=20.0), elapsed=10.0) == pytest.approx(14.0)


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
def test_a_window_under_twice_the_tolerance_is_polled_one_tolerance_past_its_near_edge() -> None:
    """A 1.5 s wide window: a poll one tolerance in sees two thirds of the ends at once, each
    at most 1 s late; a later end leaves half a second for the next answer to place.
    """
    history = DurationStats()
    for miss in (0.95, 1.1) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    schedule = PollSchedule(EXACT, history=history)
    # The end lies 9.5-11 s out: poll at 10.5 s.
    assert schedule.next_delay(running(eta=10.0), elapsed=0.0) == pytest.approx(10.5)


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


@pytest.mark.usefixtures("no_margin")
def test_aimed_jitter_moves_a_catch_later_and_an_attempt_earlier_by_a_share_of_the_tolerance() -> (
    None
):
    """Jitter on a poll at a window's far edge stays within [aim, aim + jitter x min_interval]
    (earlier, an exact forecast would find the job still running); on a poll one tolerance
    into a wide window, within [aim - jitter x min_interval, aim].
    """
    policy = attrs.evolve(EXACT, jitter=0.2)
    exact = taught(ETA, 1.0)
    wide = DurationStats()
    for miss in (0.5, 1.5) * DurationStats.MIN_MISSES:
        wide.observe_miss(ETA, miss)
    rng = random.Random(3)
    catches, attempts = set(), set()
    for _ in range(50):
        catch = PollSchedule(policy, history=exact, rng=rng).next_delay(
            running(eta=40.0), elapsed=0.0
        )
        attempt = PollSchedule(policy, history=wide, rng=rng).next_delay(
            running(eta=40.0), elapsed=0.0
        )
        assert 40.0 <= catch <= 40.0 + 0.2
        assert 21.0 - 0.2 <= attempt <= 21.0
        catches.add(catch)
        attempts.add(attempt)
    assert len(catches) > 40, "the polls are spread"
    assert len(attempts) > 40, "the polls are spread"


def test_a_pushed_task_keeps_its_backstop_and_teaches_nothing() -> None:
    """With a webhook backstop the learnt window is not used and its end is not learnt."""
    history = taught(ETA, 1.0)
    schedule = PollSchedule(EXACT, history=history, backstop=60.0)
    assert schedule.pushed
    assert schedule.next_delay(running(eta=5.0), elapsed=1.0) == 60.0
    schedule.ended(70.0)
    assert history.quantile(0.5) is None
    assert len(history._misses[ETA]) == DurationStats.MIN_MISSES


def test_unreadable_debug_info_reads_as_no_service_times() -> None:
    """The gateway's missing, non-numeric or backwards debug_info times give no time hints."""
    ms = "1700000000000"

    def read(extra: dict[str, Any]) -> TaskResult:
        answer = {"task": {"status": "TASK_STATUS_PROCESSING"}, "extra": extra}
        return read_task_result(answer, task_id="t")

    for extra in (
        {},
        {"debug_info": "x"},
        {"debug_info": {"submit_time_ms": "soon", "execute_time_ms": ms}},
        {"debug_info": {"submit_time_ms": ms, "execute_time_ms": "0"}},
        {"debug_info": {"submit_time_ms": None, "execute_time_ms": ms}},
    ):
        assert read(extra).started_after is None
    times = {"submit_time_ms": 1000, "execute_time_ms": 3500, "complete_time_ms": "4000"}
    result = read({"debug_info": times})
    assert (result.started_after, result.ended_after) == (2.5, 3.0)


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
    wait = schedule.next_delay(running(eta=20.0), elapsed=first + 3.0)
    # The mean (from 0) is still under the only answer's 3 s, the floor: no waiting yet.
    assert history.waiting == 0.0
    # Seen ended right when the next poll was aimed.
    schedule.ended(first + 3.0 + wait)
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
    # Before the shortest job seen: of five, it stands for far more than the 1.5 % quantile.
    first = relaxed.first_delay()
    assert first < 20.0
    assert relaxed.next_delay(running(eta=20.0), elapsed=first) == pytest.approx(11.0)
    history.observe_lateness(0.0)  # a quick answer: the floor
    for _ in range(200):
        history.observe_lateness(5.0)
    frugal = PollSchedule(EXACT, history=history)
    assert frugal.first_delay() == pytest.approx(60.0)
    assert frugal.next_delay(running(eta=20.0), elapsed=65.0) == pytest.approx(30.0)


def _frugal_history() -> DurationStats:
    """A history whose polls wait long for the budget (5 s past the quickest answer)."""
    history = DurationStats()
    history.observe_lateness(0.0)  # a quick answer: the floor
    for _ in range(200):
        history.observe_lateness(5.0)
    return history


def test_when_polls_are_dear_a_task_without_forecasts_waits_to_be_as_old_as_any_seen() -> None:
    """With no eta nor progress, and before any job ended: a task younger than the oldest
    seen running is polled once it is as old; the oldest waits as long as it has run, not
    on a backoff from min_interval."""
    history = _frugal_history()
    oldest = PollSchedule(EXACT, history=history)
    assert oldest.next_delay(running(), elapsed=100.0) == pytest.approx(100.0)
    younger = PollSchedule(EXACT, history=history)
    assert younger.next_delay(running(), elapsed=40.0) == pytest.approx(60.0)
    # A new task's first poll too comes when it is as old as the oldest seen running.
    assert PollSchedule(EXACT, history=history).first_delay() == pytest.approx(100.0)


def test_when_polls_are_dear_a_poll_is_put_off_as_its_turn_comes_if_an_older_job_ran_on() -> None:
    """A task without forecasts whose poll's turn comes while a job older than it was seen
    running since is put off until it is as old; polls that are cheap never are."""
    history = _frugal_history()
    PollSchedule(EXACT, history=history).next_delay(running(), elapsed=100.0)
    younger = PollSchedule(EXACT, history=history)
    younger.first_delay()
    assert younger.postponed(30.0) == pytest.approx(70.0)
    assert younger.postponed(99.5) is None  # as old, within min_interval
    with_eta = PollSchedule(EXACT, history=history)
    with_eta.next_delay(running(eta=50.0), elapsed=20.0)
    assert with_eta.postponed(30.0) is None  # its forecasts place its polls
    cheap = DurationStats()
    PollSchedule(EXACT, history=cheap).next_delay(running(), elapsed=100.0)
    assert PollSchedule(EXACT, history=cheap).postponed(30.0) is None


def test_the_longest_seen_corrects_the_durations_seen_early_in_a_run() -> None:
    """Early on, only the quick jobs have ended: the slow ones seen running say that jobs
    run longer, so first polls come after them, not after the quick ones alone."""
    history = _frugal_history()
    for seconds in (30.0, 32.0, 35.0, 36.0, 40.0):
        history.observe(seconds)
    assert PollSchedule(EXACT, history=history).first_delay() == pytest.approx(40.0)
    PollSchedule(EXACT, history=history).next_delay(running(), elapsed=70.0)
    assert history.longest == 70.0
    assert PollSchedule(EXACT, history=history).first_delay() == pytest.approx(70.0)


def test_a_stuck_job_seen_running_holds_polls_back_at_most_twice_the_longest_end() -> None:
    """A job seen running far past every end counts as running twice the longest end."""
    history = DurationStats()
    for seconds in (30.0, 32.0, 35.0, 36.0, 40.0):
        history.observe(seconds)
    history.observe_running(900.0)
    assert history.longest == 80.0


def test_polls_answered_at_once_are_not_held_back_by_the_oldest_job() -> None:
    """Where polls are cheap (answered when aimed), a young task backs off from min_interval
    as before, however old the oldest job seen running."""
    history = DurationStats()
    PollSchedule(EXACT, history=history).next_delay(running(), elapsed=100.0)
    assert PollSchedule(EXACT, history=history).next_delay(
        running(), elapsed=40.0
    ) == pytest.approx(1.0)


def test_answers_with_forecasts_teach_no_running_ages() -> None:
    """An answer with an eta places polls by its forecast: it is not kept as a running age."""
    history = _frugal_history()
    PollSchedule(EXACT, history=history).next_delay(running(eta=20.0), elapsed=100.0)
    assert history.longest is None


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


# -- the planner on services of every kind (virtual clock: decisions, not timing) ---------------


def exact(_: random.Random) -> float:
    """An eta that is the real remaining time."""
    return 1.0


def twice(rng: random.Random) -> float:
    """A noisy eta twice the real remaining time (the end comes at about half of it)."""
    return 2.0 * noisy(rng)


def half(rng: random.Random) -> float:
    """A noisy eta half the real remaining time (the end comes at about twice it)."""
    return 0.5 * noisy(rng)


def test_the_planner_sees_ends_in_time_in_under_three_polls_per_job() -> None:
    """The polling benchmark's jobs (noisy eta, progress, the end in the final answer): under
    three polls per job, 95 % of the ends seen within min_interval, a handful at a late first poll.
    """
    policy = PollPolicy()
    run = simulate(policy, reported=True)
    assert run.polls_per_job < 3.0
    assert run.share_seen_within(policy.min_interval * 1.05) >= 0.95
    assert run.late_first_polls <= 0.02 * 320


def test_an_exact_eta_is_polled_about_twice() -> None:
    """An eta that is always right: once learnt, a poll lands on it (an exact eta's window is
    polled at its far edge, jitter only later), so about two polls per job, all in time.
    """
    policy = PollPolicy()
    run = simulate(policy, eta=exact, progress=False)
    assert run.polls_per_job < 2.5
    assert run.share_seen_within(policy.min_interval * 1.05) >= 0.98


@pytest.mark.parametrize("eta", [exact, noisy, twice, half], ids=["exact", "noisy", "2x", "0.5x"])
def test_an_eta_alone_sees_ends_in_time_once_its_error_is_learnt(
    eta: Callable[[random.Random], float],
) -> None:
    """Only an eta (as the real service answers), right or biased either way: after the first
    wave, ends are seen within min_interval, at a bounded cost in polls.
    """
    policy = PollPolicy()
    run = simulate(policy, eta=eta, progress=False)
    later = run.delays[-160:]
    assert sum(delay <= policy.min_interval * 1.05 for delay in later) >= 0.97 * len(later)
    assert run.polls_per_job < 5.0


def test_an_eta_running_long_teaches_its_way_out_of_a_prior_placing_ends_too_late() -> None:
    """An eta twice the real remaining time puts ends before the prior's window: every end is
    then seen by a poll long after the previous one; what such ends bound moves the window.
    """
    history = DurationStats()
    for _ in range(DurationStats.MIN_MISSES):
        schedule = PollSchedule(EXACT, history=history)
        first = schedule.first_delay()
        wait = schedule.next_delay(running(eta=100.0), elapsed=first)  # the end: first + 50
        assert schedule._attempt, "a wide prior window is entered one tolerance in"
        schedule.ended(first + wait)  # 51 s after that answer, seen ended
    low, _ = history.miss_bounds(ETA)
    assert low < DurationStats.PRIOR[ETA][0]
    aimed = PollSchedule(EXACT, history=history).next_delay(running(eta=100.0), elapsed=10.0)
    assert aimed < 50.0, "now a poll comes before the end the eta's bias puts at 50 s"


@pytest.mark.parametrize("eta", [None, exact], ids=["no eta", "exact eta"])
def test_progress_without_a_useful_eta_sees_ends_in_time(
    eta: Callable[[random.Random], float] | None,
) -> None:
    """Progress and its processing start alone place the end: 95 % seen within min_interval."""
    policy = PollPolicy()
    run = simulate(policy, eta=eta, reported=True)
    assert run.share_seen_within(policy.min_interval * 1.05) >= 0.95
    assert run.polls_per_job < 4.5


def test_an_eta_of_zero_is_no_forecast() -> None:
    """A running answer with eta 0 (the service's "unknown") backs off from min_interval, as
    without an eta, rather than aiming at an end already past.
    """
    policy = PollPolicy(jitter=0.0, min_interval=1.0, backoff=2.0)
    schedule = PollSchedule(policy, history=taught(ETA, 1.0))
    waits = [schedule.next_delay(running(eta=0.0), elapsed=10.0 + step) for step in range(4)]
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_instant_jobs_are_seen_at_their_first_poll_and_pull_it_in() -> None:
    """Jobs over in 50 ms: one poll each, and first polls move from first_poll_delay to about
    min_interval (the earliest a poll may come), so later ends are seen within it.
    """
    policy = PollPolicy()
    run = simulate(policy, duration=lambda _: 0.05, progress=False)
    assert run.polls_per_job == 1.0
    assert run.delays[0] > 5.0, "the first wave waits first_poll_delay"
    # Only the few jobs started before MIN_DURATIONS ends were seen still wait the default.
    later = run.delays[-160:]
    late = sum(delay > policy.min_interval * 1.05 for delay in later)
    assert late < DurationStats.MIN_DURATIONS


@pytest.mark.parametrize("reported", [False, True], ids=["bracketed", "reported"])
def test_jobs_of_a_few_seconds_are_seen_in_time_after_the_first_wave(reported: bool) -> None:
    """Jobs of 2-6 s: after the first wave, ends are seen within min_interval, in about 2 polls."""
    policy = PollPolicy()
    run = simulate(policy, duration=lambda rng: rng.uniform(2.0, 6.0), reported=reported)
    later = run.delays[-160:]
    assert sum(delay <= policy.min_interval * 1.05 for delay in later) >= 0.95 * len(later)
    assert run.polls_per_job < 2.5


def test_the_end_the_service_reports_judges_every_forecast_of_a_loosely_seen_job() -> None:
    """Seen ended 30 s after its last answer, a job whose final answer says it ended at 40 s
    teaches both forecasts' misses and its duration; without that, only a share of the bound
    the late sighting sets on the last eta's miss (it was polled one tolerance into a wide window).
    """
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(eta=20.0), elapsed=10.0)
    schedule.next_delay(running(eta=10.0), elapsed=20.0)
    schedule.ended(50.0, ended(40.0))
    assert history._misses[ETA]._sorted == pytest.approx([30.0 / 20.0, 20.0 / 10.0])
    assert history._durations._sorted == pytest.approx([40.0])

    vague = DurationStats()
    schedule = PollSchedule(EXACT, history=vague)
    schedule.next_delay(running(eta=20.0), elapsed=10.0)
    schedule.next_delay(running(eta=10.0), elapsed=20.0)
    schedule.ended(50.0)
    assert vague._misses[ETA]._sorted == pytest.approx([PollSchedule.CENSORED_SHARE * 30.0 / 10.0])


def test_a_reported_end_outside_the_span_is_kept_inside_it() -> None:
    """An end reported after the poll that saw it (a clock off) counts as that poll's time."""
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(eta=20.0), elapsed=10.0)
    schedule.ended(40.0, ended(400.0))
    assert history._durations._sorted == pytest.approx([40.0])


def test_a_learnt_progress_window_is_at_least_one_point_wide_toward_early_ends() -> None:
    """Progress misses seen all alike still leave a window a point wide, on the early side."""
    history = taught(PROGRESS, 0.002)
    low, high = history.miss_window(PROGRESS) or (0.0, 0.0)
    assert low == pytest.approx(0.002)
    assert high == pytest.approx(0.012)


def test_answers_coming_late_narrow_the_tolerance() -> None:
    """Answers 0.3 s after their aimed time: a 0.8 s window is entered 0.7 s in, not polled at
    its far edge, so that the end is still seen within min_interval of it.
    """
    history = DurationStats()
    for miss in (1.0, 1.08) * DurationStats.MIN_MISSES:
        history.observe_miss(ETA, miss)
    for _ in range(DurationStats.MIN_LATE):
        history.observe_lateness(0.3)
    schedule = PollSchedule(attrs.evolve(EXACT), history=history)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DurationStats, "MARGIN", 0.0)
        wait = schedule.next_delay(running(eta=10.0), elapsed=0.0)  # the end: 10-10.8 s
    assert wait == pytest.approx(10.7)
    on_time = DurationStats()
    for miss in (1.0, 1.08) * DurationStats.MIN_MISSES:
        on_time.observe_miss(ETA, miss)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DurationStats, "MARGIN", 0.0)
        wait = PollSchedule(EXACT, history=on_time).next_delay(running(eta=10.0), elapsed=0.0)
    assert wait == pytest.approx(10.8)


def test_few_durations_place_first_polls_before_the_shortest_seen() -> None:
    """Of five durations the shortest is no 1.5 % quantile: a log-normal fit to them is lower;
    of many, the quantile seen is used when the fit is not lower.
    """
    few = DurationStats()
    for seconds in (40.0, 50.0, 60.0, 70.0, 80.0):
        few.observe(seconds)
    assert (few.low_quantile(0.015) or 0.0) < 40.0
    many = DurationStats()
    rng = random.Random(5)
    for _ in range(500):
        many.observe(75.0 * math.exp(rng.gauss(0.0, 0.45)))
    true = 75.0 * math.exp(-2.17 * 0.45)
    assert (many.low_quantile(0.015) or 0.0) == pytest.approx(true, rel=0.15)
    assert DurationStats().low_quantile(0.015) is None


# -- without forecasts: the durations seen place the polls ---------------------------------------


def durations(*seconds: float) -> DurationStats:
    """A history that has seen jobs of exactly these durations."""
    history = DurationStats()
    for value in seconds:
        history.observe(value)
    return history


def test_without_forecasts_a_poll_aims_at_a_quantile_of_the_remaining_duration() -> None:
    """Jobs seen to take 10, 20, ..., 100 s: at 25 s, seven longer ones remain, and the poll
    comes at the 35 % quantile of those (50 s); at 75 s, at the middle of 80, 90, 100.
    """
    history = durations(*(10.0 * step for step in range(1, 11)))
    schedule = PollSchedule(EXACT, history=history)
    assert PollSchedule.REMAINING_SHARE == 0.35
    assert schedule.next_delay(running(), elapsed=25.0) == pytest.approx(25.0)
    assert schedule.next_delay(running(), elapsed=75.0) == pytest.approx(15.0)


def test_a_learnt_wait_without_forecasts_stays_within_max_interval() -> None:
    """Durations far beyond the task's age still wait at most max_interval: an end is never
    seen later than the backoff's cap would see it; a nearer one at least min_interval.
    """
    schedule = PollSchedule(EXACT, history=durations(*([500.0] * 10)))
    assert schedule.next_delay(running(), elapsed=20.0) == pytest.approx(EXACT.max_interval)
    near = PollSchedule(EXACT, history=durations(*([20.2] * 10)))
    assert near.next_delay(running(), elapsed=20.0) == pytest.approx(EXACT.min_interval)


def test_without_forecasts_or_enough_durations_polls_back_off() -> None:
    """Before MIN_DURATIONS ends, and past the longest duration seen, the backoff stands in:
    from min_interval by backoff, up to max_interval.
    """
    policy = PollPolicy(jitter=0.0, min_interval=1.0, backoff=2.0, max_interval=6.0)
    few = durations(*([50.0] * (DurationStats.MIN_DURATIONS - 1)))
    schedule = PollSchedule(policy, history=few)
    waits = [schedule.next_delay(running(), elapsed=10.0 + step) for step in range(5)]
    assert waits == [1.0, 2.0, 4.0, 6.0, 6.0]
    past = PollSchedule(policy, history=durations(*([50.0] * 10)))
    assert past.next_delay(running(), elapsed=60.0) == 1.0
    assert past.next_delay(running(), elapsed=61.0) == 2.0


def test_an_untimed_task_without_forecasts_backs_off() -> None:
    """A task whose age is counted from when it was first watched is not placed by durations."""
    schedule = PollSchedule(EXACT, history=durations(*([500.0] * 10)), timed=False)
    assert schedule.next_delay(running(), elapsed=20.0) == EXACT.min_interval


def test_an_end_seen_without_forecasts_is_learnt_mid_span() -> None:
    """Seen ended between polls at 10 s and 40 s with no forecast, the job is taken to have
    lasted 25 s (the middle), not 40 s: a span of long waits would bias durations late.
    """
    history = DurationStats()
    schedule = PollSchedule(EXACT, history=history)
    schedule.next_delay(running(), elapsed=10.0)
    schedule.ended(40.0)
    assert history._durations._sorted == pytest.approx([25.0])


def test_a_service_that_sends_no_forecasts_has_its_early_first_poll_skipped() -> None:
    """After QUIET_ANSWERS answers without a forecast, a first poll comes where the durations
    would aim the poll after the usual early one; one answer with an eta restores that one.
    """
    history = durations(*(10.0 * step for step in range(1, 11)))

    def first_after(*answers: TaskResult) -> tuple[bool, float]:
        for answer in answers:
            PollSchedule(EXACT, history=history).next_delay(answer, elapsed=5.0)
        return history.quiet, PollSchedule(EXACT, history=history).first_delay()

    _, early = first_after()
    assert first_after(*[running()] * (DurationStats.QUIET_ANSWERS - 1)) == (False, early)
    quiet, later = first_after(running())
    assert quiet
    assert later == pytest.approx(early + min(EXACT.max_interval, 40.0 - early))
    assert first_after(running(eta=30.0)) == (False, early)


@pytest.mark.parametrize("reported", [True, False], ids=["reported", "bracketed"])
def test_without_forecasts_learnt_durations_see_ends_in_under_four_polls(reported: bool) -> None:
    """The polling benchmark's jobs with no eta and no progress: after the first two waves,
    under four polls per job (the backoff alone: over nine), and the 95th percentile of how
    late ends are seen no worse than the backoff's.
    """
    policy = PollPolicy()
    run = simulate(policy, eta=None, progress=False, reported=reported)
    backoff = simulate(policy, eta=None, progress=False, reported=reported, learn=False)

    def after_warmup(of: Run) -> tuple[float, float]:
        later = of.by_start[64:]
        delays = sorted(delay for _, delay in later)
        return sum(polls for polls, _ in later) / len(later), delays[int(0.95 * len(delays))]

    polls, p95 = after_warmup(run)
    backoff_polls, backoff_p95 = after_warmup(backoff)
    assert polls < 4.0
    assert backoff_polls > 9.0
    assert p95 <= backoff_p95


@pytest.mark.parametrize("timed", [False, True])
@pytest.mark.parametrize("pushed", [False, True])
def test_a_watchers_schedules_share_settings_and_plan_as_alone(timed: bool, pushed: bool) -> None:
    """Schedules a watcher makes share one settings object per kind of task, keep their own
    state, and plan each poll as a schedule made on its own with the same settings does."""
    seen = [10.0 * step for step in range(1, 11)]
    schedules = PollSchedules(EXACT, history=durations(*seen), backstop=60.0)
    first = schedules.fresh(timed=timed, pushed=pushed)
    second = schedules.fresh(timed=timed, pushed=pushed)
    backstop = 60.0 if pushed else None
    # A history of its own, as each answer teaches the one it is given.
    alone = PollSchedule(EXACT, history=durations(*seen), timed=timed, backstop=backstop)
    assert first._settings is second._settings
    assert first.pushed is second.pushed is alone.pushed is pushed
    assert first.first_delay() == alone.first_delay()
    answers = [running(eta=40.0), running(progress=50.0, queued_ms=2000), running()]
    for step, answer in enumerate(answers, start=1):
        elapsed = 12.0 * step
        assert first.next_delay(answer, elapsed=elapsed) == alone.next_delay(
            answer, elapsed=elapsed
        )
    # The second schedule's state is its own: it has seen none of those answers.
    assert second._forecasts is None
    assert second._last_poll is None
