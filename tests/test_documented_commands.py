"""The README's and the quick start's code, run as written, so the docs cannot drift.

Every fenced ``python`` and ``bash`` block of README.md and docs/quickstart.md is found here
and either run as written (in a fresh folder holding the repository's ``examples/`` and a
``prompts.txt``) or named in ``NOT_RUN`` with the reason. Blocks that need a key run against
``hailuo fake-server`` (started by the command the docs give), with ``HAILUO_BASE_URL`` and
``HAILUO_API_KEY`` set as its banner says, exactly as a user without a key would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shell a user types the documented commands into.
BASH = shutil.which("bash") or "/bin/bash"
REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/quickstart.md")
# A fenced block, possibly indented (inside a content tab): its indent, language and body.
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
# Blocks that are not run, each with the reason (the test fails when one disappears).
NOT_RUN = {
    'python3.11 -m pip install -e ".[test]" && python3.11 -m pytest': (
        "the test suite itself: CI (.ci/run) runs this very command"
    ),
    "export HAILUO_API_KEY=...": "sets the user's own key; the runs below set a fake's",
    "export HAILUO_PROVIDER=minimax": (
        "chooses MiniMax's API for a user's own key; the MiniMax tabs run against the fake's"
        " MiniMax dialect as written"
    ),
    'python3.11 -m pip install -e ".[cli]"': (
        "installs this checkout, as the test run already has; a fresh clone is tried by hand"
    ),
}
INSTALL = 'python3.11 -m pip install -e ".[cli]" && '
# Generous: a busy 2-core machine, hundreds of simulated jobs.
RUN_TIMEOUT = 300


def documented_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every python and bash block of the documents."""
    blocks = []
    for name in DOCUMENTS:
        text = (REPO / name).read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), start=1):
            lang = match["lang"]
            if lang not in ("python", "bash"):
                continue
            code = textwrap.dedent(match["body"])
            blocks.append((f"{name}#{number}", lang, code))
    return blocks


BLOCKS = documented_blocks()


def shell_env(**extra: str) -> dict[str, str]:
    """A user's shell: this venv's scripts on PATH, no HAILUO_* variables but ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILUO_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.fixture(scope="module")
def fake_service() -> Iterator[dict[str, str]]:
    """`hailuo fake-server`, as the CLI page starts it; the variables its banner prints."""
    process = subprocess.Popen(  # noqa: S603 - our own console script, run by bash
        [BASH, "-c", "hailuo fake-server --port 0 --time-scale 0.02"],
        env=shell_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        exports = ""
        deadline = time.monotonic() + 60
        while not exports.startswith("export ") and time.monotonic() < deadline:
            exports = process.stdout.readline()
            assert exports or process.poll() is None, "the fake server did not start"
        assert exports.startswith("export "), exports
        variables = dict(word.split("=", 1) for word in exports.split()[1:])
        assert set(variables) == {"HAILUO_BASE_URL", "HAILUO_API_KEY"}
        yield variables
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A fresh folder with the repository's examples/ and a prompts.txt, as the docs assume."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copy(REPO / "examples" / "prompts.txt", tmp_path / "prompts.txt")
    return tmp_path


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a documented command to its end, failing with its output if it fails."""
    completed = subprocess.run(  # noqa: S603 - a documented command
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def assert_videos(folder: Path) -> int:
    """The folder holds MP4 files (and only complete ones); how many."""
    videos = sorted(folder.glob("*.mp4"))
    assert videos, f"no video in {folder}"
    for video in videos:
        assert video.read_bytes()[4:8] == b"ftyp", video
    return len(videos)


def needs_key(code: str) -> bool:
    """True when the block talks to the real service (no fake of its own, no --simulate)."""
    return "FakeHailuoServer" not in code and "--simulate" not in code


def test_every_block_is_run_or_excused() -> None:
    """Each excuse still names a block of the documents, so none excuses a vanished one."""
    codes = {code.strip() for _, _, code in BLOCKS}
    for excused in NOT_RUN:
        assert excused in codes, excused
    assert any(code.startswith(INSTALL) for code in codes)


RUNNABLE = [block for block in BLOCKS if block[2].strip() not in NOT_RUN]


@pytest.mark.parametrize(("where", "lang", "code"), RUNNABLE, ids=[b[0] for b in RUNNABLE])
def test_documented_block_runs_as_written(
    where: str, lang: str, code: str, user_folder: Path, fake_service: dict[str, str]
) -> None:
    """The block runs to exit 0 in a fresh folder and leaves real MP4 files in videos/."""
    env = shell_env()
    if needs_key(code):
        # What the quick start says to set, with the fake's values; the CLI also reads the
        # documented HAILUO_TIME_SCALE and polls at the fake's pace.
        env = shell_env(**fake_service, HAILUO_TIME_SCALE="0.02")
    if lang == "python":
        script = user_folder / "example.py"
        script.write_text(code, encoding="utf-8")
        run([sys.executable, str(script)], user_folder, env)
    else:
        # The README's main command installs this checkout first: already done here.
        shell = code.removeprefix(INSTALL)
        run([BASH, "-e", "-c", shell], user_folder, env)
    assert_videos(user_folder / "videos")
