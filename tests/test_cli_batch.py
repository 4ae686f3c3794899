"""`hailuo batch`: files, validation, results.jsonl, exit codes, dry runs, resuming, Ctrl-C."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from click.testing import CliRunner
from rich.text import Text
from test_cli import (
    ENV_VARS,
    FAST,
    assert_mp4,
    fake_env,
    invoke,
    subprocess_env,
    threaded_fake,
)

from hailuo_async import BatchCounts, VideoRequest
from hailuo_async.cli import _app, _batch_run
from hailuo_async.cli._app import cli
from hailuo_async.cli._display import BatchView
from hailuo_async.cli._inputs import load_batch
from hailuo_async.cli._pricing import ESTIMATED_PRICE_PER_JOB_USD, estimate
from hailuo_async.extend import job_specs
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Uniform

README_MAIN_COMMAND = "hailuo batch examples/prompts.txt --simulate --out videos/"
REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts without the user's key or settings, in its own directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_jsonl(path: Path, *rows: dict[str, Any] | str) -> Path:
    """A JSONL file; a str row is written as it is (to make broken lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def results(out: Path) -> list[dict[str, Any]]:
    """The records of OUT/results.jsonl."""
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


# -- running -------------------------------------------------------------------------------


def test_text_batch_writes_results_and_videos(tmp_path: Path) -> None:
    """A text file runs one job per prompt line; results.jsonl and MP4s land in --out."""
    (tmp_path / "prompts.txt").write_text(
        "# a comment\na red fox\n\na blue whale\n  a green frog  \n", encoding="utf-8"
    )
    result = invoke("batch", "prompts.txt", "--simulate", "--time-scale", FAST, "--out", "o")
    assert result.exit_code == 0, result.output
    records = sorted(results(tmp_path / "o"), key=lambda r: r["line"])
    assert [(r["line"], r["request"]) for r in records] == [
        (2, {"prompt": "a red fox"}),
        (4, {"prompt": "a blue whale"}),
        (5, {"prompt": "a green frog"}),
    ]
    for record in records:
        assert record["status"] == "succeeded"
        assert record["reason"] is None
        assert record["task_id"]
        assert record["simulated"] is True
        assert_mp4(tmp_path / record["file"])
    assert result.stdout.count("✓ line") == 3
    assert "Batch summary" in result.stdout


def test_jsonl_batch_sends_fields_and_keeps_keys(tmp_path: Path) -> None:
    """JSONL fields reach the service; keys and requests as written go to results.jsonl."""
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "first.png").write_bytes(PNG)
    rows: list[dict[str, Any]] = [
        {"key": "fox", "prompt": "a fox", "duration": 10},
        {"key": "owl", "prompt": "an owl", "resolution": "1080P", "fast_pretreatment": True},
        {"prompt": "a frog", "image": "frames/first.png", "enable_prompt_expansion": False},
    ]
    write_jsonl(tmp_path / "jobs.jsonl", *rows)
    with threaded_fake() as server:
        result = invoke("batch", str(tmp_path / "jobs.jsonl"), "--out", "o", env=fake_env(server))
        sent = {task.request.prompt: task.request for task in server.tasks.values()}
    assert result.exit_code == 0, result.output
    assert sent["a fox"].duration == 10
    assert (sent["an owl"].resolution, sent["an owl"].fast_pretreatment) == ("1080P", True)
    assert sent["a frog"].enable_prompt_expansion is False
    assert (sent["a frog"].image or "").startswith("data:image/png;base64,")
    by_line = {record["line"]: record for record in results(tmp_path / "o")}
    assert by_line[1]["key"] == "fox"
    assert by_line[2]["key"] == "owl"
    assert by_line[3]["request"] == rows[2]  # the image as written, not its base64


def test_some_failed_jobs_exit_1_with_reasons(tmp_path: Path) -> None:
    """Jobs the service fails are recorded with their reason; the batch exits 1."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(8)))
    with threaded_fake(failure_rate=0.5) as server:
        result = invoke("batch", "p.txt", "--out", "o", env=fake_env(server))
        failing = sum(task.fails for task in server.tasks.values())
    records = results(tmp_path / "o")
    failed = [record for record in records if record["status"] == "failed"]
    assert 0 < failing < 8
    assert result.exit_code == 1, result.output
    assert len(records) == 8
    assert len(failed) == failing
    for record in failed:
        assert record["reason"]
        assert record["file"] is None
    assert "Failed jobs" in result.stdout


def test_max_active_keeps_the_service_from_refusing(tmp_path: Path) -> None:
    """--max-active N keeps at most N jobs at the service, so its active cap never answers 429."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(6)))
    with threaded_fake(max_active_tasks=2) as server:
        result = invoke("batch", "p.txt", "--max-active", "2", env=fake_env(server))
        refused = server.stats.rate_limited.get("active_cap", 0)
    assert result.exit_code == 0, result.output
    assert refused == 0


