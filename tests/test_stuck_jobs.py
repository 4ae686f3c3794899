"""Issue 14, sections 2 and 3: jobs that never end, and jobs left running when a batch is left."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from clientutil import make_client

from hailuo_async import (
    JobTimeoutError,
    LeftRunningJob,
    PollPolicy,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from hailuo_async._polling import ETA, DurationStats, PollSchedule
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed, Uniform

pytestmark = pytest.mark.anyio

SCALE = 0.01
# Jobs that outlast any test: a billion service seconds.
FOREVER = Fixed(1e9)
# A ceiling of 60 service seconds (0.6 s real), polls at most 30 service seconds apart.
CEILING = PollPolicy(max_job_duration=60.0, max_interval=30.0)


def _request(n: int = 0) -> VideoRequest:
    return VideoRequest(prompt=f"a lighthouse in fog, take {n}")


async def test_a_job_that_never_ends_gets_a_typed_error_after_the_ceiling(tmp_path: Path) -> None:
    """A stuck job ends as JobTimeoutError, stays SUBMITTED, and a rerun watches it again."""
    journal = tmp_path / "batch.db"
    policy = CEILING.scaled(SCALE)
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=FOREVER, profile="captured", seed=1
    ) as server:
        for run in (1, 2):
            async with (
                make_client(server, poll_policy=policy) as client,
                client.generate_many([("only", _request())], journal=journal) as outcomes,
            ):
                ended = [outcome async for outcome in outcomes]
            [outcome] = ended
            [task_id] = server.task_ids
            assert isinstance(outcome.error, JobTimeoutError)
            assert outcome.task_id == outcome.error.task_id == task_id
            assert outcome.error.limit == pytest.approx(60.0 * SCALE)
            assert not outcome.error.unknown_status
            assert isinstance(outcome.error.last_result, TaskResult)
            assert outcome.error.last_result.status is TaskStatus.QUEUED
            async with SQLiteJobStore(journal) as store:
                record = await store.get("only")
            assert record is not None
            assert record.state is JobState.SUBMITTED, "kept for a rerun to watch"
            assert record.task_id == task_id
            # Never resubmitted: the rerun watched the same task.
            assert server.stats.submissions_accepted == 1
            # Polls back off toward max_interval (0.3 s) over the 0.6 s ceiling: a handful,
            # where polling at min_interval (0.01 s) would have made sixty.
            assert server.stats.polls_by_task[task_id] <= 6 * run


async def test_an_unknown_status_ends_the_watch_after_the_shorter_setting() -> None:
    """A job answering an undocumented status ends as JobTimeoutError(unknown_status=True)."""
    policy = PollPolicy(max_job_duration=None, max_unknown_duration=10.0).scaled(SCALE)
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=FOREVER, unknown_status=1.0, seed=2
    ) as server:
        async with make_client(server, poll_policy=policy) as client:
            task_id = await client.submit(_request())
            async with client.watch([task_id]) as watcher:
                results = [result async for result in watcher]
        assert results == []
        error = watcher.errors[task_id]
        assert isinstance(error, JobTimeoutError)
        assert error.unknown_status
        assert error.limit == pytest.approx(10.0 * SCALE)
        assert error.last_result is not None
        assert error.last_result.status is TaskStatus.UNKNOWN
        assert error.last_result.raw_status == "TASK_STATUS_SUSPENDED"
        # Seen unknown at the first poll, ended at most a few polls later.
        assert server.stats.polls_by_task[task_id] <= 4


async def test_an_unknown_status_that_ends_in_time_is_a_normal_result() -> None:
    """An undocumented status that turns into an end before the limit yields the result."""
    policy = PollPolicy(max_unknown_duration=1000.0).scaled(SCALE)
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=Fixed(20.0), unknown_status=1.0, seed=3
    ) as server:
        async with make_client(server, poll_policy=policy) as client:
            result = await client.generate(_request())
        assert result.ok


def test_a_job_that_outruns_its_forecasts_is_polled_on_a_backoff() -> None:
    """Forecasts that keep placing the end a moment away: waits grow to max_interval."""
    policy = PollPolicy(jitter=0.0, min_interval=1.0, max_interval=30.0, backoff=2.0)
    history = DurationStats()
    for _ in range(DurationStats.MIN_MISSES):
        history.observe_miss(ETA, 1.0)
    schedule = PollSchedule(policy, history=history)
    stale = TaskResult(task_id="t", status=TaskStatus.PROCESSING, eta=1.0)
    elapsed, waits = 100.0, []
    for _ in range(12):
        wait = schedule.next_delay(stale, elapsed=elapsed)
        waits.append(wait)
        elapsed += wait
    assert waits[0] == pytest.approx(1.0), "on time, the forecast is trusted"
    assert waits == sorted(waits), "each overrun waits longer"
    assert waits[-1] == pytest.approx(30.0)


def test_the_ceilings_scale_with_the_policy() -> None:
    """PollPolicy.scaled scales both ceilings, and None stays None."""
    scaled = PollPolicy(max_job_duration=None).scaled(0.5)
    assert scaled.max_job_duration is None
    assert scaled.max_unknown_duration == pytest.approx(150.0)
    assert PollPolicy().max_job_duration == 1800.0
    with pytest.raises(ValueError, match="max_job_duration"):
        PollPolicy(max_job_duration=0)


# -- section 3: jobs left running --------------------------------------------------------------


async def test_breaking_out_lists_every_job_whose_outcome_was_not_yielded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a break, left_running names exactly the created tasks not yielded; one WARNING."""
    requests = [(f"job-{n}", _request(n)) for n in range(4)]
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=Uniform(5.0, 3000.0), seed=4
    ) as server:
        async with make_client(server) as client:
            with caplog.at_level(logging.WARNING, logger="hailuo_async"):
                async with client.generate_many(requests, max_active_jobs=4) as outcomes:
                    first = await outcomes.__anext__()
        created = set(server.task_ids)
    assert len(created) == 4
    left = outcomes.left_running
    assert all(isinstance(job, LeftRunningJob) for job in left)
    assert {job.task_id for job in left} == created - {first.task_id}
    assert sorted(job.index for job in left) == sorted(set(range(4)) - {first.index})
    for job in left:
        assert job.key == f"job-{job.index}"
    warnings = [r for r in caplog.records if "still running" in r.getMessage()]
    assert len(warnings) == 1
    assert all(job.task_id in warnings[0].getMessage() for job in left)


