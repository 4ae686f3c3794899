"""The job journal: keys, transitions, durability across crashes, resume plans and leases."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

import anyio
import anyio.lowlevel
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from pgutil import DSN

from hailuo_async import (
    BadRequestError,
    InvalidRequestError,
    SubmissionUnknownError,
    TaskResult,
    TaskStatus,
    Video,
    VideoRequest,
)
from hailuo_async._decoding import request_to_json
from hailuo_async.extend import JobSpec, JobStore, ResumeAction, job_specs
from hailuo_async.journal import (
    InvalidTransitionError,
    JobConflictError,
    JobState,
    JournalClosedError,
    JournalError,
    LeaseLostError,
    PostgresJobStore,
    SQLiteJobStore,
    UnknownJobError,
    job_keys,
)
from hailuo_async.journal._group import GroupCommitter
from hailuo_async.journal._keys import JobKeyer
from hailuo_async.journal._records import result_from_json, result_to_json
from hailuo_async.journal._sql import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

OpenStore = Callable[..., "SQLiteJobStore | PostgresJobStore"]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Makes (unopened) stores of one journal: the contract tests run against both kinds."""
    if request.param == "sqlite":
        return lambda batch="default": SQLiteJobStore(tmp_path / "j.db", batch=batch)
    schema = request.getfixturevalue("pg_schema")
    return lambda batch="default": PostgresJobStore(DSN, batch=batch, schema=schema)


def _specs(n: int, *, prefix: str = "job") -> list[JobSpec]:
    return [
        JobSpec(key=f"{prefix}-{i}", index=i, payload={"prompt": f"p{i}"}, fingerprint=f"f{i}")
        for i in range(n)
    ]


def _result(task_id: str) -> TaskResult:
    expires = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.SUCCEED,
        raw_status="TASK_STATUS_SUCCEED",
        eta=0.0,
        progress_percent=100.0,
        videos=(
            Video(url=f"https://store.test/{task_id}.mp4?sig=x", ttl=3600, expires_at=expires),
        ),
        extra={"seed": "42", "debug_info": {"submit_time_ms": "1"}},
    )


async def _state(store: JobStore, key: str) -> JobState:
    record = await store.get(key)
    assert record is not None
    return record.state


# -- keys ------------------------------------------------------------------------------------


def test_job_keys_number_repeated_requests() -> None:
    """The same request twice gets two keys: its fingerprint with occurrence numbers 1 and 2."""
    a, b = VideoRequest(prompt="a cat"), VideoRequest(prompt="a dog")
    keys = job_keys([a, b, VideoRequest(prompt="a cat")])
    assert keys == [f"{a.fingerprint}#1", f"{b.fingerprint}#1", f"{a.fingerprint}#2"]
    assert job_keys([a, b, VideoRequest(prompt="a cat")]) == keys


def test_job_keys_prefer_the_callers_keys() -> None:
    """A caller's key replaces the derived one; the others keep fingerprint keys."""
    a = VideoRequest(prompt="a cat")
    assert job_keys([a, a], ["mine", None]) == ["mine", f"{a.fingerprint}#1"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["same", "same"], "more than one request"),
        (["only-one"], "2 requests"),
        (["", "b"], "non-empty"),
        (["x" * 600, "b"], "printable"),
        (["line\nbreak", "b"], "printable"),
    ],
)
def test_job_keys_reject_bad_caller_keys(keys: list[str], message: str) -> None:
    """Duplicate, empty, overlong or unprintable caller keys are refused before anything runs."""
    with pytest.raises(InvalidRequestError, match=message):
        job_keys([VideoRequest(prompt="a"), VideoRequest(prompt="b")], keys)


def test_keyer_gives_lazy_batches_the_same_keys() -> None:
    """Keying one request at a time gives the keys and indexes job_keys gives the whole list."""
    requests = [VideoRequest(prompt=p) for p in ("a", "b", "a", "a")]
    keyer = JobKeyer()
    specs = [keyer.spec(request) for request in requests]
    assert [spec.key for spec in specs] == job_keys(requests)
    assert [spec.index for spec in specs] == [0, 1, 2, 3]
    with pytest.raises(InvalidRequestError, match="more than one"):
        keyer.spec(VideoRequest(prompt="c"), specs[0].key)


