"""What a new user meets next on the command line: one-line errors with a CLI fix, tables
that show working links, counts that add up, a watch table printed once, resume commands
that resume the same run."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    FAST,
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    submit_jobs,
    subprocess_env,
    threaded_fake,
)

from hailuo_async.cli._app import _resume_command, cli
from hailuo_async.cli._errors import EXIT_USAGE
from hailuo_async.testing import Fixed


def test_fake_server_on_a_taken_port_is_one_line_and_exit_2() -> None:
    """A port in use is one line naming --port, exit 2, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(  # noqa: S603 - our own module
            [sys.executable, "-m", "hailuo_async.cli", "fake-server", "--port", str(port)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == EXIT_USAGE
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert "--port" in lines[0]


def test_fake_server_help_shows_defaults() -> None:
    """fake-server --help gives each knob's default."""
    completed = subprocess.run(
        [sys.executable, "-m", "hailuo_async.cli", "fake-server", "--help"],
        env={**subprocess_env(), "COLUMNS": "200"},  # no line wrapped inside a default
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "(default: 8001)" in completed.stdout  # uvicorn keeps its 8000
    assert "(default: fake-hailuo-key)" in completed.stdout


def test_plain_http_base_url_names_the_cli_flag(tmp_path: Path) -> None:
    """A plain-http gateway is a usage error naming --allow-insecure, not a Python argument."""
    env = {"HAILUO_API_KEY": "k", "HAILUO_BASE_URL": "http://gateway.example"}
    result = invoke("status", "some-task", env=env)
    assert result.exit_code == EXIT_USAGE
    assert "--allow-insecure" in result.stderr
    assert "allow_insecure" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_allow_insecure_lets_a_plain_http_gateway_through() -> None:
    """With --allow-insecure the same URL is used (here: nothing listens, a one-line error)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"HAILUO_API_KEY": "k", "HAILUO_BASE_URL": f"http://localhost.:{port}"}
    result = invoke("status", "some-task", "--allow-insecure", "--max-retries", "0", env=env)
    assert "--allow-insecure" not in result.stderr
    assert "cannot reach the service" in result.stderr


def test_status_table_never_shows_a_cut_url() -> None:
    """The table shows no URL but points at --json, whose URL works as it is."""
    with threaded_fake(job_duration=Fixed(1)) as server:
        env = fake_env(server)
        (task_id,) = submit_jobs(server, "one")
        invoke("watch", task_id, env=env)
        table = invoke("status", task_id, env=env)
        as_json = invoke("status", task_id, "--json", env=env)
    url = json.loads(as_json.stdout)["video_url"]
    assert "?" in url  # a presigned URL: its query is part of the link
    assert "http" not in table.stdout
    assert "--json" in table.stdout


def test_watch_prints_its_final_table_once() -> None:
    """watch ends with one table of the tasks on stdout."""
    with threaded_fake(job_duration=Fixed(1)) as server:
        (task_id,) = submit_jobs(server, "one")
        result = invoke("watch", task_id, env=fake_env(server))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Watching 1 task(s)") == 1
    assert result.output.count("Watching 1 task(s)") == 1


def test_resume_command_keeps_the_time_scale_and_simulation() -> None:
    """The printed resume command runs the same service at the same pace."""
    argv = ["p.txt", "--out", "out", "--max-active", "3", "--simulate", "--time-scale", "0.5"]
    ctx = cli.commands["batch"].make_context("batch", [*argv, "--simulate-failure-rate", "0.25"])
    with ctx:
        command, _ = _resume_command(ctx)
    assert command == (
        "hailuo batch p.txt --out out --max-active 3 --simulate --time-scale 0.5 "
        "--simulate-failure-rate 0.25"
    )


def test_batch_help_names_both_journal_defaults() -> None:
    """batch --help gives the journal's name with and without --simulate."""
    text = " ".join(invoke("batch", "--help").stdout.split())
    assert "OUT/journal.sqlite" in text
    assert "OUT/journal-simulated.sqlite with --simulate" in text


@pytest.mark.parametrize("command", ["generate", "batch", "status", "watch", "download"])
def test_every_option_read_from_the_environment_says_so(command: str) -> None:
    """Each option with an environment variable names it in --help."""
    text = " ".join(invoke(command, "--help").stdout.split())
    for variable in ("HAILUO_API_KEY", "HAILUO_BASE_URL", "HAILUO_SIMULATE", "HAILUO_TIME_SCALE"):
        assert variable in text
    assert "HAILUO_MAX_RETRIES" in text
    assert "HAILUO_ALLOW_INSECURE" in text


def test_download_defaults_its_folder_like_generate(tmp_path: Path) -> None:
    """download without --out saves into videos/, as generate does."""
    with threaded_fake(job_duration=Fixed(1)) as server:
        env = fake_env(server)
        (task_id,) = submit_jobs(server, "one")
        invoke("watch", task_id, env=env)
        result = invoke("download", task_id, env=env)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).parent == Path("videos")
    assert (tmp_path / result.stdout.strip()).is_file()


def test_generate_simulated_is_paced_to_the_fake(tmp_path: Path) -> None:
    """--simulate polls at the fake's time scale: few polls for one job, whatever the load."""
    result = invoke("generate", "a fox", "--simulate", "--time-scale", FAST)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).suffix == ".mp4"


@pytest.mark.parametrize("image", ["ftp://host/frame.png", "missing.png"])
def test_bad_image_is_one_line_in_the_cli_s_words(image: str) -> None:
    """A bad --image is a usage error that names no Python type or argument."""
    result = invoke("generate", "a fox", "--image", image, "--simulate")
    assert result.exit_code == EXIT_USAGE
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pathlib" not in result.stderr
    assert "=True" not in result.stderr


def _parsed(argv: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    """The options `hailuo batch ARGV` runs with (its own and the shared ones), and its resume."""
    command = cli.commands["batch"]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        with command.make_context("batch", list(argv)) as ctx:
            resume, _ = _resume_command(ctx)
            settings = ctx.meta.get("hailuo.settings", {})
            options = {**ctx.params, **settings}
    return options, resume


def test_the_resume_command_parses_back_to_the_same_run() -> None:
    """Every option deciding where and how the batch runs survives: --base-url and the rest."""
    argv = [
        "jobs.jsonl",
        "--out", "clips",
        "--max-active", "7",
        "--rpm", "90.5",
        "--journal", "state/run.sqlite",
        "--confirm-above", "40",
        "--coordination", "postgresql://app@db/x?schema=team",
        "--time-scale", "0.25",
        "--max-retries", "2",
        "--allow-insecure",
    ]  # fmt: skip
    env = {"HAILUO_BASE_URL": "http://gateway.internal:8080", "HAILUO_API_KEY": "sk-secret"}
    given, resume = _parsed(argv, env)
    words = shlex.split(resume)
    assert words[:2] == ["hailuo", "batch"]
    # Parsed back without the environment: the command alone says where and how.
    again, _ = _parsed(words[2:])
    kept = {name: value for name, value in given.items() if name not in ("api_key", "debug")}
    assert {name: again[name] for name in kept} == kept
    assert again["base_url"] == "http://gateway.internal:8080"
    assert "sk-secret" not in resume
    assert "--api-key" not in resume
