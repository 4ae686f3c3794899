"""A process that publishes one webhook event on an account's push bus, then exits.

Usage: ``python push_child.py DSN ACCOUNT TASK_ID``.
"""

from __future__ import annotations

import sys

import anyio

from hailuo_async import TaskStatus
from hailuo_async.postgres import PostgresPushBus, PushNotice


async def _ignore(_notice: PushNotice) -> None:
    return None


async def main(dsn: str, account: str, task_id: str) -> None:
    """Publish that ``task_id`` claims success."""
    async with PostgresPushBus(dsn, account=account, on_notice=_ignore) as bus:
        await bus.publish(PushNotice(task_id=task_id, status=TaskStatus.SUCCEED))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