def test_job_specs_carry_payload_and_fingerprint() -> None:
    """A spec holds the request's API body, fingerprint and batch index."""
    request = VideoRequest(prompt="a cat", duration=10, webhook_url="https://hook.test/x")
    (spec,) = job_specs([request])
    assert spec.payload == request_to_json(request)
    assert spec.fingerprint == request.fingerprint
    assert spec.index == 0


def test_result_json_round_trip() -> None:
    """A stored task result reads back equal, video expiry included."""
    result = _result("t-1")
    again = result_from_json(json.loads(json.dumps(result_to_json(result))))
    assert again == result
    assert again.status is result.status
    assert again.videos[0].expires_at == result.videos[0].expires_at


# -- records and transitions -----------------------------------------------------------------


async def test_record_then_get(open_store: OpenStore) -> None:
    """Recorded jobs read back with their index, payload and the RECORDED state."""
    request = VideoRequest(prompt="a cat", webhook_url="https://hook.test/x")
    async with open_store() as store:
        assert isinstance(store, JobStore)
        assert await store.record(job_specs([request], ["k"])) == 1
        record = await store.get("k")
        assert await store.get("missing") is None
    assert record is not None
    assert record.state is JobState.RECORDED
    assert record.index == 0
    assert record.payload == request_to_json(request)
    assert record.to_request() == request
    assert record.attempts == 0
    assert record.created_at <= datetime.now(timezone.utc)


async def test_full_lifecycle(open_store: OpenStore, tmp_path: Path) -> None:
    """recorded -> submitting -> submitted -> finished -> downloaded, each visible at once."""
    async with open_store() as store:
        await store.record(_specs(1))
        assert await store.mark_submitting("job-0") == 1
        assert await _state(store, "job-0") is JobState.SUBMITTING
        await store.mark_submitted("job-0", "task-0")
        submitted = await store.get("job-0")
        assert submitted is not None
        assert submitted.state is JobState.SUBMITTED
        assert submitted.task_id == "task-0"
        assert submitted.submitted_at is not None
        await store.mark_finished("job-0", _result("task-0"))
        await store.mark_downloaded("job-0", tmp_path / "task-0.mp4")
        record = await store.get("job-0")
    assert record is not None
    assert record.state is JobState.FINISHED
    assert record.result == _result("task-0")
    assert record.path == str(tmp_path / "task-0.mp4")
    assert record.downloaded
    assert record.finished_at is not None
    assert record.downloaded_at is not None


async def test_failure_and_retry(open_store: OpenStore) -> None:
    """A failed job keeps its error text and type, and may be submitted again (attempt 2)."""
    async with open_store() as store:
        await store.record(_specs(1))
        await store.mark_submitting("job-0")
        await store.mark_failed("job-0", BadRequestError("400: prompt rejected", status_code=400))
        failed = await store.get("job-0")
        assert await store.mark_submitting("job-0") == 2
        retried = await store.get("job-0")
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.error == "400: prompt rejected"
    assert failed.error_type == "BadRequestError"
    assert retried is not None
    assert retried.error is None


async def test_unknown_submission_paths(open_store: OpenStore) -> None:
    """A lost answer is UNKNOWN (even via mark_failed); a late task id or a resubmit ends it."""
    async with open_store() as store:
        await store.record(_specs(2))
        await store.mark_submitting("job-0")
        unknown = SubmissionUnknownError(VideoRequest(prompt="a"), reason="connection reset")
        await store.mark_failed("job-0", unknown)
        record = await store.get("job-0")
        assert record is not None
        assert record.state is JobState.UNKNOWN
        assert record.error == "connection reset"
        assert record.error_type == "SubmissionUnknownError"
        await store.mark_submitted("job-0", "found-later")
        assert await _state(store, "job-0") is JobState.SUBMITTED
        await store.mark_submitting("job-1")
        await store.mark_unknown("job-1", "timeout")
        assert await store.mark_submitting("job-1") == 2


