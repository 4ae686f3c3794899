"""Webhook events carried between processes by LISTEN/NOTIFY, and the listener's reconnection."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from pgutil import DSN, admin, require_postgres

from hailuo_async import HailuoClient, PollPolicy, RetryPolicy, TaskStatus, VideoRequest
from hailuo_async.postgres import PostgresPushBus, PushNotice
from hailuo_async.testing import FakeHailuoServer, Fixed
from hailuo_async.webhooks import WEBHOOK_EVENT_TYPE, WebhookEvent, parse_webhook

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("push_child.py")


class Inbox:
    """Collects the notices a bus hands over, and counts the gaps it reports."""

    def __init__(self) -> None:
        self.notices: list[PushNotice] = []
        self.gaps = 0
        self._arrived = anyio.Event()

    async def on_notice(self, notice: PushNotice) -> None:
        """Keep the notice."""
        self.notices.append(notice)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def on_gap(self) -> None:
        """Count the gap."""
        self.gaps += 1
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, count: int, *, gaps: int = 0, timeout: float = 30) -> None:
        """Wait until ``count`` notices and ``gaps`` gaps have arrived."""
        with anyio.fail_after(timeout):
            while len(self.notices) < count or self.gaps < gaps:
                await self._arrived.wait()


@pytest.fixture(autouse=True)
def _postgres() -> None:
    """The bus needs no schema, only a server: skip loudly (or fail, in CI) without one."""
    require_postgres()


def _account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def _claim(task_id: str, status: str = "TASK_STATUS_SUCCEED") -> WebhookEvent:
    return parse_webhook(
        {
            "event_type": WEBHOOK_EVENT_TYPE,
            "payload": {"task": {"task_id": task_id, "status": status}},
        }
    )


async def test_an_event_published_by_one_bus_reaches_the_others() -> None:
    """A claim published on one connection reaches every other bus of the account, not itself."""
    account = _account()
    watcher, receiver, stranger = Inbox(), Inbox(), Inbox()
    async with (
        PostgresPushBus(DSN, account=account, on_notice=watcher.on_notice) as watching,
        PostgresPushBus(DSN, account=account, on_notice=receiver.on_notice) as receiving,
        PostgresPushBus(DSN, account=_account(), on_notice=stranger.on_notice),
    ):
        assert watching.channel == receiving.channel
        assert not await receiving.publish(_claim("t-1", "TASK_STATUS_PROCESSING"))  # claims no end
        assert not await receiving.publish(WebhookEvent(event_type="PING"))
        assert await receiving.publish(_claim("t-1"))
        await watcher.wait_for(1)
        # A second publication after the first proves nothing else was queued before it.
        assert await receiving.publish(_claim("t-2", "TASK_STATUS_FAILED"))
        await watcher.wait_for(2)
    assert [(n.task_id, n.status) for n in watcher.notices] == [
        ("t-1", TaskStatus.SUCCEED),
        ("t-2", TaskStatus.FAILED),
    ]
    assert receiver.notices == []  # its own events are not echoed back
    assert stranger.notices == []  # another account's channel is another channel


async def test_an_event_from_another_process_arrives() -> None:
    """A claim published by a separate process reaches the bus in this one."""
    account = _account()
    inbox = Inbox()
    async with PostgresPushBus(DSN, account=account, on_notice=inbox.on_notice):
        child = await anyio.run_process(
            [sys.executable, str(CHILD), DSN, account, "task-from-afar"], check=False
        )
        assert child.returncode == 0, child.stderr.decode()
        await inbox.wait_for(1)
    assert inbox.notices[0].task_id == "task-from-afar"
    assert inbox.notices[0].status is TaskStatus.SUCCEED


async def test_the_listener_reconnects_and_reports_the_gap() -> None:
    """After its backend is terminated the listener listens again and asks for one poll."""
    account = _account()
    inbox = Inbox()
    async with (
        PostgresPushBus(
            DSN,
            account=account,
            on_notice=inbox.on_notice,
            on_gap=inbox.on_gap,
            health_check_interval=0.5,
        ) as listening,
        PostgresPushBus(DSN, account=account, on_notice=Inbox().on_notice) as sending,
    ):
        old_pid = listening.backend_pid
        with admin() as connection:
            row = connection.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone()
        assert row == (True,)
        await inbox.wait_for(0, gaps=1)
        assert listening.reconnects == 1
        assert listening.backend_pid not in (None, old_pid)
        await sending.publish(_claim("after-the-gap"))
        await inbox.wait_for(1)
    assert [n.task_id for n in inbox.notices] == ["after-the-gap"]


async def test_malformed_notices_on_the_channel_are_ignored() -> None:
    """Foreign payloads on the account's channel are dropped; real ones still arrive."""
    account = _account()
    inbox = Inbox()
    async with (
        PostgresPushBus(DSN, account=account, on_notice=inbox.on_notice) as listening,
        PostgresPushBus(DSN, account=account, on_notice=Inbox().on_notice) as sending,
    ):
        with admin() as connection:
            for payload in ["not json", "[1]", '{"t": 5, "s": "x", "from": "y"}', '{"t": ""}']:
                connection.execute("SELECT pg_notify(%s, %s)", (listening.channel, payload))
        await sending.publish(_claim("real"))
        await inbox.wait_for(1)
    assert [n.task_id for n in inbox.notices] == ["real"]


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 30 service seconds (0.3 s)."""
    async with FakeHailuoServer(time_scale=0.01, seed=7, job_duration=Fixed(30)) as fake:
        yield fake


async def test_a_webhook_received_by_one_client_ends_another_clients_watch(
    server: FakeHailuoServer,
) -> None:
    """Client B receives the webhook, A's watch ends after A's own single confirming GET."""
    account = _account()

    def client() -> HailuoClient:
        return HailuoClient(
            server.api_key,
            base_url=server.url,
            poll_policy=PollPolicy(),  # push expected: backstop polls far off
            retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05),
        )

    confirmed = []
    async with client() as watching_client, client() as receiving_client:

        async def deliver(notice: PushNotice) -> None:
            confirmed.append(await watching_client.handle_webhook(notice.as_event()))

        async with (
            PostgresPushBus(DSN, account=account, on_notice=deliver),
            PostgresPushBus(DSN, account=account, on_notice=Inbox().on_notice) as bus_b,
        ):
            task_id = await watching_client.submit(VideoRequest(prompt="a quiet pond"))
            async with watching_client.watch() as watcher:
                watcher.add(task_id, submitted_at=time.monotonic(), pushed=True)
                finished = server.tasks[task_id].finished_at
                await anyio.sleep(max(0.0, finished - time.monotonic()) + 0.01)
                # B is not watching: it would ignore the event; it publishes it instead.
                event = _claim(task_id)
                assert await receiving_client.handle_webhook(event) is None
                assert await bus_b.publish(event)
                with anyio.fail_after(30):
                    results = [result async for result in watcher]
    assert len(results) == 1
    assert results[0].ok
    assert confirmed == results
    assert server.stats.polls_by_task == {task_id: 1}
