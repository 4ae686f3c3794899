"""generate_many: limits kept, outcomes in completion order, early exit, lazy sources."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from clientutil import SCALED_RETRY, client_tasks, make_client

from hailuo_async import (
    AuthenticationError,
    HailuoClient,
    InvalidRequestError,
    JobStream,
    Limits,
    TaskEvent,
    TaskFailedError,
    VideoRequest,
)
from hailuo_async.extend import RequestKind, SharedState
from hailuo_async.testing import FakeHailuoServer, Fixed, Uniform

pytestmark = pytest.mark.anyio

SCALE = 0.01


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests, made lazily."""
    return (VideoRequest(prompt=f"prompt {i}") for i in range(count))


def peak_active(server: FakeHailuoServer) -> int:
    """The most tasks the fake held unfinished at any moment."""
    changes = sorted(
        [(task.created_at, 1) for task in server.tasks.values()]
        + [(task.finished_at, -1) for task in server.tasks.values()]
    )
    return max(itertools.accumulate(step for _, step in changes))


def waiting(events: MemoryObjectReceiveStream[TaskEvent]) -> list[TaskEvent]:
    """The events waiting in the stream, taken without waiting for more."""
    taken = []
    while True:
        try:
            taken.append(events.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return taken


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 30 to 90 service seconds (0.3 to 0.9 s)."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=3, job_duration=Uniform(30, 90)
    ) as fake:
        yield fake


async def test_every_request_gets_one_outcome(server: FakeHailuoServer) -> None:
    """Each request is submitted once and yields one successful outcome with its index."""
    async with make_client(server) as client:
        async with client.generate_many(prompts(40), max_active_jobs=15) as outcomes:
            results = [outcome async for outcome in outcomes]
    assert sorted(o.index for o in results) == list(range(40))
    assert all(o.ok and o.task_id and o.result and o.result.video for o in results)
    assert server.stats.submissions_accepted == 40
    assert server.stats.duplicate_submissions == 0


async def test_outcomes_come_in_the_order_their_ends_were_seen(server: FakeHailuoServer) -> None:
    """Each outcome is yielded as soon as a poll sees its job end: in the order the ends were
    seen (the watcher's "done" events), never before the service ended the job."""
    yielded: list[str] = []
    async with make_client(server) as client:
        async with client.generate_many(prompts(20), max_active_jobs=20) as outcomes:
            with outcomes.events() as events:
                async for outcome in outcomes:
                    assert outcome.task_id is not None
                    assert server.finished_at(outcome.task_id) is not None
                    yielded.append(outcome.task_id)
                seen = waiting(events)
    assert len(yielded) == 20
    assert yielded == [event.task_id for event in seen if event.kind == "done"]


async def test_active_job_limit_is_never_exceeded(server: FakeHailuoServer) -> None:
    """The service never holds more unfinished jobs than max_active_jobs."""
    async with make_client(server) as client:
        async with client.generate_many(prompts(30), max_active_jobs=7) as outcomes:
            async for _ in outcomes:
                assert outcomes.counts.running + outcomes.counts.submitting <= 7
    assert peak_active(server) <= 7
    assert server.stats.rate_limited_total == 0


async def test_given_limits_meet_no_429() -> None:
    """With the account's limits given, a batch never meets a 429."""
    async with FakeHailuoServer(
        in_process=True,
        time_scale=SCALE,
        seed=5,
        job_duration=Uniform(20, 40),
        max_active_tasks=5,
        requests_per_minute=120,
    ) as server:
        async with make_client(server, max_active_jobs=5, requests_per_minute=120) as client:
            async with client.generate_many(prompts(40)) as outcomes:
                results = [o async for o in outcomes]
    assert all(o.ok for o in results)
    assert server.stats.rate_limited_total == 0


async def test_discovered_active_limit_settles() -> None:
    """Without the limit given, the batch finds the service's cap and stays under it."""
    async with FakeHailuoServer(
        in_process=True,
        time_scale=SCALE,
        seed=5,
        job_duration=Uniform(20, 40),
        max_active_tasks=6,
        retry_after=False,
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(120)) as outcomes:
                results = [o async for o in outcomes]
    assert all(o.ok for o in results)
    assert server.stats.duplicate_submissions == 0
    assert server.stats.rate_limited.get("active_cap", 0) <= 12


