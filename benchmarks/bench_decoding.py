"""Scenario 6, decoding: what reading a task-result answer into a TaskResult costs.

``json.loads`` + ``hailuo_async._decoding.decode_task_result`` (the cattrs converter, lenient
hooks, the TaskResult and Video objects) against ``json.loads`` alone, on the same bytes: a
real answer of the fake for a succeeded task (with a video) and for one still processing.
Best of 7 timeit repeats each.
"""

from __future__ import annotations

import asyncio
import json
import timeit
from datetime import datetime, timezone
from typing import Any

from benchmarks._common import ScenarioResult, markdown_table, timed

NAME = "decoding"
TITLE = "6. Decoding: cattrs structuring vs json.loads"


async def _payloads() -> dict[str, tuple[str, bytes]]:
    """Raw task-result bodies from a fake: one processing, one succeeded."""
    import aiohttp

    from hailuo_async.testing import FakeHailuoServer, Fixed

    bodies: dict[str, tuple[str, bytes]] = {}
    async with (
        FakeHailuoServer(time_scale=0.01, seed=2, job_duration=Fixed(30.0)) as server,
        aiohttp.ClientSession() as session,
    ):
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with session.post(
            server.url + "/v3/async/minimax-hailuo-02",
            json={"prompt": "a slow pan across a snowy mountain ridge at sunrise"},
            headers=headers,
        ) as response:
            task_id = (await response.json())["task_id"]
        url = server.url + "/v3/async/task-result"
        while True:
            async with session.get(url, params={"task_id": task_id}, headers=headers) as response:
                raw = await response.read()
            status = json.loads(raw)["task"]["status"]
            if status == "TASK_STATUS_PROCESSING" and "processing" not in bodies:
                bodies["processing"] = (task_id, raw)
            if status == "TASK_STATUS_SUCCEED":
                bodies["succeeded"] = (task_id, raw)
                return bodies
            await asyncio.sleep(0.02)


def _best(statement: Any, number: int) -> float:
    """Seconds per call: the best of 7 repeats of ``number`` calls."""
    return min(timeit.repeat(statement, number=number, repeat=7)) / number


def run(*, quick: bool = False) -> ScenarioResult:
    """Time both on each payload."""
    from hailuo_async._decoding import decode_task_result

    number = 2_000 if quick else 20_000
    received_at = datetime.now(timezone.utc)
    figures: dict[str, Any] = {"calls_per_repeat": number}
    rows: list[list[object]] = []
    with timed() as elapsed:
        payloads = asyncio.run(_payloads())
        for name, (task_id, raw) in payloads.items():
            decode_task_result(json.loads(raw), task_id=task_id, received_at=received_at)

            def loads_only(raw: bytes = raw) -> object:
                return json.loads(raw)

            def loads_and_structure(raw: bytes = raw, task_id: str = task_id) -> object:
                return decode_task_result(json.loads(raw), task_id=task_id, received_at=received_at)

            loads = _best(loads_only, number)
            full = _best(loads_and_structure, number)
            figures[f"{name}_bytes"] = len(raw)
            figures[f"{name}_json_loads_us"] = loads * 1e6
            figures[f"{name}_loads_and_decode_us"] = full * 1e6
            figures[f"{name}_decode_vs_json_loads_ratio"] = full / loads
            rows.append(
                [name, len(raw), loads * 1e6, full * 1e6, (full - loads) * 1e6, full / loads]
            )
    figures["decode_vs_json_loads_ratio"] = figures["succeeded_decode_vs_json_loads_ratio"]
    table = markdown_table(
        [
            "payload",
            "bytes",
            "json.loads µs",
            "json.loads + decode_task_result µs",
            "structuring µs",
            "ratio",
        ],
        rows,
    )
    notes = [
        "ratio = (json.loads + decode_task_result) / json.loads on the same bytes; headline "
        "decode_vs_json_loads_ratio (succeeded payload): "
        f"{figures['decode_vs_json_loads_ratio']:.1f}."
    ]
    return ScenarioResult(NAME, TITLE, table, figures, notes, elapsed())


if __name__ == "__main__":
    from benchmarks._common import cli

    raise SystemExit(cli("benchmarks.bench_decoding"))
