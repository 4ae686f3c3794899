"""Journals written by release aae7848 resume with today's code and nothing paid again, and a
journal is resumed only through the provider its batch was started with.

The SQLite journal is ``tests/fixtures/journal-aae7848.sqlite``, written by that release's
code (``tests/fixtures/make_old_journal.py`` says how); the PostgreSQL one is the same rows,
inserted into a schema at that release's version 1. Both hold finished and failed jobs (their
results stored with the gateway's status strings) and jobs still submitted (running at the
service): the fake is told of those tasks, as the service would still know them.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from clientutil import make_client
from old_journal_requests import KEYED, REQUESTS
from pgutil import DSN, admin

from hailuo_async import (
    HailuoClient,
    JobOutcome,
    TaskFailedError,
    TaskStatus,
    VideoRequest,
    WorkerSettings,
)
from hailuo_async.journal import (
    JobState,
    JournalProviderError,
    PostgresJobStore,
    SQLiteJobStore,
    job_keys,
)
from hailuo_async.journal._pg_sql import Statements
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).parent / "fixtures" / "journal-aae7848.sqlite"
SCALE = 0.01
COLUMNS = (
    "batch, key, idx, state, fingerprint, payload, task_id, result, error, error_type,"
    " error_fields, path, attempts, owner, lease_until, created_at, updated_at, submitted_at,"
    " finished_at, downloaded_at"
)


def items() -> list[VideoRequest | tuple[str, VideoRequest]]:
    """The batch's requests, as the release that wrote the journal was given them."""
    return [(KEYED[name], request) if name in KEYED else request for name, request in REQUESTS]


def old_rows() -> list[tuple[Any, ...]]:
    """The fixture's rows, every column, in batch order."""
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as connection:
        rows = connection.execute(f"SELECT {COLUMNS} FROM hailuo_jobs ORDER BY idx").fetchall()  # noqa: S608
    connection.close()
    return rows


def states() -> dict[str, JobState]:
    """Each fixture job's state, by key."""
    return {row[1]: JobState(row[3]) for row in old_rows()}


def submitted_task_ids() -> list[str]:
    """The tasks the old run left running."""
    return [row[6] for row in old_rows() if row[3] == "submitted"]


@pytest.fixture
def old_sqlite(tmp_path: Path) -> Path:
    """A copy of the fixture journal (the tests must not change the committed file)."""
    copy = tmp_path / "journal.sqlite"
    shutil.copyfile(FIXTURE, copy)
    return copy


def old_postgres(schema: str) -> None:
    """The fixture's rows in ``schema``, as release aae7848 made its tables (version 1)."""
    statements = Statements(schema)
    with admin() as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.execute(statements.version_table)
        for statement in statements.upgrades[1]:
            connection.execute(statement)
        connection.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (1)')  # noqa: S608
        times = {"lease_until", "created_at", "updated_at", "submitted_at", "finished_at"}
        names = [name.strip() for name in COLUMNS.split(",")]
        values = ", ".join(
            f"to_timestamp(%({name})s)"
            if name in times or name == "downloaded_at"
            else f"%({name})s"
            for name in names
        )
        insert = f'INSERT INTO "{schema}".hailuo_jobs ({COLUMNS}) VALUES ({values})'  # noqa: S608
        for row in old_rows():
            connection.execute(insert, dict(zip(names, row, strict=True)))


@asynccontextmanager
async def service_that_knows(task_ids: list[str]) -> AsyncIterator[FakeHailuoServer]:
    """A fake gateway whose tasks include ``task_ids``, still running (as the service would)."""
    async with FakeHailuoServer(time_scale=SCALE, seed=3, job_duration=Fixed(30)) as server:
        for task_id in task_ids:
            server.add_task(task_id)
        yield server


def check_resumed(outcomes: list[JobOutcome], server: FakeHailuoServer) -> None:
    """Every job came out once, nothing was submitted, the running ones were watched to
    their end, and the old results read with the library's statuses."""
    assert server.stats.submission_attempts == 0
    by_key = {outcome.key: outcome for outcome in outcomes}
    assert set(by_key) == set(states())
    assert set(by_key) == set(
        job_keys([r for _, r in REQUESTS], [KEYED.get(n) for n, _ in REQUESTS])
    )
    for key, state in states().items():
        outcome = by_key[key]
        if state is JobState.FINISHED:
            assert outcome.replayed
            assert outcome.result is not None
            assert outcome.result.status is TaskStatus.SUCCEED
            assert outcome.result.raw_status == "TASK_STATUS_SUCCEED"
            assert outcome.ok
        elif state is JobState.FAILED:
            assert outcome.replayed
            assert isinstance(outcome.error, TaskFailedError)
            assert outcome.error.result.status is TaskStatus.FAILED
        else:
            assert not outcome.replayed
            assert outcome.ok, outcome.error
    assert set(server.stats.polls_by_task) == set(submitted_task_ids())