async def test_a_429_pauses_the_whole_client() -> None:
    """After a rate 429, no submit or poll leaves until the pause it set has ended."""
    left: list[float] = []  # when each request left the limiter for the wire
    pauses: list[tuple[float, float]] = []  # (start, end) of each pause a 429 set
    async with FakeHailuoServer(
        in_process=True,
        time_scale=SCALE,
        seed=2,
        job_duration=Fixed(30),
        requests_per_minute=30,
        retry_after=True,
    ) as server:
        async with make_client(server) as client:
            limiter = client._state.limiter
            slot, on_rate_limited = limiter.slot, limiter.on_rate_limited

            @contextlib.asynccontextmanager
            async def watched_slot(kind: RequestKind) -> AsyncIterator[None]:
                async with slot(kind):
                    left.append(time.monotonic())
                    yield

            def watched_429(kind: RequestKind, retry_after: float | None, **kw: bool) -> float:
                start = time.monotonic()
                pause = on_rate_limited(kind, retry_after, **kw)
                pauses.append((start, start + pause))
                return pause

            limiter.slot = watched_slot  # type: ignore[method-assign]
            limiter.on_rate_limited = watched_429  # type: ignore[method-assign]
            async with client.generate_many(prompts(30), max_active_jobs=30) as outcomes:
                results = [o async for o in outcomes]
    assert all(o.ok for o in results)
    assert server.stats.rate_limited_total == len(pauses) >= 1
    # Requests already on the wire when a 429 came may meet more; none leaves during a pause.
    assert not [(t, start, end) for t in left for start, end in pauses if start < t < end]


async def test_a_failed_job_does_not_stop_the_batch() -> None:
    """Failed jobs come out as outcomes with TaskFailedError and the rest carry on."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=11, job_duration=Uniform(20, 40), failure_rate=0.3
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(30), max_active_jobs=10) as outcomes:
                results = [o async for o in outcomes]
    failed = [o for o in results if not o.ok]
    assert len(results) == 30
    assert failed
    assert all(isinstance(o.error, TaskFailedError) and o.result for o in failed)
    assert any(o.ok for o in results)


async def test_an_endless_source_is_read_lazily(server: FakeHailuoServer) -> None:
    """An endless generator is read only as far as the active-job limit allows."""
    pulled = 0

    def endless() -> Iterator[VideoRequest]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield VideoRequest(prompt=f"endless {i}")

    async with make_client(server) as client:
        async with client.generate_many(endless(), max_active_jobs=4) as outcomes:
            taken = 0
            async for _ in outcomes:
                taken += 1
                if taken == 6:
                    break
    assert pulled <= 6 + 4 + 1


async def test_leaving_early_stops_everything(server: FakeHailuoServer) -> None:
    """Breaking out stops submitting and polling at once and leaves no task behind."""
    async with make_client(server) as client:
        before = client_tasks()
        async with client.generate_many(prompts(200), max_active_jobs=20) as outcomes:
            async for _ in outcomes:
                break
        assert client_tasks() == before
        await anyio.sleep(0.05)  # requests already on the wire when we left still land
        submitted, polled = server.stats.submission_attempts, server.stats.polls_total
        await anyio.sleep(0.5)
        assert server.stats.submission_attempts == submitted
        assert server.stats.polls_total == polled


async def test_jobs_queued_past_the_in_flight_cap_are_not_sent_after_leaving(
    server: FakeHailuoServer,
) -> None:
    """Jobs queued past max_in_flight are dropped on leaving, unsent; no task id is lost."""
    async with make_client(server, max_in_flight=2) as client:
        async with client.generate_many(prompts(40), max_active_jobs=20) as outcomes:
            first = await anext(outcomes)
        assert outcomes.counts.submitting == 0
        left = outcomes.left_running + outcomes.left_unread
        known = {first.task_id} | {job.task_id for job in left}
    # Every task the fake made is one the caller can see: yielded, or left (running or not).
    assert set(server.tasks) == known
    assert server.stats.submission_attempts == len(server.tasks) < 40
    assert server.stats.duplicate_submissions == 0


async def test_cancellation_stops_everything(server: FakeHailuoServer) -> None:
    """Cancelling the consumer from outside leaves no task behind."""
    async with make_client(server) as client:
        before = client_tasks()
        with anyio.move_on_after(0.3):
            async with client.generate_many(prompts(100), max_active_jobs=20) as outcomes:
                async for _ in outcomes:
                    pass
        assert client_tasks() == before
        await anyio.sleep(0.05)  # requests already on the wire when we left still land
        submitted = server.stats.submission_attempts
        await anyio.sleep(0.3)
        assert server.stats.submission_attempts == submitted


async def test_the_callers_exception_propagates_unwrapped(server: FakeHailuoServer) -> None:
    """An exception raised in the loop body comes out as itself, not as an ExceptionGroup."""
    async with make_client(server) as client:
        with pytest.raises(KeyError):
            async with client.generate_many(prompts(10), max_active_jobs=5) as outcomes:
                async for _ in outcomes:
                    raise KeyError("mine")


async def test_a_bad_item_stops_reading_but_not_running_jobs(server: FakeHailuoServer) -> None:
    """A bad item ends the reading; jobs already submitted are yielded, then the error raised."""

    def source() -> Iterator[object]:
        yield VideoRequest(prompt="one")
        yield VideoRequest(prompt="two")
        yield "three"

    async with make_client(server) as client:
        seen = []
        with pytest.raises(InvalidRequestError, match="item 2"):
            async with client.generate_many(source(), max_active_jobs=5) as outcomes:  # type: ignore[arg-type]
                async for outcome in outcomes:
                    seen.append(outcome)
    assert sorted(o.index for o in seen) == [0, 1]
    assert all(o.ok for o in seen)


async def test_async_sources_and_keys_are_accepted(server: FakeHailuoServer) -> None:
    """An async iterable of (key, request) pairs runs, and each outcome carries its key."""

    async def source() -> AsyncIterator[tuple[str, VideoRequest]]:
        for i in range(5):
            yield f"key-{i}", VideoRequest(prompt=f"keyed {i}")

    async with make_client(server) as client:
        async with client.generate_many(source(), max_active_jobs=5) as outcomes:
            keys = sorted([o.key async for o in outcomes if o.key])
    assert keys == [f"key-{i}" for i in range(5)]


async def test_a_wrong_key_stops_the_submissions_and_every_job_comes_out_unsent(
    server: FakeHailuoServer,
) -> None:
    """A wrong API key stops the submissions at the first refusals; each job comes out unsent."""
    async with HailuoClient(
        "wrong", base_url=server.url, transport=server.transport(), max_retries=0
    ) as client:
        async with client.generate_many(prompts(100), max_active_jobs=4) as outcomes:
            seen = [outcome async for outcome in outcomes]
    assert len(seen) == 100
    assert all(isinstance(outcome.error, AuthenticationError) for outcome in seen)
    assert all(outcome.task_id is None for outcome in seen)
    assert server.stats.submissions_accepted == 0
    # The POSTs already on their way when the first refusal came (one per place), no more.
    assert server.stats.submission_attempts <= 4


async def test_a_failed_submission_waiting_for_room_is_yielded_before_the_stream_closes() -> None:
    """A refused job's outcome, queued behind another while the reader waits, is not lost.

    The interleaving the fault soak met by chance, forced: job B ends and its outcome waits
    for the reader (the stream holds none), then job A is refused (413) and its outcome waits
    behind B's. Taking B's outcome then ends the batch's last running job; the stream must
    stay open until A's outcome is taken too.
    """
    small = VideoRequest(prompt="B: a short prompt")
    refused = VideoRequest(prompt="A: " + "too long for the fake's body limit " * 40)
    async with (
        FakeHailuoServer(
            in_process=True, time_scale=SCALE, job_duration=Fixed(10), max_body_bytes=1024
        ) as fake,
        make_client(fake) as client,
    ):
        stream = client.generate_many(_after_first_outcome_waits(small, refused, lambda: stream))
        async with stream as outcomes:
            # Both outcomes wait for the reader: B's handed to the stream, A's behind it.
            while stream.counts.done < 2:  # noqa: ASYNC110 - the batch has no event for it
                await anyio.sleep(0.01)
            got = [outcome async for outcome in outcomes]
    assert [(outcome.request, outcome.ok) for outcome in got] == [(small, True), (refused, False)]
    assert fake.stats.submissions_accepted == 1
    assert fake.stats.rejected_by_field


async def _after_first_outcome_waits(
    first: VideoRequest, second: VideoRequest, stream: Callable[[], JobStream]
) -> AsyncIterator[VideoRequest]:
    """``first``, then ``second`` once the first job's outcome waits for the reader."""
    yield first
    while stream().counts.succeeded < 1:  # noqa: ASYNC110 - the batch has no event for it
        await anyio.sleep(0.01)
    yield second


