"""generate_many with a journal and downloads: reruns skip, re-watch, and never pay twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from clientutil import make_client

from hailuo_async import (
    HailuoError,
    SubmissionUnknownError,
    TaskFailedError,
    VideoRequest,
)
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.journal._keys import JobKeyer
from hailuo_async.testing import FakeHailuoServer, Fixed, Uniform, sample_video

pytestmark = pytest.mark.anyio

SCALE = 0.01


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests."""
    return (VideoRequest(prompt=f"journaled {i}") for i in range(count))


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 20 to 40 service seconds."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=4, job_duration=Uniform(20, 40)
    ) as fake:
        yield fake


async def test_a_finished_batch_run_again_submits_nothing(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """The second run yields every job from the journal, files included, with no request."""
    journal, videos = tmp_path / "run.sqlite", tmp_path / "videos"
    async with make_client(server) as client:
        async with client.generate_many(
            prompts(8), max_active_jobs=8, journal=journal, download_to=videos
        ) as outcomes:
            first = {o.index: o async for o in outcomes}
        submissions, downloads = server.stats.submissions_accepted, server.stats.storage_downloads
        async with client.generate_many(
            prompts(8), max_active_jobs=8, journal=journal, download_to=videos
        ) as outcomes:
            second = {o.index: o async for o in outcomes}
    assert all(o.ok and o.path and not o.replayed for o in first.values())
    assert all(o.replayed for o in second.values())
    assert {i: (o.task_id, o.path) for i, o in second.items()} == {
        i: (o.task_id, o.path) for i, o in first.items()
    }
    assert server.stats.submissions_accepted == submissions == 8
    assert server.stats.storage_downloads == downloads
    assert all(Path(o.path).read_bytes() == sample_video() for o in second.values() if o.path)


async def test_an_interrupted_batch_resumes_without_resubmitting(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """Jobs submitted before the stop are watched again, the rest submitted once."""
    journal = tmp_path / "run.sqlite"
    async with make_client(server) as client:
        async with client.generate_many(prompts(12), max_active_jobs=6, journal=journal) as outs:
            async for _ in outs:
                break
        async with SQLiteJobStore(journal) as store:
            states = await store.counts()
        assert states.get(JobState.SUBMITTED, 0) > 0
        async with client.generate_many(prompts(12), max_active_jobs=6, journal=journal) as outs:
            resumed = [o async for o in outs]
    assert sorted(o.index for o in resumed) == list(range(12))
    assert all(o.ok for o in resumed)
    assert server.stats.submissions_accepted == 12
    assert server.stats.duplicate_submissions == 0
    assert not server.stats.never_polled_task_ids


async def test_an_interrupted_submission_is_surfaced_not_resent(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """A job left "submitting" by a crash comes out as SubmissionUnknownError, unsent."""
    journal = tmp_path / "run.sqlite"
    requests = list(prompts(3))
    keyer = JobKeyer()
    specs = [keyer.spec(request) for request in requests]
    async with SQLiteJobStore(journal) as store:
        await store.record(specs)
        await store.mark_submitting(specs[1].key)
    async with make_client(server) as client:
        async with client.generate_many(requests, max_active_jobs=3, journal=journal) as outs:
            results = {o.index: o async for o in outs}
    assert isinstance(results[1].error, SubmissionUnknownError)
    assert results[0].ok
    assert results[2].ok
    assert server.stats.submissions_accepted == 2


async def test_resubmit_policy_sends_an_unknown_submission_again(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """With on_unknown_submission="resubmit" the interrupted job is sent again."""
    journal = tmp_path / "run.sqlite"
    requests = list(prompts(2))
    spec = JobKeyer().spec(requests[0])
    async with SQLiteJobStore(journal) as store:
        await store.record([spec])
        await store.mark_submitting(spec.key)
    async with make_client(server, on_unknown_submission="resubmit") as client:
        async with client.generate_many(requests, max_active_jobs=2, journal=journal) as outs:
            results = [o async for o in outs]
    assert all(o.ok for o in results)
    assert server.stats.submissions_accepted == 2


async def test_failed_jobs_are_retried_only_when_asked(tmp_path: Path) -> None:
    """Jobs the service failed stay failed on a rerun, unless retry_failed is given."""
    journal = tmp_path / "run.sqlite"
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=1, job_duration=Uniform(20, 30), failure_rate=1.0
    ) as failing:
        async with make_client(failing) as client:
            async with client.generate_many(prompts(4), max_active_jobs=4, journal=journal) as o:
                first = [outcome async for outcome in o]
    assert all(isinstance(outcome.error, TaskFailedError) for outcome in first)
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=2, job_duration=Uniform(20, 30)
    ) as good:
        async with make_client(good) as client:
            async with client.generate_many(prompts(4), max_active_jobs=4, journal=journal) as o:
                again = [outcome async for outcome in o]
            assert good.stats.submission_attempts == 0
            assert all(isinstance(outcome.error, HailuoError) for outcome in again)
            async with client.generate_many(
                prompts(4), max_active_jobs=4, journal=journal, retry_failed=True
            ) as o:
                retried = [outcome async for outcome in o]
        assert good.stats.submissions_accepted == 4
    assert all(outcome.ok for outcome in retried)


async def test_keys_name_jobs_across_runs(server: FakeHailuoServer, tmp_path: Path) -> None:
    """Caller keys survive a rerun even when the order of the requests changes."""
    journal = tmp_path / "run.sqlite"
    pairs = [(f"k{i}", VideoRequest(prompt=f"keyed {i}")) for i in range(4)]
    async with make_client(server) as client:
        async with client.generate_many(pairs, max_active_jobs=4, journal=journal) as outs:
            first = {o.key: o.task_id async for o in outs}
        async with client.generate_many(
            list(reversed(pairs)), max_active_jobs=4, journal=journal
        ) as outs:
            second = {o.key: o.task_id async for o in outs}
    assert first == second
    assert set(first) == {"k0", "k1", "k2", "k3"}
    assert server.stats.submissions_accepted == 4


async def test_a_job_leased_by_another_worker_is_skipped_not_failed(tmp_path: Path) -> None:
    """A job another worker holds is skipped (counted), not reported as failed."""
    store = SQLiteJobStore(tmp_path / "leased.sqlite")
    await store.open()
    requests = list(prompts(3))
    await store.record([JobKeyer().spec(requests[0], None)])
    assert len(await store.claim("other-worker", 1, lease_seconds=3600)) == 1
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=3, job_duration=Fixed(20)
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(requests, journal=store) as outcomes:
                results = [o async for o in outcomes]
                counts = outcomes.counts
    await store.aclose()
    assert sorted(o.index for o in results) == [1, 2]
    assert all(o.ok for o in results)
    assert counts.skipped == 1
    assert server.stats.submissions_accepted == 2
