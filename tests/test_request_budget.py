"""The request budget's pacer: unused spacing carried over, and a window never over budget."""

from __future__ import annotations

import heapq
import random

import anyio
import pytest

from hailuo_async import Limits, VideoRequest
from hailuo_async._limits import AdaptiveRate, RequestLimiter, _Pacer
from hailuo_async.extend import SharedState
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

WINDOW, RPM = 60.0, 240.0
SPACING = WINDOW / RPM  # a known budget is spaced at its rate: the window keeps the count


def _pacer(*, known: float | None = RPM) -> _Pacer:
    rate = AdaptiveRate(window=WINDOW, known=known)
    return _Pacer(rate, 0.95)


def _burst(pacer: _Pacer, now: float) -> int:
    """Requests that may leave at ``now``, one after the other, without waiting."""
    left = 0
    while pacer.wait(now) <= 0:
        pacer.depart(now)
        left += 1
    return left


def test_the_start_is_evenly_spaced() -> None:
    """Credit is earned by spacing left unused, never granted at the start."""
    pacer = _pacer()
    assert _burst(pacer, 0.0) == 1
    assert pacer.wait(0.0) == pytest.approx(SPACING)


def test_unused_spacing_carries_over_up_to_a_sixth_of_the_window() -> None:
    """After 30 idle seconds, 10 seconds' worth of requests (a sixth of 60) leave at once."""
    pacer = _pacer()
    _burst(pacer, 0.0)
    pacer.answered(0.1)
    carried = int(WINDOW / 6 / SPACING)
    assert _burst(pacer, 30.0) == 1 + carried
    # Then the even schedule again, from where the credit left it.
    assert pacer.wait(30.0) == pytest.approx((carried + 1) * SPACING - WINDOW / 6)


def test_a_discovered_rate_is_spaced_alone() -> None:
    """A rate learnt from 429s carries nothing over: its value is the uncertain part."""
    pacer = _pacer(known=None)
    pacer.rate.value = RPM
    _burst(pacer, 0.0)
    assert _burst(pacer, 30.0) == 1


@pytest.mark.parametrize("seed", range(5))
def test_no_window_can_count_more_than_the_budget(seed: int) -> None:
    """However demand and answers come, no window of the service's can hold the account's
    limit: a request leaves only while fewer are in flight or answered within a window."""
    rng = random.Random(seed)
    pacer = _pacer()
    sent: list[tuple[float, float]] = []  # (left, answered)
    answers: list[tuple[float, int]] = []  # (when, index into sent)
    now = 0.0
    wanted = 6 * int(RPM)
    while len(sent) < wanted:
        if rng.random() < 0.01:
            now += rng.uniform(0.0, 20.0)  # nothing asked for a while: spacing goes unused
        while answers and answers[0][0] <= now:
            when, _ = heapq.heappop(answers)
            pacer.answered(when)
        wait = pacer.wait(now)
        if wait > 0:
            now = min(now + wait, answers[0][0]) if answers else now + wait
            continue
        pacer.depart(now)
        # Answers come back after anything from a moment to several seconds.
        latency = rng.choice([0.001, 0.05, 0.5, 3.0]) * rng.random()
        heapq.heappush(answers, (now + latency, len(sent)))
        sent.append((now, now + latency))
    for index, (left, _) in enumerate(sent):
        # The service counts a request from when it arrives (between leaving and its
        # answer): at worst every earlier one arrived as late, and this one at once.
        counted = sum(1 for _, answered in sent[: index + 1] if answered + WINDOW > left)
        assert counted <= RPM


def test_the_whole_budget_is_spent_when_answers_come_at_once() -> None:
    """With no margin kept, a window of steady demand holds exactly the account's limit."""
    pacer = _pacer()
    left: list[float] = []
    now = 0.0
    while len(left) < 3 * int(RPM):
        wait = pacer.wait(now)
        if wait > 0:
            now += wait
            continue
        pacer.depart(now)
        pacer.answered(now)  # a loopback answer: the request arrived as it left
        left.append(now)
    # Every window from the second on (the first is spaced from a standing start).
    busiest = max(
        sum(1 for t in left if start - WINDOW < t <= start) for start in left if start >= WINDOW
    )
    quietest = min(
        sum(1 for t in left if start - WINDOW < t <= start) for start in left if start >= WINDOW
    )
    assert busiest == quietest == RPM


async def test_turns_taken_but_not_used_leave_nothing_in_flight() -> None:
    """A request cancelled after its turn, or sent back by a pause, is not left counted."""
    limiter = RequestLimiter(max_in_flight=1, requests_per_minute=600, rate_window=60.0)
    pacer = limiter._pacer
    async with limiter.slot("poll"):
        async with anyio.create_task_group() as group:
            group.start_soon(_enter_and_leave, limiter)
            await anyio.sleep(0.3)  # past its turn, it waits for the one place in flight
            group.cancel_scope.cancel()
        assert pacer._in_flight == 1
    assert pacer._in_flight == 0
    assert len(pacer._answered) == 1