_ACTIONS: dict[str, Callable[[JobStore], Awaitable[object]]] = {
    "submitting": lambda s: s.mark_submitting("job-0"),
    "submitted": lambda s: s.mark_submitted("job-0", "t"),
    "unknown": lambda s: s.mark_unknown("job-0", "reset"),
    "finished": lambda s: s.mark_finished("job-0", _result("t")),
    "failed": lambda s: s.mark_failed("job-0", "boom"),
    "downloaded": lambda s: s.mark_downloaded("job-0", "v.mp4"),
    "result_lost": lambda s: _concrete(s).mark_result_lost("job-0", "gone"),
}
# state -> action -> the state it leads to; an action missing here is refused.
_ALLOWED: dict[str, dict[str, str]] = {
    "recorded": {"submitting": "submitting", "failed": "failed"},
    "submitting": {"submitted": "submitted", "unknown": "unknown", "failed": "failed"},
    "submitted": {"submitted": "submitted", "finished": "finished", "failed": "failed"},
    "finished": {"finished": "finished", "downloaded": "finished", "result_lost": "failed"},
    "failed": {"submitting": "submitting", "failed": "failed"},
    "unknown": {
        "submitting": "submitting",
        "submitted": "submitted",
        "unknown": "unknown",
        "failed": "failed",
    },
}
_PATHS = {
    "recorded": [],
    "submitting": ["submitting"],
    "submitted": ["submitting", "submitted"],
    "finished": ["submitting", "submitted", "finished"],
    "failed": ["submitting", "failed"],
    "unknown": ["submitting", "unknown"],
}


@pytest.mark.parametrize("action", list(_ACTIONS))
@pytest.mark.parametrize("state", list(_ALLOWED))
async def test_transition_matrix(open_store: OpenStore, state: str, action: str) -> None:
    """Every state x action: allowed ones reach their state, others raise and change nothing."""
    async with open_store() as store:
        await store.record(_specs(1))
        for step in _PATHS[state]:
            await _ACTIONS[step](store)
        before = await store.get("job-0")
        assert before is not None
        assert before.state.value == state
        target = _ALLOWED[state].get(action)
        if target is None:
            with pytest.raises(InvalidTransitionError, match=f"is {state}"):
                await _ACTIONS[action](store)
            assert await store.get("job-0") == before
        else:
            await _ACTIONS[action](store)
            assert (await _state(store, "job-0")).value == target


def _concrete(store: JobStore) -> SQLiteJobStore | PostgresJobStore:
    assert isinstance(store, (SQLiteJobStore, PostgresJobStore))
    return store


