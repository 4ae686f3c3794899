"""The `hailuo` command: generate, status, watch, download, fake-server, errors and keys.

Commands run in-process through click's CliRunner (each one runs its own event loop, so a
fake service they talk to runs in a thread of its own: see `threaded_fake`), and as real
subprocesses where a separate process matters (fake-server, signals).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hailuo_async import HailuoClient, VideoRequest
from hailuo_async.cli import main
from hailuo_async.cli._app import cli
from hailuo_async.testing import FakeHailuoServer, Fixed

FAST = "0.002"  # --time-scale for simulated runs: 30-180 s jobs take 60-360 ms
ENV_VARS = (
    "HAILUO_API_KEY",
    "HAILUO_BASE_URL",
    "HAILUO_SIMULATE",
    "HAILUO_TIME_SCALE",
    "HAILUO_PROVIDER",
)
MP4_MAGIC = b"ftyp"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts without the user's key or settings, in its own directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@contextmanager
def threaded_fake(**knobs: Any) -> Iterator[FakeHailuoServer]:
    """A FakeHailuoServer serving from its own thread and event loop."""
    knobs = {"time_scale": 0.002, "seed": 7, **knobs}
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with FakeHailuoServer(**knobs) as server:
            box["server"] = server
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake service did not start"
    try:
        yield box["server"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def fake_env(server: FakeHailuoServer) -> dict[str, str]:
    """Environment pointing the CLI at a fake service, polling at its time scale."""
    return {
        "HAILUO_API_KEY": server.api_key,
        "HAILUO_BASE_URL": server.url,
        "HAILUO_TIME_SCALE": str(server.config.time_scale),
    }


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run `hailuo ARGS` in-process."""
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def submit_jobs(server: FakeHailuoServer, *prompts: str) -> list[str]:
    """Start jobs on a threaded fake from a fresh event loop; return their task ids."""

    async def go() -> list[str]:
        async with HailuoClient(server.api_key, base_url=server.url) as client:
            return [await client.submit(VideoRequest(prompt=prompt)) for prompt in prompts]

    return asyncio.run(go())


def assert_mp4(path: Path) -> None:
    """The file exists and is an MP4 (its first box is `ftyp`)."""
    assert path.is_file(), path
    assert path.read_bytes()[4:8] == MP4_MAGIC


# -- generate ------------------------------------------------------------------------------


def test_generate_simulated_prints_path_of_real_mp4(tmp_path: Path) -> None:
    """`generate --simulate` needs no key, downloads the video and prints only its path."""
    result = invoke("generate", "a red fox in snow", "--simulate", "--time-scale", FAST)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert_mp4(tmp_path / lines[0])
    assert Path(lines[0]).parent == Path("videos")
    assert "submitted task" in result.stderr


def test_simulate_can_come_from_the_environment(tmp_path: Path) -> None:
    """HAILUO_SIMULATE=1 does what --simulate does."""
    result = invoke("generate", "a prompt", env={"HAILUO_SIMULATE": "1", "HAILUO_TIME_SCALE": FAST})
    assert result.exit_code == 0, result.output
    assert_mp4(tmp_path / result.stdout.strip())


def test_generate_sends_every_option(tmp_path: Path) -> None:
    """Each generate flag reaches the service as the matching request field."""
    with threaded_fake() as server:
        result = invoke(
            "generate",
            "a lighthouse at dusk",
            "--image",
            "https://example.com/first.jpg",
            "--end-image",
            "https://example.com/last.png",
            "--duration",
            "10",
            "--no-prompt-expansion",
            "--fast-pretreatment",
            "--out",
            "clips",
            env=fake_env(server),
        )
        (task,) = server.tasks.values()
    assert result.exit_code == 0, result.output
    request = task.request
    assert (request.prompt, request.duration, request.resolution) == (
        "a lighthouse at dusk",
        10,
        "768P",
    )
    assert request.image == "https://example.com/first.jpg"
    assert request.end_image == "https://example.com/last.png"
    assert request.enable_prompt_expansion is False
    assert request.fast_pretreatment is True
    assert_mp4(tmp_path / result.stdout.strip())
    assert result.stdout.strip().startswith("clips")


