"""Every code block of README.md and of every page under docs/, run as written.

The blocks are found, not listed: a page added later is covered by itself. A ``python``,
``bash``, ``sh`` or ``console`` block runs; ``text``, ``json`` and ``sql`` blocks are
pictures and data (a tree, a diagram, a body's shape, the tables the library makes), shown,
not typed. How a block runs is said by an HTML comment on the line before it (the site
does not show it), one of:

- none: a ``python`` block is a script, run with ``python`` in a fresh folder holding the
  checkout's ``examples/``; a ``bash`` block is run there by ``bash -e``. Both see the
  variables the quick start sets (``HAILUO_API_KEY``, ``HAILUO_BASE_URL``,
  ``HAILUO_TIME_SCALE``), with the values of a ``hailuo fake-server`` started as the CLI
  page starts it, ``PORT`` (a free port, as a platform gives a service one) and
  ``PUBLIC_URL`` (how the fake reaches that port, for webhooks). A leading
  ``python3.11 -m pip install -e ".[...]" &&`` is left out: it installs this checkout,
  which the test run already has. A block that names ``videos/`` must leave MP4 files in
  it.
- ``<!-- test: run in CONTEXT -->``: a fragment, run in the context the page assumes, each
  described in :data:`CONTEXTS`.
- ``<!-- test: run with task ids for X Y -->``: run as above, each placeholder (``9f0c...``,
  ``TASK_ID...``) replaced by the id of a job submitted to the fake for it.
- ``<!-- test: serves -->``: it starts a server: started (each ``--port N`` made ``--port
  0``, a free one), seen ready, stopped.
- ``<!-- test: covered by FILE -->``: each of its commands is one of FILE's, whose steps
  another test runs (the test checks they are the same, so neither drifts).
- ``<!-- test: not run (KIND): REASON -->``: it cannot run here, and why: the test checks
  the kind's claim (:data:`NOT_RUN`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from pgutil import DSN, admin, require_postgres
from yarl import URL

from hailuo_async import HailuoClient, TaskStatus, VideoRequest
from hailuo_async.testing import FakeHailuoServer
from hailuo_async.webhooks import WebhookEvent

BASH = shutil.which("bash") or "/bin/bash"
REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# A fenced block, possibly indented (in a content tab), with the line before it.
FENCE = re.compile(
    r"(?:^(?P<before>[^\n]*)\n)?"
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.M | re.S,
)
MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<what>.*?)\s*-->\s*$")
RUN = ("python", "bash", "sh", "console")
SHOWN = ("", "text", "json", "sql")
INSTALL = re.compile(r'^python3\.11 -m pip install -e "\.(\[[\w,]+\])?" && ')
# Generous: a busy 2-core machine, hundreds of simulated jobs.
RUN_TIMEOUT = 300
# A URL or address that is not on this machine.
ELSEWHERE = re.compile(
    r"\b(?:https?|postgres(?:ql)?)://(?:[^@/\s\"']+@)?(?!(?:127\.0\.0\.1|localhost)\b)[\w.-]+"
)
# The kinds of block that cannot run here, each with what the block must show for it.
NOT_RUN: dict[str, Callable[[str], bool]] = {
    "installs": lambda code: "pip install" in code,
    "real-key": lambda code: "HAILUO_API_KEY=..." in code,
    "real-url": lambda code: ELSEWHERE.search(code) is not None,
    "suite": lambda code: "pytest" in code,
}


class Block:
    """One fenced block of a page, and what its marker says."""

    def __init__(self, page: Path, number: int, lang: str, code: str, marker: str) -> None:
        self.page = page
        self.id = f"{page.relative_to(REPO)}#{number}"
        self.lang = lang
        self.code = code
        self.marker = marker

    def __repr__(self) -> str:
        return self.id


def blocks() -> list[Block]:
    """Every fenced block of every page."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), start=1):
            marker = MARKER.match(match["before"] or "")
            code = textwrap.dedent(match["body"])
            found.append(Block(page, number, match["lang"], code, marker["what"] if marker else ""))
    return found


