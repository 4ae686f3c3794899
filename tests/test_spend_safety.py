"""Issue 14, section 4: replayed failures keep their type and fields; leftover .part files go."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from clientutil import make_client

from hailuo_async import (
    APIConnectionError,
    BadRequestError,
    DownloadError,
    HailuoError,
    InvalidRequestError,
    RateLimitError,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    VideoRequest,
    WaitTimeoutError,
)
from hailuo_async._download import safe_filename, sweep_partial_downloads
from hailuo_async.extend import JobSpec
from hailuo_async.journal import JobState, JournalError, SQLiteJobStore, error_from_record
from hailuo_async.journal._sql import SCHEMA_VERSION
from hailuo_async.testing import FakeHailuoServer, Uniform

pytestmark = pytest.mark.anyio

SCALE = 0.01


def _failed_result(task_id: str) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.FAILED,
        raw_status="TASK_STATUS_FAILED",
        reason="content moderation: flagged",
        progress_percent=40.0,
        extra={"seed": "7"},
        received_at=datetime(2025, 6, 20, tzinfo=timezone.utc),
    )


ERRORS: list[HailuoError] = [
    TaskFailedError(_failed_result("t-failed")),
    RateLimitError(
        "too many",
        retry_after=2.5,
        status_code=429,
        body={"code": 429, "reason": "RATE_LIMIT_EXCEEDED"},
        headers={"X-Request-Id": "r1"},
        method="POST",
        url="https://api.test/v3/async/minimax-hailuo-02",
    ),
    BadRequestError("bad prompt", status_code=400, body="<html>no</html>"),
    APIConnectionError("refused", request_sent=False, method="POST"),
    InvalidRequestError("prompt", "must be 1 to 2000 characters long, not 0"),
    DownloadError("the storage host answered 500", url="https://s.test/v.mp4"),
    WaitTimeoutError("t-slow", _failed_result("t-slow"), 30.0),
    HailuoError("something else"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
async def test_a_journaled_failure_comes_back_as_the_same_error(
    error: HailuoError, tmp_path: Path
) -> None:
    """mark_failed keeps the error's class and attributes; error_from_record rebuilds them."""
    async with SQLiteJobStore(tmp_path / "j.db") as store:
        await store.record([JobSpec(key="k", index=0, payload={"prompt": "p"}, fingerprint="f")])
        await store.mark_failed("k", error)
        record = await store.get("k")
    assert record is not None
    assert record.state is JobState.FAILED
    again = error_from_record(record)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)


async def test_a_foreign_error_comes_back_as_a_hailuo_error(tmp_path: Path) -> None:
    """An error class the library does not define replays as HailuoError with its message."""
    async with SQLiteJobStore(tmp_path / "j.db") as store:
        await store.record([JobSpec(key="k", index=0, payload={"prompt": "p"}, fingerprint="f")])
        await store.mark_failed("k", RuntimeError("disk on fire"))
        record = await store.get("k")
    assert record is not None
    again = error_from_record(record)
    assert type(again) is HailuoError
    assert str(again) == "disk on fire"


async def test_a_retry_clears_the_stored_error(tmp_path: Path) -> None:
    """A failed job submitted again forgets the old error's fields."""
    async with SQLiteJobStore(tmp_path / "j.db") as store:
        await store.record([JobSpec(key="k", index=0, payload={"prompt": "p"}, fingerprint="f")])
        await store.mark_failed("k", ERRORS[0])
        await store.mark_submitting("k")
        record = await store.get("k")
    assert record is not None
    assert (record.error, record.error_type, record.error_fields) == (None, None, None)


_V1_TABLE = """CREATE TABLE hailuo_jobs (
    batch TEXT NOT NULL, key TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
    fingerprint TEXT NOT NULL, payload TEXT NOT NULL, task_id TEXT, result TEXT, error TEXT,
    error_type TEXT, path TEXT, attempts INTEGER NOT NULL DEFAULT 0, owner TEXT,
    lease_until REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL, submitted_at REAL,
    finished_at REAL, downloaded_at REAL, PRIMARY KEY (batch, key))"""