async def test_a_lost_result_may_be_retried_but_a_saved_video_is_kept(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """mark_result_lost fails a finished job never downloaded (to retry), never a saved one."""
    async with open_store() as store:
        await store.record(_specs(2))
        for key in ("job-0", "job-1"):
            await store.mark_submitting(key)
            await store.mark_submitted(key, f"task-{key}")
            await store.mark_finished(key, _result(f"task-{key}"))
        await store.mark_downloaded("job-1", tmp_path / "saved.mp4")
        await store.mark_result_lost("job-0", "its storage is gone")
        with pytest.raises(InvalidTransitionError, match="is finished"):
            await store.mark_result_lost("job-1", "its storage is gone")
        lost = await store.get("job-0")
        plan = await store.resume(retry_failed=True)
        assert await store.mark_submitting("job-0") == 2
        kept = await store.get("job-1")
    assert lost is not None
    assert (lost.state, lost.error, lost.task_id) == (
        JobState.FAILED,
        "its storage is gone",
        "task-job-0",
    )
    assert plan["job-0"].action is ResumeAction.SUBMIT
    assert plan["job-1"].action is ResumeAction.FINISHED
    assert kept is not None
    assert kept.state is JobState.FINISHED


async def test_a_task_id_never_changes_silently(open_store: OpenStore) -> None:
    """Another task id, or a result for another task, is refused once a task id is known."""
    async with open_store() as store:
        await store.record(_specs(1))
        await store.mark_submitting("job-0")
        await store.mark_submitted("job-0", "t")
        with pytest.raises(InvalidTransitionError):
            await store.mark_submitted("job-0", "another-task")
        with pytest.raises(InvalidTransitionError):
            await store.mark_finished("job-0", _result("another-task"))
        record = await store.get("job-0")
    assert record is not None
    assert record.task_id == "t"
    assert record.state is JobState.SUBMITTED


async def test_unknown_key_is_reported(open_store: OpenStore) -> None:
    """A transition on a key never recorded raises UnknownJobError."""
    async with open_store() as store:
        with pytest.raises(UnknownJobError, match="nope"):
            await store.mark_submitting("nope")


# -- recording again, reopening ----------------------------------------------------------------


async def test_recording_again_is_idempotent(open_store: OpenStore) -> None:
    """Recording a batch again adds only new keys and leaves progress untouched."""
    async with open_store() as store:
        assert await store.record(_specs(3)) == 3
        await store.mark_submitting("job-1")
        await store.mark_submitted("job-1", "t1")
        assert await store.record(_specs(5)) == 2
        assert await _state(store, "job-1") is JobState.SUBMITTED
        assert await store.counts() == {JobState.RECORDED: 4, JobState.SUBMITTED: 1}


async def test_recording_a_key_for_another_request_conflicts(open_store: OpenStore) -> None:
    """A key reused for a different request raises, and nothing of that call is recorded."""
    async with open_store() as store:
        await store.record(_specs(2))
        changed = [
            JobSpec(key="job-1", index=1, payload={"prompt": "new"}, fingerprint="other"),
            JobSpec(key="job-9", index=2, payload={"prompt": "p9"}, fingerprint="f9"),
        ]
        with pytest.raises(JobConflictError, match="job-1") as caught:
            await store.record(changed)
        assert caught.value.keys == ("job-1",)
        assert await store.get("job-9") is None
        with pytest.raises(InvalidRequestError, match="same key"):
            await store.record([*_specs(1), *_specs(1)])


async def test_recording_one_job_per_call_scales(open_store: OpenStore) -> None:
    """A lazily read batch records one job per call; 3,000 such calls share few commits."""
    specs = _specs(3000)
    async with open_store() as store:
        commits_before = store.commits
        with anyio.fail_after(120):  # a hang guard: the speed itself is the benchmarks' to judge
            async with anyio.create_task_group() as group:
                for spec in specs:
                    group.start_soon(store.record, [spec])
        commits = store.commits - commits_before
        assert await store.record(specs) == 0
        changed = [*specs[:2999], attrs.evolve(specs[2999], fingerprint="other")]
        with pytest.raises(JobConflictError, match="job-2999"):
            await store.record(changed)
        assert await store.counts() == {JobState.RECORDED: 3000}
    # Calls that wait together share one durable flush: a commit each would be 3,000 flushes.
    assert 1 <= commits <= len(specs) // 10


async def test_reopen_after_close_keeps_everything(open_store: OpenStore) -> None:
    """A closed and reopened journal holds every state written before."""
    async with open_store() as store:
        await store.record(_specs(4))
        await store.mark_submitting("job-0")
        await store.mark_submitting("job-1")
        await store.mark_submitted("job-1", "t1")
        await store.mark_submitting("job-2")
        await store.mark_failed("job-2", "boom", error_type="RuntimeError")
    with pytest.raises(JournalClosedError):
        await store.get("job-0")
    async with open_store() as reopened:
        records = await reopened.get_many()
    assert [r.key for r in records.values()] == ["job-0", "job-1", "job-2", "job-3"]
    assert [r.state for r in records.values()] == [
        JobState.SUBMITTING,
        JobState.SUBMITTED,
        JobState.FAILED,
        JobState.RECORDED,
    ]
    assert records["job-1"].task_id == "t1"
    assert records["job-2"].error_type == "RuntimeError"


async def test_database_settings(tmp_path: Path) -> None:
    """The file is in WAL mode with the schema version stored; bad options are refused."""
    path = tmp_path / "j.db"
    async with SQLiteJobStore(path, synchronous="NORMAL") as store:
        await store.record(_specs(1))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = connection.execute(
            "SELECT value FROM hailuo_journal_meta WHERE name = 'schema_version'"
        ).fetchone()
    assert version == (str(SCHEMA_VERSION),)
    with pytest.raises(InvalidRequestError, match="synchronous"):
        SQLiteJobStore(path, synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="cannot open"):
        await SQLiteJobStore(tmp_path / "missing-dir" / "j.db").open()


async def test_batches_in_one_file_are_separate(open_store: OpenStore) -> None:
    """Two batches may share a file; each sees only its own jobs."""
    async with open_store(batch="a") as a, open_store(batch="b") as b:
        await a.record(_specs(2))
        await b.record(_specs(1, prefix="other"))
        assert list(await a.get_many()) == ["job-0", "job-1"]
        assert list(await b.get_many()) == ["other-0"]
        assert await b.get("job-0") is None


async def test_get_many_with_keys(open_store: OpenStore) -> None:
    """get_many returns the asked keys that exist, in batch order, for small and large asks."""
    async with open_store() as store:
        await store.record(_specs(3000))
        few = await store.get_many(["job-5", "job-2", "absent"])
        many = await store.get_many([f"job-{i}" for i in range(2999, -1, -1)])
    assert list(few) == ["job-2", "job-5"]
    assert list(many) == [f"job-{i}" for i in range(3000)]


# -- resume ------------------------------------------------------------------------------------


async def _batch_in_every_state(store: JobStore) -> None:
    await store.record(_specs(6))
    await store.mark_submitting("job-1")
    await store.mark_submitting("job-2")
    await store.mark_submitted("job-2", "t2")
    await store.mark_submitting("job-3")
    await store.mark_submitted("job-3", "t3")
    await store.mark_finished("job-3", _result("t3"))
    await store.mark_submitting("job-4")
    await store.mark_failed("job-4", "rejected", error_type="BadRequestError")
    await store.mark_submitting("job-5")
    await store.mark_unknown("job-5", "reset")


async def test_resume_classifies_every_state(open_store: OpenStore) -> None:
    """Each state maps to its action; an interrupted submission becomes UNKNOWN on disk."""
    async with open_store() as store:
        await _batch_in_every_state(store)
    keys = [f"job-{i}" for i in range(6)] + ["never-recorded"]
    async with open_store() as store:
        plan = await store.resume(keys)
        interrupted = await store.get("job-1")
    assert list(plan.entries) == keys
    assert [plan[key].action for key in keys] == [
        ResumeAction.SUBMIT,
        ResumeAction.UNKNOWN,
        ResumeAction.WATCH,
        ResumeAction.FINISHED,
        ResumeAction.FAILED,
        ResumeAction.UNKNOWN,
        ResumeAction.SUBMIT,
    ]
    assert plan["never-recorded"].record is None
    watch = plan["job-2"].record
    assert watch is not None
    assert watch.task_id == "t2"
    finished = plan["job-3"].record
    assert finished is not None
    assert finished.result == _result("t3")
    assert interrupted is not None
    assert interrupted.state is JobState.UNKNOWN
    assert interrupted.error_type == "SubmissionUnknownError"
    assert plan.counts()[ResumeAction.UNKNOWN] == 2
    assert plan.keys_for(ResumeAction.SUBMIT) == ["job-0", "never-recorded"]


async def test_resume_options(open_store: OpenStore) -> None:
    """retry_failed resubmits failures; on_unknown_submission='resubmit' resubmits unknowns."""
    async with open_store() as store:
        await _batch_in_every_state(store)
        keys = [f"job-{i}" for i in range(6)]
        plan = await store.resume(keys, retry_failed=True, on_unknown_submission="resubmit")
        for key in plan.keys_for(ResumeAction.SUBMIT):
            await store.mark_submitting(key)
        with pytest.raises(InvalidRequestError):
            await store.resume(keys, on_unknown_submission="maybe")  # type: ignore[arg-type]
    assert plan.keys_for(ResumeAction.SUBMIT) == ["job-0", "job-1", "job-4", "job-5"]
    assert plan.keys_for(ResumeAction.WATCH) == ["job-2"]
    assert plan.keys_for(ResumeAction.FINISHED) == ["job-3"]


async def test_resume_without_keys_covers_the_journal(open_store: OpenStore) -> None:
    """A lazily read batch resumes from the whole journal; unseen keys default to SUBMIT."""
    async with open_store() as store:
        await _batch_in_every_state(store)
        plan = await store.resume()
    assert list(plan.entries) == [f"job-{i}" for i in range(6)]
    assert plan.entry_for("job-2").action is ResumeAction.WATCH
    assert plan.entry_for("job-1").action is ResumeAction.UNKNOWN
    fresh = plan.entry_for("new-key")
    assert fresh.action is ResumeAction.SUBMIT
    assert fresh.record is None


async def test_resume_of_a_large_batch_is_one_scan(open_store: OpenStore) -> None:
    """Resuming 12,000 keys classifies them all quickly, in the batch's order."""
    async with open_store() as store:
        await store.record(_specs(12_000))
        async with anyio.create_task_group() as group:
            for i in range(0, 12_000, 3):
                group.start_soon(store.mark_submitting, f"job-{i}")
        keys = [f"job-{i}" for i in range(12_000)]
        started = time.perf_counter()
        plan = await store.resume(keys)
        elapsed = time.perf_counter() - started
    assert plan.counts() == {ResumeAction.SUBMIT: 8000, ResumeAction.UNKNOWN: 4000}
    assert list(plan.entries) == keys
    assert elapsed < 30.0  # ~1 s on a busy machine; a scan per key takes far longer


# -- durability across crashes -----------------------------------------------------------------

_CHILD = """
import asyncio, sys
from hailuo_async.extend import JobSpec
from hailuo_async.journal import SQLiteJobStore

async def main(path, n):
    store = await SQLiteJobStore(path).open()
    await store.record(
        [JobSpec(key=f"job-{i}", index=i, payload={}, fingerprint=str(i)) for i in range(n)]
    )
    print("recorded", flush=True)

    slots = asyncio.Semaphore(64)

    async def one(i):
        async with slots:
            await store.mark_submitting(f"job-{i}")
            print(f"submitting job-{i}", flush=True)
            await asyncio.sleep(0.002)  # the POST would be in flight here
            await store.mark_submitted(f"job-{i}", f"task-{i}")
            print(f"submitted job-{i}", flush=True)

    await asyncio.gather(*(one(i) for i in range(n)))
    print("done", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_a_killed_process_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """kill -9 mid-run: every acknowledged submitting/submitted survives; resume never resubmits."""
    path = tmp_path / "j.db"
    acked_submitting: set[str] = set()
    acked_submitted: set[str] = set()
    async with await anyio.open_process([sys.executable, "-c", _CHILD, str(path), "2000"]) as child:
        assert child.stdout is not None
        lines = BufferedByteReceiveStream(child.stdout)
        with anyio.fail_after(60):
            while len(acked_submitted) < 300:
                kind, _, key = (await lines.receive_until(b"\n", 200)).decode().partition(" ")
                if kind == "submitting":
                    acked_submitting.add(key)
                elif kind == "submitted":
                    acked_submitted.add(key)
        child.kill()
        await child.wait()
    assert child.returncode == -9
    assert len(acked_submitting) < 2000, "the child finished before it was killed"

    async with SQLiteJobStore(path) as store:
        records = await store.get_many()
        plan = await store.resume(list(records))
    for key in acked_submitted:
        assert records[key].state is JobState.SUBMITTED
        assert records[key].task_id == f"task-{key.removeprefix('job-')}"
        assert plan[key].action is ResumeAction.WATCH
    for key in acked_submitting - acked_submitted:
        assert records[key].state in (JobState.SUBMITTING, JobState.SUBMITTED)
        assert plan[key].action in (ResumeAction.UNKNOWN, ResumeAction.WATCH)
    # Only a job never marked submitting may be submitted on resume.
    for key in plan.keys_for(ResumeAction.SUBMIT):
        assert records[key].state is JobState.RECORDED
        assert key not in acked_submitting


async def test_exit_between_submitting_and_post_reads_as_unknown(tmp_path: Path) -> None:
    """A process dying right after journaling `submitting` leaves an UNKNOWN job, not a new one."""
    path = tmp_path / "j.db"
    script = (
        "import asyncio, os, sys\n"
        "from hailuo_async.extend import JobSpec\nfrom hailuo_async.journal import SQLiteJobStore\n"
        "async def main():\n"
        "    store = await SQLiteJobStore(sys.argv[1]).open()\n"
        "    await store.record([JobSpec(key='k', index=0, payload={}, fingerprint='f')])\n"
        "    await store.mark_submitting('k')\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    result = await anyio.run_process([sys.executable, "-c", script, str(path)])
    assert result.returncode == 0
    async with SQLiteJobStore(path) as store:
        plan = await store.resume(["k"])
        again = await store.resume(["k"], on_unknown_submission="resubmit")
    assert plan["k"].action is ResumeAction.UNKNOWN
    assert again["k"].action is ResumeAction.SUBMIT


# -- concurrency and group commit --------------------------------------------------------------


async def test_many_tasks_share_commits(open_store: OpenStore) -> None:
    """500 concurrent lifecycles all land, in far fewer transactions than writes."""
    n = 500
    async with open_store() as store:
        await store.record(_specs(n))

        async def lifecycle(i: int) -> None:
            key = f"job-{i}"
            await store.mark_submitting(key)
            await store.mark_submitted(key, f"t{i}")
            await store.mark_finished(key, _result(f"t{i}"))
            await store.mark_downloaded(key, f"/videos/t{i}.mp4")

        async with anyio.create_task_group() as group:
            for i in range(n):
                group.start_soon(lifecycle, i)
        assert await store.counts() == {JobState.FINISHED: n}
        records = await store.get_many()
        assert store.writes_committed == 4 * n + 1
        assert store.commits < store.writes_committed / 4
    assert all(r.path == f"/videos/{r.task_id}.mp4" for r in records.values())


async def test_cancelled_writers_leave_a_consistent_journal(open_store: OpenStore) -> None:
    """Writers cancelled mid-wait neither hang the store nor half-apply a job."""
    acknowledged: set[str] = set()

    async def submitting(key: str, scope: anyio.CancelScope) -> None:
        await store.mark_submitting(key)
        acknowledged.add(key)
        if len(acknowledged) >= 20:
            scope.cancel()

    async with open_store() as store:
        await store.record(_specs(300))
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                for i in range(300):
                    group.start_soon(submitting, f"job-{i}", scope)
                    await anyio.lowlevel.checkpoint()
        assert 20 <= len(acknowledged) < 300
        await store.record(_specs(1, prefix="after"))
        await store.mark_submitting("after-0")
    async with open_store() as reopened:
        records = await reopened.get_many()
    assert records["after-0"].state is JobState.SUBMITTING
    for key, record in records.items():
        assert record.state in (JobState.RECORDED, JobState.SUBMITTING)
        assert record.attempts == (1 if record.state is JobState.SUBMITTING else 0)
        if key in acknowledged:
            assert record.state is JobState.SUBMITTING


async def test_writes_of_cancelled_callers_are_committed_at_close(open_store: OpenStore) -> None:
    """Writes whose callers were cancelled are still committed by aclose, even a cancelled one."""
    store = await open_store().open()
    await store.record(_specs(50))
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(store.mark_submitting, f"job-{i}")
    assert store.pending_writes == 50
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    async with open_store() as reopened:
        assert await reopened.counts() == {JobState.SUBMITTING: 50}


async def test_a_failed_commit_fails_every_write_of_its_group() -> None:
    """When the transaction fails, each waiting writer gets a JournalError chained to it."""
    calls: list[int] = []

    async def apply(writes: list[Callable[[], object]]) -> list[object]:
        await anyio.lowlevel.checkpoint()  # the others queue up behind the first group meanwhile
        calls.append(len(writes))
        raise sqlite3.OperationalError("disk I/O error")

    committer: GroupCommitter[Callable[[], object]] = GroupCommitter(apply)
    errors: list[BaseException] = []

    async def write() -> None:
        try:
            await committer.write(lambda: None)
        except JournalError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(write)
    assert len(errors) == 20
    assert all(isinstance(e.__cause__, sqlite3.OperationalError) for e in errors)
    assert sum(calls) == 20
    assert committer.pending == 0


# -- leases ------------------------------------------------------------------------------------


async def test_claims_split_the_batch_between_workers(open_store: OpenStore) -> None:
    """Two workers claim disjoint jobs in batch order; a live lease fences off others."""
    async with open_store() as store:
        await store.record(_specs(5))
        first = await store.claim("w1", 2, lease_seconds=60)
        second = await store.claim("w2", 10, lease_seconds=60)
        assert [r.key for r in first] == ["job-0", "job-1"]
        assert [r.key for r in second] == ["job-2", "job-3", "job-4"]
        assert first[0].owner == "w1"
        assert await store.claim("w3", 1, lease_seconds=60) == []
        assert await store.mark_submitting("job-0", worker_id="w1") == 1
        with pytest.raises(LeaseLostError, match="w2"):
            await store.mark_submitting("job-2", worker_id="w1")
        with pytest.raises(LeaseLostError):
            await store.mark_submitting("job-3")
        plan = await store.resume(["job-3"])
        assert plan["job-3"].action is ResumeAction.LEASED
        assert await store.heartbeat("w2", 60) == 3
        assert await store.release("w2", ["job-2"]) == 1
        assert [r.key for r in await store.claim("w3", 5, 60)] == ["job-2"]
        assert await store.release("w2") == 2


async def test_expired_leases_are_reclaimed(open_store: OpenStore) -> None:
    """A dead worker's jobs return to the pool; its half-done submission becomes UNKNOWN."""
    async with open_store() as store:
        await store.record(_specs(3))
        await store.claim("dead", 3, lease_seconds=0.5)
        await store.mark_submitting("job-0", worker_id="dead")
        await store.mark_submitting("job-1", worker_id="dead")
        await store.mark_submitted("job-1", "t1")
        await anyio.sleep(0.6)
        assert await store.heartbeat("dead", 60) == 0
        taken = await store.claim("alive", 10, lease_seconds=60)
        with pytest.raises(LeaseLostError):
            await store.mark_submitting("job-2", worker_id="dead")
        lost = await store.get("job-0")
    assert [r.key for r in taken] == ["job-1", "job-2"]
    assert taken[0].state is JobState.SUBMITTED
    assert lost is not None
    assert lost.state is JobState.UNKNOWN
    assert lost.owner is None


async def test_final_states_release_the_lease(open_store: OpenStore) -> None:
    """A finished job no longer counts as the worker's lease."""
    async with open_store() as store:
        await store.record(_specs(1))
        await store.claim("w", 1, lease_seconds=60)
        await store.mark_submitting("job-0", worker_id="w")
        await store.mark_submitted("job-0", "t")
        await store.mark_finished("job-0", _result("t"))
        record = await store.get("job-0")
        assert await store.heartbeat("w", 60) == 0
    assert record is not None
    assert record.owner is None
    assert record.lease_until is None