async def test_a_batch_under_its_own_limit_does_not_teach_the_client() -> None:
    """Submit 429s in a batch with max_active_jobs leave the client's learnt limit alone."""
    # The client's own state, as make_client would make it, held here to be read after.
    state = SharedState.in_memory(Limits(rate_window=60 * SCALE), retry=SCALED_RETRY)
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=3, job_duration=Uniform(20, 40), max_active_tasks=2
    ) as server:
        async with make_client(server, state=state) as client:
            before = state.active_jobs.value
            async with client.generate_many(prompts(8), max_active_jobs=8) as outcomes:
                results = [o async for o in outcomes]
    assert all(o.ok for o in results)
    assert server.stats.rate_limited.get("active_cap", 0) > 0
    assert state.active_jobs.value == before


async def test_a_failing_event_callback_loses_no_job(caplog: pytest.LogCaptureFixture) -> None:
    """An on_event callback that raises is logged with the task id; the batch goes on."""

    def explode(event: TaskEvent) -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR, logger="hailuo_async")
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=3, job_duration=Fixed(20)
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(5), on_event=explode) as outcomes:
                results = [o async for o in outcomes]
    assert sorted(o.index for o in results) == list(range(5))
    assert all(o.ok for o in results)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert all(o.task_id in logged for o in results if o.task_id)


async def test_a_batch_exposes_events_and_poll_counts_not_its_watcher() -> None:
    """Callers read a batch's events and counts; its watcher is not public."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=3, job_duration=Fixed(20)
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(prompts(4)) as outcomes:
                with outcomes.events() as events:
                    results = [o async for o in outcomes]
                    seen = waiting(events)
                counts = outcomes.counts
    assert not hasattr(outcomes, "watcher")
    assert len(results) == 4
    assert {e.task_id for e in seen if e.kind == "done"} == {o.task_id for o in results}
    assert counts.polls >= 4
