"""The command line at 80 columns and on bad input (issue 25, section 4): task ids whole,
usage errors one line with exit 2, CSV read by its header, a resumed run's throughput, and
a batch pointed at another run's journal finding its videos."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    FAST,
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    submit_jobs,
    subprocess_env,
    threaded_fake,
)

from hailuo_async import BatchCounts, LeftRunningJob, TaskResult, TaskStatus
from hailuo_async.cli._app import cli
from hailuo_async.cli._batch_run import BatchReport, Failure, summary
from hailuo_async.cli._display import BatchView, JobView
from hailuo_async.cli._errors import EXIT_USAGE
from hailuo_async.testing import Fixed

REPO = Path(__file__).resolve().parent.parent
# A task id as long as the service's (a UUID), and longer ones a gateway may make.
LONG_IDS = ["3b1060c6-d5bb-46e8-aaa3-15936e343d57", "task-" + "0123456789abcdef" * 3]


def _rendered(renderable: object, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- task ids at 80 columns ---------------------------------------------------------------------


def test_status_and_watch_show_whole_task_ids_at_80_columns() -> None:
    """At COLUMNS=80 the status and watch tables show every task id whole, never cut."""
    with threaded_fake(job_duration=Fixed(1), failure_rate=0.5, seed=8) as server:
        ids = submit_jobs(server, "a fox", "an owl", "a wren")
        env = {**fake_env(server), "COLUMNS": "80"}
        watched = invoke("watch", *ids, env=env)
        status = invoke("status", *ids, env=env)
    for output in (watched.stdout, status.stdout):
        assert "…" not in output
        assert all(task_id in output for task_id in ids), output
        assert max(len(line) for line in output.splitlines()) <= 80
    # watch has no --json: the note under the table points at status's.
    assert "--json" not in watched.stdout.replace("hailuo status --json", "")
    assert max(output.count("\n") for output in (watched.stdout, status.stdout)) < 20


def test_generate_s_live_line_keeps_the_task_id_whole() -> None:
    """generate's live view, 80 columns wide, shows the whole task id while polling."""
    view = JobView("a red fox trotting through fresh snow at dawn, breath steaming, low shot")
    view.task_id = LONG_IDS[1]
    view.result = TaskResult(task_id=LONG_IDS[1], status=TaskStatus.PROCESSING, eta=90.0)
    shown = _rendered(view)
    assert LONG_IDS[1] in shown
    assert "…" not in shown.replace("…", "", 1)  # the prompt may be clipped, not the id


def test_a_batch_s_running_jobs_show_whole_task_ids() -> None:
    """The batch's live view lists its running jobs by whole task id at 80 columns."""
    counts = BatchCounts(3, 0, 2, 1, 0, 10, ended_here=1)
    view = BatchView(title=_title(), total=3, counts=lambda: counts)
    for task_id in LONG_IDS:
        view.tasks[task_id] = TaskResult(task_id=task_id, status=TaskStatus.PROCESSING, eta=9.0)
    shown = _rendered(view)
    assert all(task_id in shown for task_id in LONG_IDS), shown


def _title() -> Text:
    return Text("hailuo batch prompts.txt")


def test_the_summary_s_tables_show_whole_task_ids() -> None:
    """The failed-jobs and left-running tables of a batch's summary keep ids whole at 80."""
    report = BatchReport(total=3, out=Path("videos"), journal=Path("j.sqlite"), simulated=False)
    report.failures.append(Failure(1, LONG_IDS[0], "the prompt was flagged " * 4))
    report.left_running.append((2, LeftRunningJob(1, None, LONG_IDS[1])))
    shown = "".join(_rendered(table) for table in summary(report))
    assert all(task_id in shown for task_id in LONG_IDS), shown
    assert "…" not in shown


# -- bad input: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize("port", ["80000", "-1"])
def test_fake_server_on_an_impossible_port_is_one_line_and_exit_2(port: str) -> None:
    """`fake-server --port 80000`: one line naming --port, exit 2, no traceback."""
    completed = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "hailuo_async.cli", "fake-server", "--port", port],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == EXIT_USAGE
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: argument --port")


def test_a_journal_that_cannot_be_reached_is_one_line_and_exit_2() -> None:
    """status --journal with nothing listening: one line (libpq's two joined), exit 2."""
    journal = f"postgresql://nobody:secret@127.0.0.1:{_closed_port()}/x"
    result = invoke("status", "--journal", journal, "--name", "b")
    assert result.exit_code == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "check --journal" in lines[0]
    assert "secret" not in result.stderr