async def test_posts_landing_during_the_exit_grace_are_listed() -> None:
    """Leaving while POSTs are on the wire: the ids they bring back are in left_running."""
    slow = Faults(slow=1.0, slow_seconds=0.3)  # every answer held back 0.3 s
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=FOREVER, faults=slow, seed=5
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(
                [_request(n) for n in range(2)], max_active_jobs=2
            ) as outcomes:
                # Leave once both tasks exist and their answers are still on the way.
                with anyio.fail_after(30):
                    while len(server.task_ids) < 2:  # noqa: ASYNC110 - the fake has no event
                        await anyio.sleep(0.005)
                assert outcomes.counts.submitting == 2
        created = server.task_ids
    assert server.stats.submissions_accepted == 2
    assert sorted(job.task_id for job in outcomes.left_running) == sorted(created)
    assert [job.key for job in outcomes.left_running] == [None, None]


async def test_leaving_250_running_jobs_logs_one_short_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """250 jobs left running: one WARNING under 2,000 characters; all 250 in left_running."""
    async with FakeHailuoServer(time_scale=SCALE, job_duration=FOREVER, seed=7) as server:
        async with make_client(server) as client:
            with caplog.at_level(logging.WARNING, logger="hailuo_async"):
                requests = [(f"job-{n}", _request(n)) for n in range(250)]
                async with client.generate_many(requests, max_active_jobs=250) as outcomes:
                    with anyio.fail_after(60):
                        while outcomes.counts.running < 250:  # noqa: ASYNC110 - no event
                            await anyio.sleep(0.01)
        created = set(server.task_ids)
    assert {job.task_id for job in outcomes.left_running} == created
    assert len(created) == 250
    assert outcomes.left_unread == ()
    (warning,) = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert len(warning) <= 2000
    assert "250 job(s) still running" in warning
    assert "left_running" in warning


async def test_a_batch_read_to_its_end_leaves_nothing_running() -> None:
    """A batch whose every outcome was yielded has an empty left_running, and no warning."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, job_duration=Fixed(5.0), seed=6
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many([_request(n) for n in range(3)]) as outcomes:
                ended = [outcome async for outcome in outcomes]
    assert len(ended) == 3
    assert outcomes.left_running == ()