def test_rerun_resumes_without_submitting_again(tmp_path: Path) -> None:
    """Running a finished batch again submits nothing new and records nothing twice."""
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")
    with threaded_fake() as server:
        first = invoke("batch", "p.txt", "--out", "o", env=fake_env(server))
        second = invoke("batch", "p.txt", "--out", "o", env=fake_env(server))
        accepted = server.stats.submissions_accepted
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert accepted == 3
    assert len(results(tmp_path / "o")) == 3
    assert (tmp_path / "o" / "journal.sqlite").exists()


def test_rerun_counts_earlier_jobs_apart(tmp_path: Path) -> None:
    """A rerun prints no news for jobs already recorded and counts them in the summary."""
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    args = ("batch", "p.txt", "--simulate", "--time-scale", FAST)
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "✓ line" not in again.stdout
    assert re.search(r"ended in earlier runs\s*│\s*2 \(of the above\)", again.stdout)


def test_retry_failed_submits_only_the_failed_jobs_again(tmp_path: Path) -> None:
    """Failed jobs stay failed on a rerun (exit 1) until --retry-failed submits them again."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(6)))
    with threaded_fake(failure_rate=0.5) as server:
        env = fake_env(server)
        first = invoke("batch", "p.txt", env=env)
        failing = sum(task.fails for task in server.tasks.values())
        rerun = invoke("batch", "p.txt", env=env)
        after_rerun = server.stats.submissions_accepted
        retried = invoke("batch", "p.txt", "--retry-failed", env=env)
        after_retry = server.stats.submissions_accepted
    assert 0 < failing < 6
    assert first.exit_code == rerun.exit_code == 1
    assert "--retry-failed" in first.stdout
    assert after_rerun == 6
    assert after_retry == 6 + failing
    assert retried.stdout.count("line ") >= failing
    rows = results(tmp_path / "videos")
    assert sorted(row["line"] for row in rows) == list(range(1, 7))  # one row per job


def test_changed_request_under_an_old_key_is_refused(tmp_path: Path) -> None:
    """A keyed line whose request changed since the journal recorded it is a usage error."""
    args = ("batch", "j.jsonl", "--simulate", "--time-scale", FAST)
    write_jsonl(tmp_path / "j.jsonl", {"key": "a", "prompt": "one"})
    assert invoke(*args).exit_code == 0
    write_jsonl(tmp_path / "j.jsonl", {"key": "a", "prompt": "another"})
    result = invoke(*args)
    assert result.exit_code == 2
    assert "give the changed lines new keys" in result.stderr


def test_custom_journal_path_is_used(tmp_path: Path) -> None:
    """--journal puts the journal where it is asked."""
    (tmp_path / "p.txt").write_text("one\n")
    result = invoke(
        "batch", "p.txt", "--simulate", "--time-scale", FAST, "--journal", "state/j.sqlite"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "state" / "j.sqlite").exists()


# -- validation ----------------------------------------------------------------------------


def test_invalid_file_reports_every_line_and_sends_nothing(tmp_path: Path) -> None:
    """Every bad line is reported with its number, nothing is sent, and the exit status is 2."""
    write_jsonl(
        tmp_path / "bad.jsonl",
        {"prompt": "fine", "key": "a"},
        '{"prompt": "unterminated',
        "[1, 2]",
        {"prompt": "typo", "durration": 10},
        {"duration": 6},
        {"prompt": "seven", "duration": 7},
        {"prompt": "too sharp", "duration": 10, "resolution": "1080P"},
        {"prompt": "again", "key": "a"},
        {"prompt": "", "image": "https://example.com/a.jpg"},
    )
    with threaded_fake() as server:
        result = invoke("batch", "bad.jsonl", "--out", "o", env=fake_env(server))
        requests = server.stats.submission_attempts + server.stats.polls_total
    assert result.exit_code == 2
    assert requests == 0
    assert not (tmp_path / "o").exists()
    err = result.stderr
    assert "bad.jsonl:2: not valid JSON" in err
    assert "bad.jsonl:3: expected a JSON object, got an array" in err
    assert "bad.jsonl:4: unknown field 'durration' (did you mean 'duration'?)" in err
    assert "bad.jsonl:5: missing field 'prompt'" in err
    assert "bad.jsonl:6: duration:" in err
    assert "bad.jsonl:7: resolution:" in err
    assert "bad.jsonl:8: key 'a' is already used on line 1" in err
    assert "bad.jsonl:9: prompt:" in err
    assert "bad.jsonl:1:" not in err
    assert err.rstrip().splitlines()[-1] == "error: bad.jsonl: 8 invalid line(s); nothing was sent"
    assert "Traceback" not in result.output


def test_invalid_text_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """A prompt over the API's length limit is reported at its line."""
    (tmp_path / "p.txt").write_text("ok\n" + "x" * 2001 + "\n")
    result = invoke("batch", "p.txt", "--simulate")
    assert result.exit_code == 2
    assert "p.txt:2: prompt: must be 1 to 2000 characters long" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("\n# only a comment\n", "holds no jobs"), (b"\xff\xfe", "UTF-8")],
)
def test_unusable_files_exit_2(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    """A missing, empty or undecodable file is a usage error."""
    path = tmp_path / "p.txt"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = invoke("batch", "p.txt", "--simulate")
    assert result.exit_code == 2
    assert message in result.stderr


def test_invalid_file_is_reported_before_the_missing_key(tmp_path: Path) -> None:
    """File problems come first: they are what the user must fix to get anywhere."""
    write_jsonl(tmp_path / "bad.jsonl", {"prompt": 5})
    result = invoke("batch", "bad.jsonl")
    assert result.exit_code == 2
    assert "bad.jsonl:1: prompt: must be a string" in result.stderr
    assert "HAILUO_API_KEY" not in result.stderr


def test_formats_are_detected_and_images_resolved_beside_the_file(tmp_path: Path) -> None:
    """A file without a known suffix is sniffed; image paths are relative to the file."""
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.png").write_bytes(PNG)
    jobs = write_jsonl(tmp_path / "batch" / "jobs", {"prompt": "p", "image": "a.png"})
    loaded = load_batch(jobs)
    assert loaded.format == "jsonl"
    assert (loaded.jobs[0].request.image or "").startswith("data:image/png")
    (tmp_path / "plain").write_text("a prompt with {braces}\n")
    assert load_batch(tmp_path / "plain").format == "text"


# -- dry run and confirmation --------------------------------------------------------------


def test_dry_run_counts_prices_and_sends_nothing(tmp_path: Path) -> None:
    """--dry-run counts jobs by duration and resolution, estimates spend, sends nothing."""
    rows = [{"prompt": "a"}] * 3 + [{"prompt": "b", "duration": 10}] * 2
    write_jsonl(tmp_path / "j.jsonl", *rows, {"prompt": "c", "resolution": "1080P"})
    with threaded_fake() as server:
        table = invoke("batch", "j.jsonl", "--dry-run", env=fake_env(server))
        flat = invoke("batch", "j.jsonl", "--dry-run", "--price-per-job", "1.5")
        requests = server.stats.submission_attempts + server.stats.polls_total
    assert requests == 0
    assert table.exit_code == 0, table.output
    expected = 3 * 0.28 + 2 * 0.56 + 0.49
    assert f"${expected:.2f}" in table.stdout
    assert "estimate" in table.stdout
    assert "ESTIMATED_PRICE_PER_JOB_USD" in table.stdout
    assert "6 valid job(s)" in table.stdout
    assert flat.exit_code == 0
    assert "$9.00" in flat.stdout
    assert not (tmp_path / "videos").exists()


def test_estimate_uses_the_price_table() -> None:
    """The built-in table prices each kind of job; the total adds them up."""
    requests = [VideoRequest(prompt="a"), VideoRequest(prompt="b", duration=10)]
    result = estimate(requests)
    assert [(line.duration, line.resolution, line.jobs) for line in result.lines] == [
        (6, "768P", 1),
        (10, "768P", 1),
    ]
    assert result.total == pytest.approx(
        ESTIMATED_PRICE_PER_JOB_USD[(6, "768P")] + ESTIMATED_PRICE_PER_JOB_USD[(10, "768P")]
    )


@pytest.mark.parametrize(("answer", "code", "submitted"), [("n", 1, 0), ("y", 0, 3)])
def test_confirm_above_asks_at_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, code: int, submitted: int
) -> None:
    """--confirm-above N asks before more than N jobs; a no sends nothing."""
    monkeypatch.setattr(_app, "_interactive", lambda: True)
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")
    with threaded_fake() as server:
        result = CliRunner().invoke(
            cli, ["batch", "p.txt", "--confirm-above", "2"], env=fake_env(server), input=answer
        )
        accepted = server.stats.submissions_accepted
    assert "Submit 3 paid jobs (estimated $0.84)?" in result.output
    assert result.exit_code == code, result.output
    assert accepted == submitted