async def test_take_now_takes_a_place_only_where_slot_would_not_wait() -> None:
    """take_now takes free places up to the in-flight cap, and none while paced or paused."""
    limiter = RequestLimiter(max_in_flight=2)
    assert [limiter.take_now("poll") for _ in range(3)] == [True, True, False]
    assert not limiter.take_now("download")  # every place in flight is held
    limiter.give_back("poll")
    assert limiter.take_now("submit")
    limiter.give_back("submit")
    limiter.give_back("poll")
    limiter.on_rate_limited("poll", 30.0)
    assert not limiter.take_now("submit")  # a rate 429 holds back every budget kind
    paced = RequestLimiter(max_in_flight=2, requests_per_minute=600)
    assert not paced.take_now("poll")  # a paced request waits its turn in slot
    assert paced.take_now("download")  # downloads do not spend the budget
    paced.give_back("download")


async def _enter_and_leave(limiter: RequestLimiter) -> None:
    async with limiter.slot("submit"):
        pass


async def test_a_short_budget_bound_batch_meets_no_rate_limit() -> None:
    """A batch whose places fill before any poll is due spends the carried-over spacing
    later, and the fake's window (sliding, every request counted) never refuses one."""
    rpm, cap, jobs = 60, 5, 40
    async with FakeHailuoServer(
        in_process=True,
        time_scale=0.01,
        seed=2,
        job_duration=Fixed(2.0),
        requests_per_minute=rpm,
        max_active_tasks=cap,
    ) as server:
        limits = Limits(requests_per_minute=rpm, max_active_jobs=cap)
        async with server.client(limits=limits) as client:
            requests = (VideoRequest(f"a fox, take {i}") for i in range(jobs))
            async with client.generate_many(requests) as outcomes:
                done = [outcome async for outcome in outcomes]
        stats = server.stats
    assert all(outcome.ok for outcome in done)
    assert len(done) == jobs
    assert stats.rate_limited == {}
    assert stats.api_requests > rpm  # more than one window's budget: the window bound


def test_a_rate_429_pauses_every_kind_that_spends_the_budget() -> None:
    """A rate 429 on a submit pauses polls too; an active-cap 429 pauses submits only."""
    limiter = SharedState.in_memory(Limits(max_in_flight=4)).limiter
    limiter.on_rate_limited("submit", 30.0, rate_exceeded=True)
    assert limiter.paused_for("poll") > 0
    assert limiter.paused_for("download") == 0
    capped = SharedState.in_memory(Limits(max_in_flight=4)).limiter
    capped.on_rate_limited("submit", 30.0, rate_exceeded=False)
    assert capped.paused_for("submit") > 0
    assert capped.paused_for("poll") == 0


def test_the_first_rate_429_sets_the_rate_from_the_admitted_requests() -> None:
    """A first 429 early in the run paces from what was admitted, not what was sent."""
    rate = AdaptiveRate(window=60.0, known=None)
    rate.record_sent(0.0)
    for i in range(12):
        rate.on_success(0.1 * i)
    rate.on_rate_limited(2.0)
    assert rate.value == pytest.approx(12 * 0.75)
    few = AdaptiveRate(window=60.0, known=None)
    few.record_sent(0.0)
    for i in range(3):
        few.on_success(0.1 * i)
    few.on_rate_limited(2.0)
    assert few.value is None  # three answers say too little: the pause alone acts


async def test_a_request_waiting_its_turn_respects_a_pause_set_meanwhile() -> None:
    """A request queued at the pacer when a 429 comes waits for that pause too."""
    limiter = SharedState.in_memory(Limits(max_in_flight=4, requests_per_minute=600)).limiter
    async with limiter.slot("poll"):
        pass  # the pacer's next turn is now 0.1 s away
    left_at: list[float] = []

    async def request() -> None:
        async with limiter.slot("poll"):
            left_at.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        group.start_soon(request)
        await anyio.sleep(0.01)  # it waits at the pacer
        limiter.on_rate_limited("submit", 0.3)
        paused_at = anyio.current_time()
    assert left_at
    assert left_at[0] >= paused_at + 0.3 - 0.01


async def test_a_budget_bound_batch_spends_the_whole_window_and_meets_no_refusal() -> None:
    """With no margin kept, a MiniMax batch (submits, queries and retrieves all counted)
    fills some window of the fake's to the limit exactly, and the fake refuses none."""
    rpm, jobs = 10, 10
    async with FakeHailuoServer(
        provider="minimax",
        in_process=True,
        time_scale=0.02,
        seed=4,
        job_duration=Fixed(2.0),
        requests_per_minute=rpm,
    ) as server:
        async with server.client(limits=Limits(requests_per_minute=rpm)) as client:
            requests = (VideoRequest(f"a heron, take {i}") for i in range(jobs))
            async with client.generate_many(requests) as outcomes:
                done = [outcome async for outcome in outcomes]
        stats = server.stats
    assert [outcome.ok for outcome in done] == [True] * jobs
    assert stats.rate_limited == {}
    assert stats.error_codes == {}
    assert stats.api_requests >= 3 * jobs  # three windows' worth: the window bound acts
    assert stats.busiest_window == rpm
