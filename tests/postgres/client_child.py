"""A worker process with its own client: runs a small batch, or works a shared one.

Usage: ``python client_child.py SETTINGS_JSON``. Prints ``{"ready": true}`` once its client
is open, waits for a line on stdin (so every worker starts together), runs its batch and
prints one JSON report. With ``"dsn"`` set the client coordinates through PostgreSQL;
without, it keeps its limits in memory, as an uncoordinated worker does.

With ``"journal"`` set it works the batch ``"batch"`` of that shared journal instead, through
``client.work`` (at once, no go to wait for): one JSON line per outcome it finished
(``{"key": ..., "ok": ...}``), then a report of what its coordination saw.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.to_thread

from hailuo_async import (
    Coordination,
    HailuoClient,
    JobOutcome,
    Limits,
    PollPolicy,
    RetryPolicy,
    VideoRequest,
)


def client_from(settings: dict[str, Any]) -> HailuoClient:
    """The worker's client: paced to the fake's time scale, coordinated when ``dsn`` is set."""
    scale = settings["scale"]
    coordination = None
    if settings.get("dsn"):
        coordination = Coordination(settings["dsn"], schema=settings["schema"])
    return HailuoClient(
        settings["api_key"],
        base_url=settings["url"],
        poll_policy=PollPolicy().scaled(scale),
        retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.2),
        limits=Limits(
            rate_window=60 * scale,
            requests_per_minute=settings.get("rpm"),
            max_active_jobs=settings.get("cap"),
        ),
        coordination=coordination,
    )


async def work(settings: dict[str, Any]) -> None:
    """Work the shared batch, print each outcome, then the coordination's counters."""
    client = client_from(settings)
    async with client:
        stream = client.work(
            settings["journal"],
            settings["batch"],
            worker_id=settings["name"],
            lease=settings["lease"],
        )
        async with stream as outcomes:
            async for outcome in outcomes:
                print(json.dumps({"key": outcome.key, "ok": outcome.ok}), flush=True)
        coordinator = client._coordinator
        report: dict[str, Any] = {"done": True}
        if coordinator is not None:
            report["bus_reconnects"] = coordinator.bus.reconnects
            report["gap_polls"] = coordinator.gap_polls
    print(json.dumps(report), flush=True)


async def main(settings: dict[str, Any]) -> None:
    """Open the client, wait for the go, run the batch, report."""
    if settings.get("journal"):
        await work(settings)
        return
    client = client_from(settings)
    async with client:
        print(json.dumps({"ready": True}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        requests = [
            VideoRequest(prompt=f"{settings['name']} job {index}")
            for index in range(settings["jobs"])
        ]
        outcomes: list[JobOutcome] = []
        async with client.generate_many(requests) as stream:
            outcomes.extend([outcome async for outcome in stream])
        coordinator = client._coordinator
        round_trips = 0 if coordinator is None else coordinator.limits.round_trips
    done = sum(1 for outcome in outcomes if outcome.ok)
    print(json.dumps({"done": done, "round_trips": round_trips}), flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
