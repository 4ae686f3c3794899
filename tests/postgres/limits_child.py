"""A worker process for the shared-limits tests: hammers one account's shared limits.

Usage: ``python limits_child.py SETTINGS_JSON``. Prints one JSON object on stdout when done.
Modes: ``rate`` (take request turns, report their start times on the database's clock),
``active`` (take, hold and give back active-job places, report the peak account total),
``hold`` (take places, say so, then sleep until killed).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.to_thread

from hailuo_async.postgres import SharedAccountLimits


async def _rate(limits: SharedAccountLimits, settings: dict[str, Any]) -> dict[str, Any]:
    starts: list[float] = []

    async def one_task(count: int) -> None:
        for _ in range(count):
            start = await limits.requests.wait_turn("poll")
            assert start is not None
            starts.append(start.timestamp())

    async with anyio.create_task_group() as group:
        for _ in range(settings["tasks"]):
            group.start_soon(one_task, settings["per_task"])
    return {"starts": starts}


async def _active(limits: SharedAccountLimits, settings: dict[str, Any]) -> dict[str, Any]:
    granted = 0

    async def one_task() -> None:
        nonlocal granted
        for _ in range(settings["per_task"]):
            await limits.active_jobs.acquire()
            granted += 1
            limits.active_jobs.on_submitted()
            await anyio.sleep(settings["hold"])
            limits.active_jobs.release(submitted=True)
            limits.active_jobs.on_completed()

    async with anyio.create_task_group() as group:
        for _ in range(settings["tasks"]):
            group.start_soon(one_task)
    return {"granted": granted, "peak_total": limits.active_jobs.peak_total}


async def main(settings: dict[str, Any]) -> None:
    """Join the account's shared limits and run the requested mode."""
    async with SharedAccountLimits(
        settings["dsn"],
        account=settings["account"],
        schema=settings["schema"],
        requests_per_minute=settings.get("rpm"),
        rate_window=settings.get("window", 60.0),
        max_active_jobs=settings.get("cap"),
        lease=settings.get("lease", 30.0),
        wait_poll_interval=0.05,
    ) as limits:
        if settings["mode"] == "hold":
            for _ in range(settings["places"]):
                await limits.active_jobs.acquire()
            print(json.dumps({"holder": limits.holder}), flush=True)
            await anyio.sleep_forever()
        print(json.dumps({"ready": limits.holder}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # every worker starts together
        if settings["mode"] == "rate":
            report = await _rate(limits, settings)
        else:
            report = await _active(limits, settings)
        report["round_trips"] = limits.round_trips
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