async def test_a_version_1_journal_is_upgraded(tmp_path: Path) -> None:
    """A journal written by schema 1 opens, reads its old failure, and takes new ones."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE hailuo_journal_meta (name TEXT PRIMARY KEY, value TEXT)")
        connection.execute("INSERT INTO hailuo_journal_meta VALUES ('schema_version', '1')")
        connection.execute(_V1_TABLE)
        connection.execute(
            "INSERT INTO hailuo_jobs (batch, key, idx, state, fingerprint, payload, error,"
            " error_type, created_at, updated_at) VALUES ('default', 'old', 0, 'failed', 'f',"
            " '{\"prompt\":\"p\"}', 'task t failed: no', 'TaskFailedError', 1.0, 1.0)"
        )
    connection.close()
    async with SQLiteJobStore(path) as store:
        old = await store.get("old")
        await store.record([JobSpec(key="new", index=1, payload={"prompt": "q"}, fingerprint="g")])
        await store.mark_failed("new", ERRORS[1])
        new = await store.get("new")
    with sqlite3.connect(path) as connection:
        version = connection.execute(
            "SELECT value FROM hailuo_journal_meta WHERE name = 'schema_version'"
        ).fetchone()
    connection.close()
    assert version == (str(SCHEMA_VERSION),) == ("2",)
    assert old is not None
    assert old.error_fields is None
    # Without stored fields the class is still known, its message kept.
    assert type(error_from_record(old)) is TaskFailedError
    assert str(error_from_record(old)) == "task t failed: no"
    assert new is not None
    assert isinstance(error_from_record(new), RateLimitError)


async def test_a_journal_from_a_newer_library_is_refused(tmp_path: Path) -> None:
    """A schema version this library does not know is an error, not a silent misread."""
    path = tmp_path / "new.db"
    async with SQLiteJobStore(path):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE hailuo_journal_meta SET value = '99'")
    connection.close()
    with pytest.raises(JournalError, match="schema version 99"):
        await SQLiteJobStore(path).open()


async def test_a_rerun_replays_the_original_task_failure(tmp_path: Path) -> None:
    """A failed job replayed by a rerun is a TaskFailedError with the original result."""
    journal = tmp_path / "run.sqlite"
    requests = [VideoRequest(prompt=f"doomed {i}") for i in range(3)]
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=1, job_duration=Uniform(20, 30), failure_rate=1.0
    ) as server:
        async with make_client(server) as client:
            async with client.generate_many(requests, journal=journal) as outcomes:
                first = {o.index: o async for o in outcomes}
            attempts = server.stats.submission_attempts
            async with client.generate_many(requests, journal=journal) as outcomes:
                again = {o.index: o async for o in outcomes}
        assert server.stats.submission_attempts == attempts
    for index, outcome in again.items():
        original = first[index].error
        assert outcome.replayed
        assert isinstance(original, TaskFailedError)
        assert isinstance(outcome.error, TaskFailedError)
        assert outcome.error.task_id == original.task_id
        assert outcome.error.result.reason == original.result.reason
        assert outcome.error.result.status is TaskStatus.FAILED


# -- leftover .part files -----------------------------------------------------------------


def _part(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_bytes(b"half a video")
    return path


async def test_sweep_removes_only_this_librarys_leftovers(tmp_path: Path) -> None:
    """Only hidden `.{video name}.{12 hex}.part` files of the given tasks are removed."""
    task = "5b9c1c2e-0d7f-4a43-9c55-3f8b0f1a2b3c"
    name = safe_filename(task)
    ours = [
        _part(tmp_path, f".{name}.0123456789ab.part"),
        _part(tmp_path, f".{task}.mov.a1b2c3d4e5f6.part"),
    ]
    users = [
        _part(tmp_path, f".{name}.part"),  # no token
        _part(tmp_path, f".{name}.abc.part"),  # a short token
        _part(tmp_path, f".{name}.0123456789AB.part"),  # not our lower-case hex
        _part(tmp_path, f"{name}.0123456789ab.part"),  # not hidden
        _part(tmp_path, ".other-task.mp4.0123456789ab.part"),  # another task's name
        _part(tmp_path, f".{name}.0123456789ab.part.bak"),
        _part(tmp_path, name),  # a finished video
    ]
    (tmp_path / f".{name}.fedcba987654.part").mkdir()  # a directory, not a file
    swept = await sweep_partial_downloads(tmp_path, [task])
    assert sorted(swept) == sorted(ours)
    assert not any(path.exists() for path in ours)
    assert all(path.exists() for path in users)
    assert (tmp_path / f".{name}.fedcba987654.part").is_dir()


async def test_sweep_of_a_missing_folder_or_no_tasks_does_nothing(tmp_path: Path) -> None:
    """Nothing to sweep is not an error."""
    assert await sweep_partial_downloads(tmp_path / "absent", ["t"]) == []
    leftover = _part(tmp_path, ".t.mp4.0123456789ab.part")
    assert await sweep_partial_downloads(tmp_path, []) == []
    assert leftover.exists()


async def test_a_journaled_batch_sweeps_its_leftovers_when_it_starts(tmp_path: Path) -> None:
    """A rerun with download_to removes its jobs' .part files and keeps the user's files."""
    journal, videos = tmp_path / "run.sqlite", tmp_path / "videos"
    requests = [VideoRequest(prompt=f"swept {i}") for i in range(2)]
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=5, job_duration=Uniform(20, 30)
    ) as fake:
        async with make_client(fake) as client:
            async with client.generate_many(requests, journal=journal) as outcomes:
                task_ids = [o.task_id async for o in outcomes]
            assert all(task_ids)
            # What a process killed mid-download leaves, and a user's file of similar name.
            videos.mkdir()
            leftovers = [
                _part(videos, f".{safe_filename(task_id)}.00ff00ff00ff.part")
                for task_id in task_ids
                if task_id is not None
            ]
            user_file = _part(videos, f".{safe_filename(task_ids[0] or '')}.mine.part")
            async with client.generate_many(
                requests, journal=journal, download_to=videos
            ) as outcomes:
                again = [o async for o in outcomes]
    assert all(o.ok and o.path for o in again)
    assert not any(path.exists() for path in leftovers)
    assert user_file.exists()
