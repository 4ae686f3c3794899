"""examples/fastapi_app.py as two worker processes sharing HAILUO_COORDINATION.

Two uvicorn processes of the example, on two ports, coordinate through one PostgreSQL
schema. A job is submitted through worker A with its webhook pointed at worker B; the fake
gateway delivers the webhook to B, and the event stream that A serves ends with ``done``.
The apps poll at real-life pace (no ``HAILUO_TIME_SCALE``), so on a fake running 20 times
faster only the webhook, crossing from B to A through PostgreSQL, can end A's watch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.abc import Process
from pgutil import DSN

from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SCALE = 0.05
START_TIMEOUT = 60.0
APP_TOKEN = "two-workers-app-token"


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def worker(port: int, env: dict[str, str], log: Path) -> AsyncIterator[Process]:
    """One uvicorn process of the example on ``port``; SIGTERM and wait on exit."""
    command = [
        sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = await anyio.open_process(command, cwd=REPO, env=env, stdout=out, stderr=out)
        try:
            with anyio.fail_after(START_TIMEOUT):
                while True:
                    assert process.returncode is None, log.read_text()
                    try:
                        await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.1)
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.aclose()


def app_env(server: FakeHailuoServer, coordination: str, webhook_url: str) -> dict[str, str]:
    """A worker's environment: the fake, the shared database, the webhook and its secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILUO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        HAILUO_API_KEY=server.api_key,
        HAILUO_BASE_URL=server.url,
        HAILUO_COORDINATION=coordination,
        HAILUO_WEBHOOK_URL=webhook_url,
        # Every worker behind the webhook URL must know its secret (docs: FastAPI recipe).
        HAILUO_WEBHOOK_SECRET="shared-secret-of-the-two-workers",
        VIDEO_APP_TOKEN=APP_TOKEN,
    )
    return env


async def test_webhook_on_worker_b_ends_the_stream_on_worker_a(
    pg_schema: str, tmp_path: Path
) -> None:
    """Submit through A, the webhook lands on B, A's event stream ends done: one GET confirms."""
    port_a, port_b = free_port(), free_port()
    hook_b = f"http://127.0.0.1:{port_b}/hailuo/webhook"
    coordination = f"{DSN}?schema={pg_schema}"
    async with FakeHailuoServer(time_scale=SCALE, seed=3, job_duration=Fixed(100)) as server:
        env = app_env(server, coordination, hook_b)
        async with (
            worker(port_a, env, tmp_path / "a.log"),
            worker(port_b, env, tmp_path / "b.log"),
            aiohttp.ClientSession(
                f"http://127.0.0.1:{port_a}", headers={"Authorization": f"Bearer {APP_TOKEN}"}
            ) as worker_a,
        ):
            async with worker_a.post("/videos", json={"prompt": "a fox in the snow"}) as answer:
                assert answer.status == 202, await answer.text()
                task_id = (await answer.json())["task_id"]
            kinds: list[str] = []
            last: dict[str, object] = {}
            with anyio.move_on_after(60) as waiting:
                async with worker_a.get(f"/videos/{task_id}/events") as stream:
                    assert stream.status == 200
                    async for raw in stream.content:
                        line = raw.decode().strip()
                        if line.startswith("event: "):
                            kinds.append(line.removeprefix("event: "))
                        elif line.startswith("data: "):
                            last = json.loads(line.removeprefix("data: "))
        stats = server.stats.snapshot()
    logs = "\n".join(path.read_text() for path in sorted(tmp_path.glob("*.log")))
    # Which hop lost the end (the webhook to B, B's NOTIFY, A's confirmation) is in the logs.
    assert not waiting.cancelled_caught, f"A's stream did not end: {kinds}, {stats}\n{logs}"
    assert kinds[0] == "status", logs  # the stream opened before the job ended
    assert kinds[-1] == "done", logs
    assert last["task_id"] == task_id
    assert last["status"] == "succeeded"
    assert stats.webhooks_sent == 1  # to B: A never received a webhook
    # A confirmed B's webhook with one GET (its stream answers from its watcher); B fetched
    # nothing.
    assert stats.polls_by_task == {task_id: 1}