# -- the live view -------------------------------------------------------------------------


def test_batch_view_numbers() -> None:
    """The view's counts add up to the total; jobs per minute and ETA come from them."""
    counts = BatchCounts(
        read=7, submitting=1, running=3, succeeded=2, failed=1, active_limit=4, ended_here=3
    )
    view = BatchView(title=Text("t"), total=10, counts=lambda: counts)
    view.started -= 60.0  # three jobs done in one minute
    numbers = view.numbers()
    shown = ("in_progress", "waiting", "succeeded", "failed")
    assert [numbers[name] for name in shown] == [4, 3, 2, 1]
    assert sum(numbers[name] or 0 for name in shown) == 10
    assert numbers["done"] == 3
    assert numbers["per_minute"] == pytest.approx(3.0, rel=0.01)
    assert numbers["eta"] == pytest.approx(7 / 3 * 60, rel=0.01)
    # Of the three, one was submitted by an earlier run (watched again, or replayed): the
    # pace counts the jobs this run submitted and saw end.
    counts = attrs.evolve(counts, ended_here=2)
    assert view.numbers()["per_minute"] == pytest.approx(2.0, rel=0.01)


# -- as a real process ---------------------------------------------------------------------


def _hailuo() -> list[str]:
    script = shutil.which("hailuo", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "hailuo_async.cli"]


