"""A batch run again on a PostgreSQL journal resumes as on SQLite: replays, retry_failed.

The same scenarios run against both stores; each asserts on the outcomes, the journal's rows
and the fake's counters, never on timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pgutil import DSN

from hailuo_async import (
    HailuoClient,
    JobOutcome,
    JobStream,
    SubmissionUnknownError,
    VideoRequest,
    WorkerSettings,
)
from hailuo_async.extend import JobStore, job_specs
from hailuo_async.journal import JobState, PostgresJobStore, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

#: The fake refuses (413) a body over this; the long request below is over it.
BODY_LIMIT = 1024
TOO_LONG = VideoRequest("a fox, " + "in a very long prompt " * 60)


def _fake(**knobs: Any) -> FakeHailuoServer:
    return FakeHailuoServer(time_scale=0.01, job_duration=Fixed(20.0), seed=7, **knobs)


def _requests() -> list[tuple[str, VideoRequest]]:
    """Three jobs that succeed and one the first fake refuses."""
    return [(f"job-{i}", VideoRequest(f"a fox, take {i}")) for i in range(3)] + [
        ("job-long", TOO_LONG)
    ]


Journal = Callable[[], "SQLiteJobStore | PostgresJobStore"]


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """Makes (unopened) stores of one batch's journal: the scenarios run on both kinds."""
    if request.param == "sqlite":
        yield lambda: SQLiteJobStore(tmp_path / "j.sqlite", batch="b")
    else:
        schema = request.getfixturevalue("pg_schema")
        yield lambda: PostgresJobStore(DSN, batch="b", schema=schema)


def _settings(store: JobStore, name: str = "w") -> dict[str, Any]:
    """generate_many's worker settings for a shared store (a single process has none)."""
    if isinstance(store, PostgresJobStore):
        return {"worker": WorkerSettings(worker_id=name, lease=5.0, idle_poll=0.05)}
    return {}


async def _run(
    client: HailuoClient, store: JobStore, name: str = "w", **options: Any
) -> list[JobOutcome]:
    stream: JobStream = client.generate_many(
        _requests(), journal=store, batch="b", **_settings(store, name), **options
    )
    async with stream as outcomes:
        return sorted([outcome async for outcome in outcomes], key=lambda o: o.key or "")


def _summary(outcomes: list[JobOutcome]) -> list[tuple[str | None, bool, bool]]:
    return [(outcome.key, outcome.ok, outcome.replayed) for outcome in outcomes]


async def test_a_rerun_replays_what_earlier_runs_ended(journal: Journal, tmp_path: Path) -> None:
    """Ended jobs come back replayed (a failure as its class), videos never saved downloaded."""
    async with _fake(max_body_bytes=BODY_LIMIT) as fake, fake.client() as client:
        async with journal() as store:
            first = await _run(client, store)
        async with journal() as store:
            again = await _run(client, store, download_to=tmp_path / "videos")
            rows = await store.get_many()
        accepted = fake.stats.submissions_accepted
    assert _summary(first) == [
        ("job-0", True, False),
        ("job-1", True, False),
        ("job-2", True, False),
        ("job-long", False, False),
    ]
    assert _summary(again) == [(key, ok, True) for key, ok, _ in _summary(first)]
    assert type(again[-1].error) is type(first[-1].error)
    assert [o.task_id for o in again] == [o.task_id for o in first]
    for outcome in again[:3]:
        assert outcome.path is not None
        assert Path(outcome.path).parent == tmp_path / "videos"
        assert rows[outcome.key or ""].path == outcome.path
    assert accepted == 3


async def test_an_unknown_job_of_an_earlier_run_is_reported(journal: Journal) -> None:
    """A job whose submission's answer was lost is yielded as SubmissionUnknownError."""
    async with _fake() as fake, fake.client() as client:
        async with journal() as store:
            key, request = _requests()[0]
            await store.record(job_specs([request], [key]))
            await store.mark_submitting("job-0")
            await store.mark_unknown("job-0", "connection reset")
            outcomes = await _run(client, store)
        accepted = fake.stats.submissions_accepted
    unknown = next(o for o in outcomes if o.key == "job-0")
    assert isinstance(unknown.error, SubmissionUnknownError)
    assert unknown.replayed
    assert accepted == 3  # the three others, never job-0


async def test_retry_failed_submits_each_failure_once(journal: Journal) -> None:
    """retry_failed submits a failed job again once, even from two workers at once."""
    async with _fake(max_body_bytes=BODY_LIMIT) as first_fake, first_fake.client() as client:
        async with journal() as store:
            await _run(client, store)
    shared = isinstance(journal(), PostgresJobStore)
    async with _fake() as fake:
        results: dict[str, list[JobOutcome]] = {}

        async def rerun(name: str) -> None:
            async with fake.client() as client, journal() as store:
                results[name] = await _run(client, store, name, retry_failed=True)

        async with anyio.create_task_group() as group:
            group.start_soon(rerun, "a")
            if shared:  # two workers of one batch at once; SQLite has one process per batch
                group.start_soon(rerun, "b")
        async with journal() as store:
            rows = await store.get_many()
        accepted = fake.stats.submissions_accepted
    assert accepted == 1
    assert rows["job-long"].state is JobState.FINISHED
    assert rows["job-long"].attempts == 2
    fresh = [o for outcomes in results.values() for o in outcomes if not o.replayed]
    assert _summary(fresh) == [("job-long", True, False)]
    for outcomes in results.values():
        # The finished jobs are replayed; job-long too if it ended before a worker started.
        assert {"job-0", "job-1", "job-2"} <= {o.key for o in outcomes if o.replayed}
        assert all(o.ok for o in outcomes)