BLOCKS = blocks()


def _kind(block: Block) -> str:
    what = block.marker
    for prefix in ("run in ", "run with task ids for ", "covered by ", "not run ("):
        if what.startswith(prefix):
            return prefix.strip(" (")
    return what or "run"


KINDS = ("run", "run in", "run with task ids for", "serves", "covered by", "not run")


def test_every_block_is_run_or_said_why_not() -> None:
    """Each block is of a known language; each marker is one the test knows and can check."""
    for block in BLOCKS:
        assert block.lang in RUN + SHOWN, f"{block.id}: a {block.lang!r} block"
        if block.lang in SHOWN:
            assert not block.marker, f"{block.id}: a marker on a block that does not run"
            continue
        kind = _kind(block)
        assert kind in (
            "run",
            "run in",
            "run with task ids for",
            "serves",
            "covered by",
            "not run",
        ), f"{block.id}: unknown marker {block.marker!r}"
        if kind == "run in":
            context = block.marker.removeprefix("run in ")
            assert context in CONTEXTS, f"{block.id}: no context {context!r}"
        if kind == "not run":
            found = re.fullmatch(r"not run \((?P<kind>[\w-]+)\): (?P<why>.{10,})", block.marker)
            assert found, f"{block.id}: say 'not run (KIND): why' ({block.marker!r})"
            assert found["kind"] in NOT_RUN, f"{block.id}: unknown kind {found['kind']!r}"
            assert NOT_RUN[found["kind"]](block.code), f"{block.id}: not {found['kind']}"


def by_kind(*kinds: str) -> list[Block]:
    """The blocks that run, of these kinds."""
    return [block for block in BLOCKS if block.lang in RUN and _kind(block) in kinds]