def test_readme_main_command_makes_real_videos(tmp_path: Path) -> None:
    """The README's command, exactly as written, makes a dozen MP4s without a key."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    argv = shlex.split(README_MAIN_COMMAND)
    assert argv[0] == "hailuo"
    completed = subprocess.run(  # noqa: S603 - our own console script
        [*_hailuo(), *argv[1:]],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 12
    for video in videos:
        assert_mp4(video)
    assert len(results(tmp_path / "videos")) == 12
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    if "hailuo batch" in readme:
        assert README_MAIN_COMMAND in readme


def interrupt_after(
    argv: list[str], cwd: Path, env: dict[str, str], results_path: Path, finished: int
) -> tuple[int, str, str]:
    """Run the CLI as a process, SIGINT it once `finished` jobs are in results.jsonl."""
    with subprocess.Popen(  # noqa: S603 - our own console script
        [*_hailuo(), *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        deadline = time.monotonic() + 20
        while not (results_path.exists() and results_path.read_text().count("\n") >= finished):
            assert time.monotonic() < deadline, "no job finished"
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    return process.returncode, stdout, stderr


def test_ctrl_c_stops_cleanly_and_resuming_loses_nothing(tmp_path: Path) -> None:
    """SIGINT stops the batch (exit 130) saying how to resume; resuming finishes every job once."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(8)))
    with threaded_fake(job_duration=Uniform(100, 1500)) as server:
        env = {**subprocess_env(), **fake_env(server)}
        code, stdout, stderr = interrupt_after(
            ["batch", "p.txt", "--out", "o"], tmp_path, env, tmp_path / "o" / "results.jsonl", 2
        )
        assert code == 130, stdout + stderr
        assert "To resume, run: hailuo batch p.txt --out o" in stdout
        assert "Traceback" not in stderr
        finished_before = len(results(tmp_path / "o"))
        assert 2 <= finished_before < 8
        # The summary names every task left running: created, with no result written.
        _, _, left_table = stdout.partition("Left running at the service")
        written = {record["task_id"] for record in results(tmp_path / "o")}
        listed = {task_id for task_id in server.task_ids if task_id in left_table}
        assert listed == set(server.task_ids) - written

        resumed = invoke("batch", "p.txt", "--out", "o", env=fake_env(server))
        accepted = server.stats.submissions_accepted
        duplicates = server.stats.duplicate_submissions
    assert resumed.exit_code == 0, resumed.output
    records = results(tmp_path / "o")
    assert sorted(record["line"] for record in records) == list(range(1, 9))
    assert all(record["status"] == "succeeded" for record in records)
    assert (accepted, duplicates) == (8, 0)