def test_generate_local_image_is_sent_as_data_uri(tmp_path: Path) -> None:
    """A local --image path is read and sent inline."""
    (tmp_path / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    with threaded_fake() as server:
        result = invoke("generate", "a kite", "--image", "frame.png", env=fake_env(server))
        (task,) = server.tasks.values()
    assert result.exit_code == 0, result.output
    assert task.request.image is not None
    assert task.request.image.startswith("data:image/png;base64,")


def test_generate_failed_job_is_one_line_and_exit_1() -> None:
    """A job the service fails ends with its reason on one line and status 1."""
    result = invoke(
        "generate", "x", "--simulate", "--simulate-failure-rate", "1", "--time-scale", FAST
    )
    assert result.exit_code == 1
    assert re.search(r"^error: task \S+ failed: .+$", result.stderr, re.MULTILINE)
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--duration", "10", "--resolution", "1080P"], "resolution"),
        (["--image", "missing.jpg"], "image"),
    ],
)
def test_generate_invalid_request_is_usage_error(args: list[str], field: str) -> None:
    """A request the API would refuse is reported (naming the field) before sending: exit 2."""
    with threaded_fake() as server:
        result = invoke("generate", "a prompt", *args, env=fake_env(server))
        attempts = server.stats.submission_attempts
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: invalid request: {field}:")
    assert result.stderr.count("\n") == 1
    assert attempts == 0


def test_generate_dry_run_prices_and_sends_nothing() -> None:
    """`generate --dry-run` prints an estimate and never reaches the service."""
    with threaded_fake() as server:
        result = invoke("generate", "x", "--resolution", "1080P", "--dry-run", env=fake_env(server))
        requests = server.stats.submission_attempts + server.stats.polls_total
    assert result.exit_code == 0, result.output
    assert "$0.49" in result.stdout
    assert "estimate" in result.stdout
    assert requests == 0


# -- keys and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "a prompt"],
        ["batch", "prompts.txt"],
        ["status", "task-1"],
        ["watch", "task-1"],
        ["download", "task-1", "--out", "v"],
    ],
)
def test_missing_key_says_how_to_set_it(args: list[str], tmp_path: Path) -> None:
    """Without a key every command says to set HAILUO_API_KEY or use --simulate (exit 2)."""
    (tmp_path / "prompts.txt").write_text("a prompt\n")
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no API key")
    assert result.stderr.count("\n") == 1
    assert "HAILUO_API_KEY" in result.stderr
    assert "--simulate" in result.stderr


