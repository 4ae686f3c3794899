"""examples/fastapi_app.py as a user runs it: its own "try it" steps, and its OpenAPI document.

The fake service and uvicorn run as real processes, started by the commands the example's
docstring gives (on free ports instead of 8000 and 8001, which another program may hold);
schemathesis then checks the app against its own ``/openapi.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode

# The shell a user types the documented commands into.
BASH = shutil.which("bash") or "/bin/bash"
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "fastapi_app.py"
DOCUMENTED_FAKE_PORT = "8001"
DOCUMENTED_APP_PORT = "8000"
# Generous: two Python processes start on a busy 2-core machine.
START_TIMEOUT = 60.0


def try_it_commands() -> list[str]:
    """The shell commands of the example's "Try it" section, continuation lines joined."""
    text = EXAMPLE.read_text(encoding="utf-8")
    section = text[text.index("Try it against the fake service") : text.index('"""\n\nfrom')]
    commands: list[str] = []
    pending = ""
    for line in section.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        part = line.strip()
        if part.endswith("\\"):
            pending += part[:-1]
            continue
        commands.append(pending + part)
        pending = ""
    return commands


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shell_env() -> dict[str, str]:
    """The environment of a user's shell: this venv's scripts first, no HAILUO_* leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILUO_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    """Wait until something accepts connections on ``port``; fail if the process died."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after {START_TIMEOUT} s")


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the command's process group and wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


class TryIt:
    """The example's documented commands, with the documented ports swapped for free ones."""

    def __init__(self) -> None:
        self.fake_port = free_port()
        self.app_port = free_port()
        self.commands = try_it_commands()
        # The app's bearer token, as the documented command sets it.
        found = re.search(r"VIDEO_APP_TOKEN=(\S+)", self.commands[1])
        assert found is not None
        self.token = found.group(1)

    def command(self, index: int, **substitutions: str) -> str:
        """The ``index``-th documented command, on this run's ports."""
        command = self.commands[index]
        command = command.replace(DOCUMENTED_FAKE_PORT, str(self.fake_port))
        command = command.replace(DOCUMENTED_APP_PORT, str(self.app_port))
        for word, value in substitutions.items():
            command = command.replace(word, value)
        return command

    def start(self, index: int) -> subprocess.Popen[str]:
        """Run a documented command in the background, from the checkout, as a shell would."""
        return subprocess.Popen(  # noqa: S603 - the documented command, run by bash
            [BASH, "-c", self.command(index)],
            cwd=REPO,
            env=shell_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def run(self, index: int, **substitutions: str) -> str:
        """Run a documented command to its end; its output."""
        completed = subprocess.run(  # noqa: S603 - the documented command, run by bash
            [BASH, "-c", self.command(index, **substitutions)],
            cwd=REPO,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return completed.stdout


@pytest.fixture(scope="module")
def try_it() -> Iterator[TryIt]:
    """The fake and the app, each started by its documented command."""
    steps = TryIt()
    fake = steps.start(0)
    try:
        wait_for_port(steps.fake_port, fake)
        app = steps.start(1)
        try:
            wait_for_port(steps.app_port, app)
            yield steps
        finally:
            stop(app)
    finally:
        stop(fake)


def test_try_it_names_two_ports_and_a_time_scale() -> None:
    """The documented steps put the fake and the app on different ports, both time-scaled."""
    commands = try_it_commands()
    assert len(commands) == 4
    fake, app, submit, events = commands
    assert fake.startswith("hailuo fake-server")
    assert f"--port {DOCUMENTED_FAKE_PORT}" in fake
    assert "--time-scale 0.02" in fake
    assert "HAILUO_TIME_SCALE=0.02" in app
    assert f"127.0.0.1:{DOCUMENTED_FAKE_PORT}" in app
    assert f"--port {DOCUMENTED_APP_PORT}" in app
    assert submit.startswith("curl")
    assert events.startswith("curl")
    # The app's routes need its token, and the documented requests send it.
    token = re.search(r"VIDEO_APP_TOKEN=(\S+)", app)
    assert token is not None
    assert f"Bearer {token.group(1)}" in submit
    assert f"Bearer {token.group(1)}" in events


def test_try_it_steps_make_a_video(try_it: TryIt) -> None:
    """The documented curl steps submit a job and stream its events until it succeeds."""
    accepted = json.loads(try_it.run(2))
    task_id = accepted["task_id"]
    stream = try_it.run(3, TASK_ID=task_id)
    kinds = re.findall(r"^event: (\w+)$", stream, flags=re.MULTILINE)
    assert kinds[-1] == "done", stream
    last = json.loads(stream.strip().splitlines()[-1].removeprefix("data: "))
    assert last["task_id"] == task_id
    assert last["status"] == "TASK_STATUS_SUCCEED"


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_example_keeps_its_openapi_promises(try_it: TryIt, mode: str) -> None:
    """Schemathesis, all checks: no 5xx, no undocumented status or body, valid data accepted."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{try_it.app_port}/openapi.json")
    cases = schema.as_strategy(GenerationMode(mode))

    @given(cases)
    @settings(
        max_examples=50,
        deadline=None,  # a busy machine is no reason to fail
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def holds(case: Case[Any]) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {try_it.token}"})

    holds()