async def test_an_old_sqlite_journal_resumes_with_nothing_paid_again(old_sqlite: Path) -> None:
    """Release aae7848's journal: finished and failed jobs replayed, running ones watched,
    0 POSTs; its statuses read as the library's and stay readable once rewritten."""
    async with service_that_knows(submitted_task_ids()) as server:
        async with (
            make_client(server) as client,
            client.generate_many(items(), journal=old_sqlite) as stream,
        ):
            outcomes = [outcome async for outcome in stream]
        check_resumed(outcomes, server)
    async with SQLiteJobStore(old_sqlite) as store:
        records = await store.get_many()
        assert await store.bind_provider("gateway") == "gateway"
    assert {record.state for record in records.values()} == {JobState.FINISHED, JobState.FAILED}
    for record in records.values():
        assert record.to_request() in [request for _, request in REQUESTS]


async def test_old_postgres_rows_resume_with_nothing_paid_again(pg_schema: str) -> None:
    """The same rows in a schema of that release's version: upgraded in place, resumed by a
    worker of the shared batch with 0 POSTs."""
    old_postgres(pg_schema)
    async with service_that_knows(submitted_task_ids()) as server:
        store = PostgresJobStore(DSN, batch="default", schema=pg_schema)
        worker = WorkerSettings(worker_id="w", lease=5.0, idle_poll=0.05)
        async with (
            make_client(server) as client,
            store,
            client.generate_many(items(), journal=store, worker=worker) as stream,
        ):
            outcomes = [outcome async for outcome in stream]
        check_resumed(outcomes, server)
    with psycopg.connect(DSN) as connection:
        versions = connection.execute(
            f'SELECT max(version) FROM "{pg_schema}".schema_version'  # noqa: S608
        ).fetchone()
    assert versions == (2,)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_batch_is_resumed_through_its_own_provider_only(
    kind: str, request: pytest.FixtureRequest, old_sqlite: Path
) -> None:
    """An old journal's batch is the gateway's; a new batch records its provider. Resumed
    through another, it is refused before anything is sent."""
    if kind == "sqlite":

        def open_store() -> SQLiteJobStore | PostgresJobStore:
            return SQLiteJobStore(old_sqlite)

    else:
        schema = request.getfixturevalue("pg_schema")
        old_postgres(schema)

        def open_store() -> SQLiteJobStore | PostgresJobStore:
            return PostgresJobStore(DSN, batch="default", schema=schema)

    async with FakeHailuoServer(time_scale=SCALE) as server:
        client = HailuoClient(server.api_key, base_url=server.url, provider="minimax")
        async with client, open_store() as store:
            stream = client.generate_many(items(), journal=store, **worker_of(store))
            with pytest.raises(JournalProviderError, match="'gateway' provider") as caught:
                async with stream:
                    pass
            assert await store.bind_provider("minimax") == "gateway"
        assert caught.value.recorded == "gateway"
        assert server.stats.submission_attempts == 0
        assert server.stats.polls_total == 0


async def test_a_new_batch_records_its_provider(tmp_path: Path) -> None:
    """The first run of a batch records the provider it runs through; one of another
    provider's batches in the same file is another batch."""
    path = tmp_path / "j.sqlite"
    async with SQLiteJobStore(path, batch="mm") as store:
        assert await store.bind_provider("minimax") == "minimax"
        assert await store.bind_provider("gateway") == "minimax"
    async with SQLiteJobStore(path, batch="gw") as store:
        assert await store.bind_provider("gateway") == "gateway"


def worker_of(store: SQLiteJobStore | PostgresJobStore) -> dict[str, Any]:
    """generate_many's worker settings for a shared store."""
    if isinstance(store, PostgresJobStore):
        return {"worker": WorkerSettings(worker_id="w", lease=5.0, idle_poll=0.05)}
    return {}