def test_wrong_key_is_one_line_without_traceback() -> None:
    """A key the service refuses gives one line that points at HAILUO_API_KEY, exit 1."""
    with threaded_fake() as server:
        env = {**fake_env(server), "HAILUO_API_KEY": "not-the-key"}
        result = invoke("generate", "a prompt", env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 401")
    assert "HAILUO_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_debug_lets_the_exception_through() -> None:
    """With --debug the library's exception propagates (so Python prints its traceback)."""
    from hailuo_async import AuthenticationError

    with threaded_fake() as server:
        env = {**fake_env(server), "HAILUO_API_KEY": "not-the-key"}
        result = CliRunner().invoke(cli, ["generate", "a prompt", "--debug"], env=env)
    assert isinstance(result.exception, AuthenticationError)


def test_unreachable_service_is_one_line() -> None:
    """A base URL nobody answers on is reported as such, in one line."""
    env = {"HAILUO_API_KEY": "k", "HAILUO_BASE_URL": "http://127.0.0.1:9"}
    result = invoke("status", "task-1", "--max-retries", "0", env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the service")
    assert result.stderr.count("\n") == 1


def test_help_lists_every_command() -> None:
    """`hailuo --help` names the six commands."""
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("generate", "batch", "status", "watch", "download", "fake-server"):
        assert command in result.stdout


def test_main_entry_point_runs_the_group(capsys: pytest.CaptureFixture[str]) -> None:
    """`hailuo_async.cli.main` is the console script: it parses argv and exits."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "hailuo" in capsys.readouterr().out


# -- status / watch / download -------------------------------------------------------------


def test_status_watch_download_follow_existing_tasks(tmp_path: Path) -> None:
    """status shows tasks, watch follows them to the end, download fetches their videos."""
    with threaded_fake(job_duration=Fixed(60)) as server:
        env = fake_env(server)
        ids = submit_jobs(server, "one", "two")
        early = invoke("status", *ids, "--json", env=env)
        watched = invoke("watch", *ids, env=env)
        shown = invoke("status", *ids, env=env)
        fetched = invoke("download", *ids, "--out", "got", env=env)
    assert early.exit_code == 0, early.output
    rows = [json.loads(line) for line in early.stdout.splitlines()]
    assert [row["task_id"] for row in rows] == ids
    assert {row["status"] for row in rows} <= {"queued", "processing"}
    assert {row["raw_status"] for row in rows} <= {"TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING"}

    assert watched.exit_code == 0, watched.output
    assert watched.stdout.count("SUCCEED") == 2

    assert shown.exit_code == 0, shown.output
    assert shown.stdout.count("SUCCEED") == 2
    assert "100%" in shown.stdout

    assert fetched.exit_code == 0, fetched.output
    paths = fetched.stdout.split()
    assert len(paths) == 2
    for path in paths:
        assert_mp4(tmp_path / path)


def test_watch_exits_1_when_a_task_failed() -> None:
    """watch reports a failed task with its reason and exits 1."""
    with threaded_fake(failure_rate=1.0) as server:
        (task_id,) = submit_jobs(server, "doomed")
        result = invoke("watch", task_id, env=fake_env(server))
    assert result.exit_code == 1
    assert "FAILED" in result.stdout


def test_unknown_task_ids_are_reported_per_task() -> None:
    """status and download name the unknown id and exit 1; known ones still work."""
    with threaded_fake() as server:
        env = fake_env(server)
        (known,) = submit_jobs(server, "fine")
        status = invoke("status", known, "nope", "--json", env=env)
        fetched = invoke("download", "nope", "--out", "v", env=env)
    assert status.exit_code == 1
    rows = {row["task_id"]: row for row in map(json.loads, status.stdout.splitlines())}
    assert "404" in rows["nope"]["error"]
    assert "status" in rows[known]
    assert fetched.exit_code == 1
    assert fetched.stderr.startswith("nope: 404")


def test_download_of_unfinished_task_suggests_watch() -> None:
    """Downloading a task still running says so and how to follow it."""
    with threaded_fake(job_duration=Fixed(100_000)) as server:
        (task_id,) = submit_jobs(server, "slow")
        result = invoke("download", task_id, "--out", "v", env=fake_env(server))
    assert result.exit_code == 1
    assert "not finished yet" in result.stderr
    assert f"hailuo watch {task_id}" in result.stderr


def test_simulated_status_of_foreign_task_explains_why() -> None:
    """--simulate knows only its own tasks, and says how to keep tasks between commands."""
    result = invoke("status", "task-from-elsewhere", "--simulate", "--json")
    assert result.exit_code == 1
    assert "hailuo fake-server" in result.stdout


# -- fake-server ---------------------------------------------------------------------------


def test_fake_server_help_is_the_testing_parsers() -> None:
    """`hailuo fake-server --help` shows the knobs of `python -m hailuo_async.testing`."""
    result = CliRunner().invoke(cli, ["fake-server", "--help"])
    assert result.exit_code == 0
    for flag in ("--port", "--time-scale", "--failure-rate", "--fault-reset"):
        assert flag in result.stdout


def test_fake_server_bad_knob_is_usage_error() -> None:
    """A bad knob value stops fake-server with status 2."""
    result = CliRunner().invoke(cli, ["fake-server", "--failure-rate", "3"])
    assert result.exit_code == 2


def test_fake_server_subcommand_serves_until_terminated() -> None:
    """`hailuo fake-server --port 0` prints its URL, accepts a job, and exits 0 on SIGTERM."""
    argv = [sys.executable, "-m", "hailuo_async.cli", "fake-server", "--port", "0"]
    argv += ["--api-key", "k", "--time-scale", "0.01"]
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env()
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            match = re.search(r"fake Hailuo API on (http://\S+)", first)
            assert match, first
            request = urllib.request.Request(  # noqa: S310 - a local URL it just printed
                match.group(1) + "/v3/async/minimax-hailuo-02",
                data=json.dumps({"prompt": "hello"}).encode(),
                headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert "task_id" in json.loads(response.read())
        finally:
            process.terminate()
            code = process.wait(10)
    assert code == 0


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_repo()), env.get("PYTHONPATH")]))
    return env


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent
