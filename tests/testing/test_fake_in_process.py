"""The fake served in-process: the client's transport seam, HTTP in memory, no socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hailuo_async import (
    APIConnectionError,
    APIStatusError,
    DownloadError,
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    RetryPolicy,
    SubmissionUnknownError,
    VideoRequest,
)
from hailuo_async.extend import HTTPTransport, TCPTransport
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed, InProcessTransport, StorageFaults
from hailuo_async.testing._server import IN_PROCESS_URL

pytestmark = pytest.mark.anyio

QUICK: dict[str, Any] = {"time_scale": 0.001, "seed": 1, "job_duration": Fixed(30)}
NO_WAIT = RetryPolicy(initial_delay=0.001, max_delay=0.001)


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open or serve a TCP connection, or to look a host name up, fails the test."""

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a socket was opened, or a name looked up")

    for method in ("create_connection", "create_server", "sock_connect", "getaddrinfo"):
        monkeypatch.setattr(asyncio.BaseEventLoop, method, refused)


@pytest.mark.usefixtures("no_sockets")
async def test_a_job_is_made_polled_and_downloaded_without_a_socket(tmp_path: Path) -> None:
    """In-process, a job goes from submission to a file on disk with no port bound or dialled."""
    async with FakeHailuoServer(in_process=True, **QUICK) as server:
        assert server.url == IN_PROCESS_URL
        async with server.client() as client:
            result = await client.generate(VideoRequest("a fox in the snow"))
            path = await client.download(result, tmp_path)
    assert path.read_bytes()[4:8] == b"ftyp"
    assert server.stats.submissions_accepted == 1
    assert server.stats.storage_downloads == 1
    # The storage host is reached through the same transport, and never gets the key.
    assert server.stats.storage_authorization_headers == []


async def test_a_fake_on_ports_answers_in_memory_too() -> None:
    """A fake bound to ports can also be reached through its transport, at its usual URL."""
    async with FakeHailuoServer(**QUICK) as server:
        assert server.url.startswith("http://127.0.0.1:")
        transport = server.transport()
        async with HailuoClient(server.api_key, base_url=server.url, transport=transport) as client:
            task_id = await client.submit(VideoRequest("a fox"))
    assert server.task_ids == [task_id]


FAULTS = [
    pytest.param(Faults(reset=1.0), SubmissionUnknownError, id="reset"),
    pytest.param(Faults(malformed_json=1.0), SubmissionUnknownError, id="malformed-json"),
    pytest.param(Faults(server_error=1.0), APIStatusError, id="server-error"),
    pytest.param(Faults(accepted_but_lost=1.0), SubmissionUnknownError, id="accepted-but-lost"),
]


@pytest.mark.parametrize(("faults", "error"), FAULTS)
async def test_faults_fail_the_same_in_memory_as_over_sockets(
    faults: Faults, error: type[HailuoError]
) -> None:
    """Each injected fault gives the same error whether the fake is on ports or in-process."""
    messages = []
    for in_process in (False, True):
        async with FakeHailuoServer(in_process=in_process, faults=faults, **QUICK) as server:
            async with server.client(max_retries=0) as client:
                with pytest.raises(error) as info:
                    await client.submit(VideoRequest("a fox"))
        messages.append(str(info.value).replace(server.url, "URL"))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    "storage",
    [
        pytest.param(StorageFaults(truncate=1.0), id="truncate"),
        pytest.param(StorageFaults(wrong_content_length=1.0), id="wrong-content-length"),
    ],
)
async def test_a_storage_host_closing_early_is_retried_in_memory(
    storage: StorageFaults, tmp_path: Path
) -> None:
    """A body cut short in-process is retried, then given up with the same error as over TCP."""
    async with FakeHailuoServer(in_process=True, storage_faults=storage, **QUICK) as server:
        async with server.client(max_retries=1, retry_policy=NO_WAIT) as client:
            result = await client.generate(VideoRequest("a fox"))
            with pytest.raises(DownloadError, match="gave up after 2 attempts") as info:
                await client.download(result, tmp_path)
    assert "bytes" in str(info.value)
    assert server.stats.storage_downloads == 2
    assert list(tmp_path.iterdir()) == []


async def test_hosts_other_than_the_fakes_are_refused() -> None:
    """The in-process transport reaches its fake alone: any other host is a refused connection."""
    async with FakeHailuoServer(in_process=True, **QUICK) as server:
        transport = server.transport()
        async with HailuoClient(
            server.api_key, base_url="https://api.example.com", transport=transport, max_retries=0
        ) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.get_task("t-1")
    assert info.value.request_sent is False
    assert "could not connect" in str(info.value)
    assert server.stats.api_requests == 0


async def test_a_closed_fake_refuses_connections() -> None:
    """Once the fake is closed, its transport refuses: nothing answers in its place."""
    async with FakeHailuoServer(in_process=True, **QUICK) as server:
        transport = server.transport()
    async with HailuoClient(
        server.api_key, base_url=server.url, transport=transport, max_retries=0
    ) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.get_task("t-1")
    assert info.value.request_sent is False


async def test_a_large_body_crosses_in_order_under_flow_control() -> None:
    """A body far larger than the reader's buffer arrives whole: reading pauses and resumes."""
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 100_000):
            await response.write(body[start : start + 100_000])
        return response

    app = web.Application()
    app.router.add_get("/big", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None
        transport = InProcessTransport({("big.invalid", 80): server})
        async with aiohttp.ClientSession(connector=transport.connector(limit=1)) as session:
            for _ in range(2):  # the second request reuses the kept-alive connection
                async with session.get("http://big.invalid/big") as response:
                    received = b"".join([chunk async for chunk in response.content.iter_any()])
                assert received == body
    finally:
        await runner.cleanup()


def test_the_transport_types_satisfy_the_protocol() -> None:
    """TCPTransport and InProcessTransport are HTTPTransports; anything else is refused by name."""
    transports: list[HTTPTransport] = [TCPTransport(), InProcessTransport({})]
    assert [type(t).__name__ for t in transports] == ["TCPTransport", "InProcessTransport"]
    with pytest.raises(InvalidRequestError, match="transport"):
        HailuoClient("key", transport=object())  # type: ignore[arg-type]