def test_no_coordination_gives_the_same_error_for_a_bad_journal() -> None:
    """hailuo work on an unreachable journal: the same one line with --no-coordination or not."""
    journal = f"postgresql://nobody@127.0.0.1:{_closed_port()}/x"
    env = {"HAILUO_API_KEY": "k"}
    plain = invoke("work", "--journal", journal, "--name", "b", env=env)
    without = invoke("work", "--journal", journal, "--name", "b", "--no-coordination", env=env)
    assert plain.exit_code == without.exit_code == EXIT_USAGE
    assert plain.stderr == without.stderr
    assert len(plain.stderr.strip().splitlines()) == 1


def test_a_journal_whose_folder_is_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """--journal under a path that is a file: one line naming --journal, exit 2."""
    (tmp_path / "taken").write_text("a file, not a folder")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    result = invoke(
        "batch", str(prompts), "--simulate", "--journal", str(tmp_path / "taken" / "j.sqlite")
    )
    assert result.exit_code == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --journal")


# -- CSV ------------------------------------------------------------------------------------------


def test_a_csv_file_is_read_by_its_header(tmp_path: Path) -> None:
    """A .csv with a header: each row a job with its own fields; the header is no job."""
    batch = tmp_path / "jobs.csv"
    batch.write_text(
        'prompt,key,duration,resolution\na red fox,fox,6,1080P\n"a heron, at dawn",heron,10,\n'
    )
    result = invoke("batch", str(batch), "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(r"total\s*│\s*2\b", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a red fox\nan owl\n", "header row"),
        ("prompt,colour\na fox,red\n", "unknown field 'colour'"),
        ("prompt,duration\na fox,seven\n", "duration: must be a whole number"),
    ],
)
def test_a_csv_file_without_a_usable_header_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    """A header-less CSV (its first prompt would become a job) or bad cells: exit 2."""
    batch = tmp_path / "jobs.csv"
    batch.write_text(text)
    result = invoke("batch", str(batch), "--dry-run")
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr


# -- a resumed run, and another run's journal ---------------------------------------------------


def test_a_resumed_run_that_did_no_work_claims_no_throughput(tmp_path: Path) -> None:
    """A rerun of a finished batch reports its jobs, and "-" for throughput, not jobs/min."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\nan owl\n")
    arguments = ["batch", str(prompts), "--simulate", "--time-scale", FAST]
    assert invoke(*arguments, "--out", "videos").exit_code == 0
    again = invoke(*arguments, "--out", "videos")
    assert again.exit_code == 0
    (row,) = [line for line in again.stdout.splitlines() if "throughput" in line]
    assert "jobs/min" not in row
    assert row.split("│")[2].strip() == "-"


def test_another_run_s_journal_puts_the_videos_in_the_new_folder(tmp_path: Path) -> None:
    """--journal of a run that saved its videos elsewhere, --out new/: new/ gets them too."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\nan owl\n")
    first = ["batch", str(prompts), "--simulate", "--time-scale", FAST, "--out", "old"]
    assert invoke(*first).exit_code == 0
    journal = "old/journal-simulated.sqlite"
    second = invoke(
        "batch", str(prompts), "--simulate", "--time-scale", FAST, "--journal", journal,
        "--out", "new",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    old, new = sorted(Path("old").glob("*.mp4")), sorted(Path("new").glob("*.mp4"))
    assert [video.name for video in new] == [video.name for video in old]
    assert all(video.read_bytes() == (Path("old") / video.name).read_bytes() for video in new)
    for video in old:  # gone from where they were saved: the next run still finds them
        video.unlink()
    third = invoke(
        "batch", str(prompts), "--simulate", "--time-scale", FAST, "--journal", journal,
        "--out", "third",
    )  # fmt: skip
    assert third.exit_code == 0, third.output
    assert len(list(Path("third").glob("*.mp4"))) == 2


def test_the_command_table_of_the_cli_page_lists_every_command() -> None:
    """docs/cli.md's table has a row for each `hailuo` command (work included)."""
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page[: page.index("## Key, service and simulation")]
    for name in cli.commands:
        assert f"| `hailuo {name}" in table, name
