"""One run per SQLite journal and per results file; no silent start-over when a journal is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clientutil import make_client
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    threaded_fake,
)

from hailuo_async import JournalError, JournalInUseError, VideoRequest
from hailuo_async._lockfile import hold_file
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Uniform

SCALE = 0.01


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests."""
    return (VideoRequest(prompt=f"held {i}") for i in range(count))


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 20 to 40 service seconds."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=5, job_duration=Uniform(20, 40)
    ) as fake:
        yield fake


# -- the library: generate_many twice on one journal ------------------------------------------


@pytest.mark.anyio
async def test_a_second_batch_on_a_journal_in_use_is_refused_before_reading_it(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """generate_many on a journal another batch of this process runs on: JournalInUseError."""
    journal = tmp_path / "run.sqlite"
    async with make_client(server) as client:
        async with client.generate_many(prompts(4), journal=journal) as first:
            with pytest.raises(JournalInUseError) as refused:
                async with client.generate_many(prompts(4), journal=journal):
                    pass
            outcomes = [outcome async for outcome in first]
    assert refused.value.holder.startswith(f"host {socket.gethostname()}, pid {os.getpid()}")
    assert isinstance(refused.value, JournalError)
    # The first batch is untouched: every job submitted once and ended well.
    assert sorted(outcome.index for outcome in outcomes) == [0, 1, 2, 3]
    assert all(outcome.ok for outcome in outcomes)
    assert server.stats.submissions_accepted == 4
    assert server.stats.duplicate_submissions == 0


@pytest.mark.anyio
async def test_the_journal_is_free_again_once_the_batch_is_left(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """A batch that ended (or was refused) leaves the journal free for the next run."""
    journal = tmp_path / "run.sqlite"
    async with make_client(server) as client:
        async with client.generate_many(prompts(2), journal=journal) as outcomes:
            assert [o.ok async for o in outcomes] == [True, True]
        async with client.generate_many(prompts(2), journal=journal) as outcomes:
            assert all([o.replayed async for o in outcomes])


@pytest.mark.anyio
async def test_one_open_store_cannot_run_two_batches_at_once(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """An open SQLiteJobStore given to two batches at once: the second is refused."""
    async with SQLiteJobStore(tmp_path / "run.sqlite") as store, make_client(server) as client:
        async with client.generate_many(prompts(2), journal=store) as first:
            with pytest.raises(JournalInUseError, match="already runs on this store"):
                async with client.generate_many(prompts(2), journal=store):
                    pass
            assert len([o async for o in first]) == 2
        assert not store.held  # the hold was the batch's; the store stays open
        assert (await store.counts()) == {JobState.FINISHED: 2}


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from hailuo_async._lockfile import hold_file
    hold = hold_file(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
    """
)


@contextmanager
def holding(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``path`` (as a batch run would) until the block ends."""
    command = [sys.executable, "-c", _HOLDER, str(path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:  # noqa: S603
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "held"
            yield process
        finally:
            process.kill()


@pytest.mark.anyio
async def test_another_process_holding_the_journal_is_named_and_a_killed_one_holds_nothing(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """The holder's pid is named; once it is killed (SIGKILL), the journal is free at once."""
    journal = tmp_path / "run.sqlite"
    with holding(journal) as holder:
        async with make_client(server) as client:
            with pytest.raises(JournalInUseError, match=f"pid {holder.pid}, since "):
                async with client.generate_many(prompts(2), journal=journal):
                    pass
            assert server.stats.submission_attempts == 0
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            async with client.generate_many(prompts(2), journal=journal) as outcomes:
                assert [o.ok async for o in outcomes] == [True, True]


def test_a_hold_is_released_for_the_next() -> None:
    """hold_file twice in one process: refused while held, granted once released."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "journal.sqlite"
        first = hold_file(target)
        with pytest.raises(JournalInUseError):
            hold_file(target)
        first.release()
        hold_file(target).release()


# -- the command line: two `hailuo batch` runs, and a journal gone --------------------------


def test_a_second_cli_run_on_the_same_out_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    """`hailuo batch` while another holds OUT: exit 2, one line with host, pid and since."""
    (tmp_path / "p.txt").write_text("".join(f"a swan, take {i}\n" for i in range(6)))
    (tmp_path / "o").mkdir()
    with holding(tmp_path / "o" / "results.jsonl") as holder, threaded_fake() as server:
        result = invoke("batch", "p.txt", "--out", "o", env=fake_env(server))
        attempts = server.stats.submission_attempts
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "is in use by another run" in result.stderr
    assert f"pid {holder.pid}, since " in result.stderr
    assert attempts == 0


def test_a_second_cli_run_on_the_same_journal_with_another_out_is_refused(tmp_path: Path) -> None:
    """Another OUT but the same --journal, held by a running batch: exit 2, nothing sent."""
    (tmp_path / "p.txt").write_text("a swan\n")
    with holding(tmp_path / "shared.sqlite"), threaded_fake() as server:
        result = invoke(
            "batch", "p.txt", "--out", "b", "--journal", "shared.sqlite", env=fake_env(server)
        )
        attempts = server.stats.submission_attempts
    assert result.exit_code == 2
    assert "the journal shared.sqlite is in use by another run" in result.stderr
    assert attempts == 0


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_journal_gone_beside_earlier_results_is_refused(tmp_path: Path, damage: str) -> None:
    """OUT/results.jsonl lists paid jobs, the journal is gone or 0 bytes: exit 2, 0 POSTs."""
    (tmp_path / "p.txt").write_text("".join(f"a crane, take {i}\n" for i in range(4)))
    journal = tmp_path / "o" / "journal.sqlite"
    with threaded_fake() as server:
        env = fake_env(server)
        assert invoke("batch", "p.txt", "--out", "o", env=env).exit_code == 0
        for leftover in journal.parent.glob("journal.sqlite*"):
            leftover.unlink()
        if damage == "emptied":
            journal.write_bytes(b"")
        before = server.stats.submission_attempts
        refused = invoke("batch", "p.txt", "--out", "o", env=env)
        after = server.stats.submission_attempts
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "lists 4 job(s) of an earlier run" in refused.stderr
    assert "--journal PATH" in refused.stderr
    assert "--new-run" in refused.stderr
    assert after == before == 4
    assert journal.exists() == (damage == "emptied")  # no journal made by the refusal


def test_the_earlier_journal_given_back_resumes_and_new_run_starts_over(tmp_path: Path) -> None:
    """--journal PATH (the moved journal) resumes with 0 POSTs; --new-run submits afresh."""
    (tmp_path / "p.txt").write_text("".join(f"a stork, take {i}\n" for i in range(3)))
    out = tmp_path / "o"
    with threaded_fake() as server:
        env = fake_env(server)
        assert invoke("batch", "p.txt", "--out", "o", env=env).exit_code == 0
        for leftover in out.glob("journal.sqlite*"):
            leftover.rename(tmp_path / leftover.name.replace("journal", "moved"))
        resumed = invoke("batch", "p.txt", "--out", "o", "--journal", "moved.sqlite", env=env)
        assert server.stats.submission_attempts == 3
        refused = invoke(
            "batch", "p.txt", "--out", "o", "--new-run", "--journal", "moved.sqlite", env=env
        )
        started_over = invoke("batch", "p.txt", "--out", "o", "--new-run", env=env)
        attempts = server.stats.submission_attempts
    assert resumed.exit_code == 0, resumed.output
    assert refused.exit_code == 2
    assert "still records this batch" in refused.stderr
    assert started_over.exit_code == 0, started_over.output
    assert attempts == 6
    kept = list(out.glob("results-*.jsonl"))
    assert len(kept) == 1
    assert len(kept[0].read_text().splitlines()) == 3