def test_simulated_batch_resumes_after_ctrl_c(tmp_path: Path) -> None:
    """A simulated run stopped by Ctrl-C resumes to every video, though its service is new."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(8)))
    argv = ["batch", "p.txt", "--simulate", "--time-scale", "0.005", "--max-active", "2"]
    code, stdout, stderr = interrupt_after(
        argv, tmp_path, subprocess_env(), tmp_path / "videos" / "results.jsonl", 1
    )
    assert code == 130, stdout + stderr
    assert "To resume, run: hailuo batch p.txt --out videos --max-active 2 --simulate" in stdout
    resumed = invoke(*argv)
    assert resumed.exit_code == 0, resumed.output
    assert "were running on the simulated service of an earlier run" in resumed.stdout
    records = results(tmp_path / "videos")
    assert sorted(record["line"] for record in records) == list(range(1, 9))
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 8


async def _stop_like_ctrl_c(batch_file: Path, journal: Path) -> list[str]:
    """Leave the journal as a simulated run stopped by Ctrl-C can: job 1 finished but not
    downloaded, job 2 forgotten (marked failed) but not submitted again, job 3 running;
    return their task ids. The simulated service, and the videos it kept, then go away.
    """
    jobs = load_batch(batch_file).jobs
    specs = job_specs([job.request for job in jobs], [job.key for job in jobs])
    fake = FakeHailuoServer(time_scale=float(FAST))
    async with fake, fake.client() as client, SQLiteJobStore(journal) as store:
        await store.record(specs)
        task_ids = []
        for spec, job in zip(specs[:3], jobs[:3], strict=True):
            await store.mark_submitting(spec.key)
            task_ids.append(await client.submit(job.request))
            await store.mark_submitted(spec.key, task_ids[-1])
        await store.mark_finished(specs[0].key, await client.wait(task_ids[0]))
        await store.mark_failed(specs[1].key, _batch_run.FORGOTTEN)
    return task_ids


def test_simulated_resume_submits_again_a_job_finished_but_not_downloaded(
    tmp_path: Path,
) -> None:
    """A simulated rerun submits again what only an earlier, gone simulator knew, never failing."""
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(4)))
    journal = tmp_path / "videos" / "journal-simulated.sqlite"
    journal.parent.mkdir()
    old_ids = anyio.run(_stop_like_ctrl_c, tmp_path / "p.txt", journal)

    resumed = invoke("batch", "p.txt", "--simulate", "--time-scale", FAST, "--max-active", "2")

    assert resumed.exit_code == 0, resumed.output
    assert "3 job(s) were running on the simulated service of an earlier run" in resumed.stdout
    records = sorted(results(tmp_path / "videos"), key=lambda record: record["line"])
    assert [record["status"] for record in records] == ["succeeded"] * 4
    # Every job ran on this run's simulator: none kept a task id of the one that is gone.
    assert not {record["task_id"] for record in records} & set(old_ids)
    for record in records:
        assert_mp4(Path(record["file"]))

    async def states() -> list[JobState]:
        async with SQLiteJobStore(journal) as store:
            return [record.state for record in (await store.get_many()).values()]

    assert anyio.run(states) == [JobState.FINISHED] * 4


def test_out_is_a_folder_whatever_its_name(tmp_path: Path) -> None:
    """--out names a folder (made if missing, even with a suffix); a file there is refused."""
    (tmp_path / "p.txt").write_text("a kite\n")
    made = invoke("batch", "p.txt", "--simulate", "--time-scale", FAST, "--out", "out.v2")
    assert made.exit_code == 0, made.output
    [record] = results(tmp_path / "out.v2")
    assert Path(record["file"]).parent.resolve() == (tmp_path / "out.v2").resolve()
    assert_mp4(Path(record["file"]))
    (tmp_path / "taken").write_text("mine")
    refused = invoke("batch", "p.txt", "--simulate", "--out", "taken")
    assert refused.exit_code == 2, refused.output
    assert "Directory 'taken' is a file" in refused.output
    assert (tmp_path / "taken").read_text() == "mine"