# -- blocks run as they are, in a user's folder ---------------------------------------------


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def shell_env(**extra: str) -> dict[str, str]:
    """A user's shell: this venv's scripts on PATH, no HAILUO_* variables but ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILUO_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


@contextmanager
def serving(code: str, cwd: Path | None = None) -> Iterator[str]:
    """Start ``code`` (a server) with bash; the line of its banner that says it is ready
    (``export HAILUO_BASE_URL=...``); stop it (its whole process group) on leaving."""
    process = subprocess.Popen(  # noqa: S603 - a documented command, run by bash
        [BASH, "-e", "-c", code],
        cwd=cwd,
        env=shell_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield _ready(process, "export HAILUO_BASE_URL=")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.fixture(scope="module")
def fake_service() -> Iterator[dict[str, str]]:
    """`hailuo fake-server`, as the CLI page starts it; the variables its banner prints."""
    with serving("hailuo fake-server --port 0 --time-scale 0.02") as banner:
        exports = dict(word.split("=", 1) for word in banner.split()[1:])
        assert set(exports) == {"HAILUO_BASE_URL", "HAILUO_API_KEY"}
        yield {**exports, "HAILUO_TIME_SCALE": "0.02"}


def _ready(process: subprocess.Popen[str], sign: str) -> str:
    """The first line of the process's output holding ``sign``; fails if it ends first."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if sign in line:
            return line
        assert line or process.poll() is None, "the server ended before it was ready"
    pytest.fail(f"no {sign!r} in 60 s")


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A fresh folder holding the checkout's examples/, as the docs' commands assume."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def run_block(block: Block, code: str, folder: Path, env: dict[str, str]) -> None:
    """Run a python or shell block to its end in ``folder``; fail with its output if it fails."""
    if block.lang == "python":
        script = folder / "block.py"
        script.write_text(code, encoding="utf-8")
        argv = [sys.executable, str(script)]
    else:
        argv = [BASH, "-e", "-c", INSTALL.sub("", code)]
    completed = subprocess.run(  # noqa: S603 - a documented block
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    if re.search(r"\bvideos/", code):
        videos = sorted((folder / "videos").glob("*.mp4"))
        assert videos, f"no video in {folder / 'videos'}"
        assert all(video.read_bytes()[4:8] == b"ftyp" for video in videos)


@pytest.mark.parametrize("block", by_kind("run"), ids=repr)
def test_block_runs_as_written(
    block: Block, user_folder: Path, fake_service: dict[str, str]
) -> None:
    """The block runs to exit 0 in a fresh folder, against the fake service."""
    port = str(free_port())
    env = shell_env(**fake_service, PORT=port, PUBLIC_URL=f"http://127.0.0.1:{port}")
    run_block(block, block.code, user_folder, env)


@pytest.mark.parametrize("block", by_kind("run with task ids for"), ids=repr)
def test_block_runs_on_real_task_ids(
    block: Block, user_folder: Path, fake_service: dict[str, str]
) -> None:
    """The block runs with each placeholder replaced by a task id the fake knows."""
    placeholders = block.marker.removeprefix("run with task ids for ").split()
    ids = asyncio.run(_submit(fake_service, len(placeholders)))
    code = block.code
    for placeholder, task_id in zip(placeholders, ids, strict=True):
        assert placeholder in code, f"{block.id}: no {placeholder!r} in the block"
        code = code.replace(placeholder, task_id)
    run_block(block, code, user_folder, shell_env(**fake_service))


async def _submit(service: dict[str, str], count: int) -> list[str]:
    base_url, key = service["HAILUO_BASE_URL"], service["HAILUO_API_KEY"]
    async with HailuoClient(key, base_url=base_url) as client:
        return [await client.submit(VideoRequest(f"a kite, take {n}")) for n in range(count)]


@pytest.mark.parametrize("block", by_kind("serves"), ids=repr)
def test_block_serves(block: Block, user_folder: Path) -> None:
    """The block starts a server (on a free port): it gets ready, and stops when told."""
    code = re.sub(r"--port \d+", "--port 0", block.code)
    with serving(code, user_folder) as banner:
        assert "http://127.0.0.1:" in banner


@pytest.mark.parametrize("block", by_kind("covered by"), ids=repr)
def test_block_is_the_steps_another_test_runs(block: Block) -> None:
    """Each command of the block is one of the named file's, which another test runs."""
    source = REPO / block.marker.removeprefix("covered by ")
    steps = " ".join(source.read_text(encoding="utf-8").replace("\\\n", " ").split())
    commands = [" ".join(c.split()) for c in block.code.replace("\\\n", " ").splitlines()]
    commands = [command for command in commands if command and not command.startswith("#")]
    assert commands
    for command in commands:
        assert command in steps, f"{block.id}: {command!r} is not in {source.name}"


# -- fragments, run in the context their page assumes ------------------------------------------


class _Requests(list[VideoRequest]):
    """A few requests, which the pages pass as ``requests`` or call as ``requests()``."""

    def __call__(self) -> Iterator[VideoRequest]:
        return iter(self)


PRELUDE = (
    "from hailuo_async import *\nfrom hailuo_async.testing import FakeHailuoServer, Faults, Fixed\n"
)


@asynccontextmanager
async def _client_context(tmp_path: Path, *, batch: bool) -> AsyncIterator[dict[str, Any]]:
    async with FakeHailuoServer(time_scale=0.01, seed=25) as server, server.client() as client:
        requests = _Requests(VideoRequest(f"a lantern on a lake, take {n}") for n in range(3))
        names: dict[str, Any] = {
            "server": server,
            "client": client,
            "requests": requests,
            "jobs": len(requests),
        }
        if batch:
            async with client.generate_many(requests) as outcomes:
                names["task_ids"] = [outcome.task_id async for outcome in outcomes]
        else:
            names["task_ids"] = [await client.submit(request) for request in requests]
        yield names


@asynccontextmanager
async def client_names(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``client``: a HailuoClient on a fake service (in this process, time-scaled), entered;
    ``requests`` (three VideoRequests, also callable), ``task_ids`` (three submitted jobs),
    ``server`` (the fake), ``jobs`` (3); HailuoClient() reads the fake's URL and key."""
    async with _client_context(tmp_path, batch=False) as names:
        yield names


@asynccontextmanager
async def batch_names(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``client``'s names, once ``client.generate_many(requests)`` has run to its end (its
    jobs are the only ones: ``task_ids`` are theirs)."""
    async with _client_context(tmp_path, batch=True) as names:
        yield names


@asynccontextmanager
async def postgres_names(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``client``'s names, with ``url`` and ``dsn`` (a PostgreSQL database of the block's
    own; also in ``HAILUO_JOURNAL`` and ``HAILUO_COORDINATION``), ``key`` (the fake's),
    ``event`` (a webhook event for the first task id), ``deliver`` and ``poll_once``
    (callbacks that do nothing)."""
    require_postgres()
    database = f"docs_{secrets.token_hex(6)}"
    url = str(URL(DSN).with_path(f"/{database}"))
    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    os.environ["HAILUO_JOURNAL"] = os.environ["HAILUO_COORDINATION"] = url
    try:
        async with _client_context(tmp_path, batch=False) as names:

            async def nothing(*_: object) -> None:
                return None

            event = WebhookEvent(
                event_type="ASYNC_TASK_RESULT",
                task_id=names["task_ids"][0],
                status=TaskStatus.SUCCEED,
            )
            names.update(
                url=url,
                dsn=url,
                key=names["server"].api_key,
                event=event,
                deliver=nothing,
                poll_once=nothing,
            )
            yield names
    finally:
        for name in ("HAILUO_JOURNAL", "HAILUO_COORDINATION"):
            os.environ.pop(name, None)
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@asynccontextmanager
async def minimax_names(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``server``: a fake speaking MiniMax's own API, once one job has gone through it as its
    page says (submit, query until ``Success``, retrieve the file), by plain HTTP."""
    async with FakeHailuoServer(provider="minimax", time_scale=0.01, seed=27) as server:
        auth = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(server.url, headers=auth) as http:
            body = {"model": "MiniMax-Hailuo-02", "prompt": "a red fox"}
            async with http.post("/v1/video_generation", json=body) as reply:
                task_id = (await reply.json())["task_id"]
            with anyio.fail_after(RUN_TIMEOUT):
                while True:
                    query = {"task_id": task_id}
                    async with http.get("/v1/query/video_generation", params=query) as reply:
                        answer = await reply.json()
                    if answer["status"] == "Success":
                        break
                    await anyio.sleep(0.05)
            async with http.get("/v1/files/retrieve", params={"file_id": answer["file_id"]}):
                pass
        yield {"server": server}


FUNCTION_BODY: dict[str, Callable[[Path], Any]] = {
    "client": client_names,
    "batch": batch_names,
    "postgres": postgres_names,
    "minimax": minimax_names,
}
"""Contexts whose blocks run as the body of an async function, with the public names of
hailuo_async (and FakeHailuoServer, Faults, Fixed) imported, in a folder of their own."""
CONTEXTS = (*FUNCTION_BODY, "app", "pytest")
"""Every context a ``run in`` block may name (``app`` and ``pytest``: see their tests)."""


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder of the test's own, and no HAILUO_* variable of the machine's."""
    for name in list(os.environ):
        if name.startswith("HAILUO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.anyio
@pytest.mark.parametrize(
    "block",
    [b for b in by_kind("run in") if b.marker.removeprefix("run in ") in FUNCTION_BODY],
    ids=repr,
)
async def test_fragment_runs_in_its_context(
    block: Block, fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fragment runs to its end, as the body of an async function, in its context."""
    context = FUNCTION_BODY[block.marker.removeprefix("run in ")]
    async with context(fake_env) as names:
        server = names["server"]
        monkeypatch.setenv("HAILUO_API_KEY", server.api_key)
        monkeypatch.setenv("HAILUO_BASE_URL", server.url)
        source = PRELUDE + "async def block():\n" + textwrap.indent(block.code, "    ") + "\n"
        namespace = dict(names)
        exec(compile(source, block.id, "exec"), namespace)  # noqa: S102 - a documented block
        with anyio.fail_after(RUN_TIMEOUT):
            await namespace["block"]()


def _in_context(name: str) -> list[Block]:
    return [block for block in by_kind("run in") if block.marker == f"run in {name}"]


@pytest.mark.anyio
@pytest.mark.parametrize("block", _in_context("app"), ids=repr)
async def test_app_block_serves(
    block: Block, fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``app``: the block is a FastAPI module (the reader's ``open_db`` and ``settings``
    given), its client on a fake service. Its ``app`` is served by uvicorn and its routes
    used: POST /videos, GET /videos/{task_id} and the event stream, where it has them; a
    ``lifespan`` it defines is entered; a ``serve(app, sock)`` it defines serves an app."""
    from types import SimpleNamespace

    from fastapi import FastAPI

    from hailuo_async.fastapi import STATE_KEY

    async with FakeHailuoServer(time_scale=0.01, seed=26) as server:
        monkeypatch.setenv("HAILUO_API_KEY", server.api_key)
        monkeypatch.setenv("HAILUO_BASE_URL", server.url)

        @asynccontextmanager
        async def open_db() -> AsyncIterator[object]:
            yield object()

        hook = f"http://127.0.0.1:{free_port()}/hailuo/webhook"
        module = types.ModuleType("block_app")
        module.__dict__.update(open_db=open_db, settings=SimpleNamespace(hook_url=hook))
        sys.modules[module.__name__] = module
        try:
            exec(compile(block.code, block.id, "exec"), module.__dict__)  # noqa: S102
            names = module.__dict__
            with anyio.fail_after(RUN_TIMEOUT):
                if isinstance(names.get("app"), FastAPI):
                    await _use_app(names["app"])
                if "lifespan" in names:
                    async with names["lifespan"](FastAPI()) as state:
                        assert STATE_KEY in state
                if "serve" in names:
                    with _bound() as sock:
                        await names["serve"](FastAPI(), sock)
        finally:
            del sys.modules[module.__name__]
        assert {"app", "lifespan", "serve"} & set(names), f"{block.id}: nothing to run"


@contextmanager
def _bound() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


async def _use_app(app: Any) -> None:
    """Serve ``app`` with uvicorn on loopback and call the routes it has."""
    import uvicorn

    paths = set(app.openapi()["paths"])
    config = uvicorn.Config(app, lifespan="on", log_config=None, ws="none")
    server = uvicorn.Server(config)
    with _bound() as sock:
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
                await anyio.sleep(0.01)
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/openapi.json") as answer:
                        assert answer.status == 200
                    if "/videos" in paths:
                        body = {"prompt": "a paper lantern over a dark lake"}
                        async with http.post(f"{base}/videos", json=body) as answer:
                            assert answer.status == 202, await answer.text()
                            task_id = (await answer.json())["task_id"]
                        async with http.get(f"{base}/videos/{task_id}") as answer:
                            assert answer.status == 200, await answer.text()
                    if "/videos/{task_id}/events" in paths:
                        async with http.get(f"{base}/videos/{task_id}/events") as answer:
                            stream = (await answer.read()).decode()
                        kinds = re.findall(r"^event: (\w+)", stream, flags=re.M)
                        assert kinds, stream
                        assert kinds[-1] == "done", stream
            finally:
                server.should_exit = True


@pytest.mark.parametrize("block", _in_context("pytest"), ids=repr)
def test_pytest_block_passes(block: Block, tmp_path: Path) -> None:
    """``pytest``: the block is a test module; pytest (with the library's plugin) passes it."""
    (tmp_path / "test_block.py").write_text(block.code, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_block.py"],
        cwd=tmp_path,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert " passed" in completed.stdout
