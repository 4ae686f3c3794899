"""The fault soak's machinery: two faulty fakes, one batch each, and what they both saw."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import anyio.lowlevel
import attrs
import pytest
from aiohttp import web

from hailuo_async import (
    HailuoClient,
    JobOutcome,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    VideoRequest,
)
from hailuo_async.testing import FakeHailuoServer, Faults, StorageFaults, Uniform
from hailuo_async.testing import _service as fake_service_module
from hailuo_async.testing._faults import draw_fault

from .support import LogCapture, capture_logs, client_tasks, sockets_to, wait_for_no_sockets

__all__ = ["SCALE", "SoakRun", "run_soak"]

SCALE = 0.002
"""Real seconds per service second: 30-180 s jobs take 60-360 ms."""
FAULTS = Faults(
    server_error=0.04,
    rate_limit=0.04,
    reset=0.03,
    slow=0.03,
    malformed_json=0.03,
    accepted_but_lost=0.03,
    # Longer than the client's timeout: a slow answer is a timeout, after the task was made.
    slow_seconds=6.0,
)
"""20% of API requests get a fault, spread over every kind the fake has."""
STORAGE_FAULTS = StorageFaults(truncate=0.03, wrong_content_length=0.03)
# Ample for a fault-free answer on a busy machine (they took up to 1.3 s under load): only
# the injected slow answers may time out, or the lost-id accounting stops adding up.
TIMEOUT = Timeouts(total=5.0, connect=5.0)
RETRY = RetryPolicy(initial_delay=0.005, max_delay=0.05, max_retry_after=0.05, not_found_grace=1.0)
MAX_RETRIES = 8
ACTIVE_PER_SHARD = 40
FAILURE_RATE = 0.05

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UnknownSubmissionPolicy = Literal["raise", "resubmit"]


@attrs.define
class Shard:
    """One fake and the batch run against it."""

    server: FakeHailuoServer
    download_to: Path
    retry_after: bool
    storage_headers: list[list[tuple[str, str]]] = attrs.Factory(list)
    outcomes: list[JobOutcome] = attrs.Factory(list)
    client_reprs: list[str] = attrs.Factory(list)
    sockets_after_close: int = -1


@attrs.define
class SoakRun:
    """Everything one soak run leaves to be checked."""

    policy: str
    jobs: int
    shards: list[Shard]
    logs: LogCapture
    faults: Counter[tuple[str, str]]
    seconds: float
    peak_sockets: int
    leftover_tasks: int

    @property
    def outcomes(self) -> list[JobOutcome]:
        """Every outcome of every shard."""
        return [outcome for shard in self.shards for outcome in shard.outcomes]


def tally_faults(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """Count the faults the fakes inject, by method and kind (the fake counts by kind only)."""
    tally: Counter[tuple[str, str]] = Counter()

    def counting_draw(rng: random.Random, faults: Faults, *, submit: bool) -> str | None:
        kind = draw_fault(rng, faults, submit=submit)
        if kind is not None:
            tally["POST" if submit else "GET", kind] += 1
        return kind

    monkeypatch.setattr(fake_service_module, "draw_fault", counting_draw)
    return tally


def record_storage_headers(server: FakeHailuoServer, into: list[list[tuple[str, str]]]) -> None:
    """Keep the headers of every request to the fake's storage host (call before start)."""
    store = server._storage
    handle: _Handler = store.handle

    async def recording(request: web.Request) -> web.StreamResponse:
        into.append(list(request.headers.items()))
        return await handle(request)

    store.handle = recording  # type: ignore[method-assign]


def request_for(shard: int, index: int) -> VideoRequest:
    """A distinct request per job, so the fake's identical-body counter names each one."""
    return VideoRequest(
        prompt=f"soak shard {shard} job {index}: a lighthouse in a storm, seen from a boat",
        duration=10 if index % 5 == 0 else 6,
        resolution="1080P" if index % 3 == 0 and index % 5 else "768P",
    )


@asynccontextmanager
async def _shard(
    stack: AsyncExitStack, key: str, tmp: Path, *, number: int, retry_after: bool, seed: int
) -> AsyncIterator[Shard]:
    server = FakeHailuoServer(
        api_key=key,
        time_scale=SCALE,
        seed=seed,
        job_duration=Uniform(30, 180),
        failure_rate=FAILURE_RATE,
        retry_after=retry_after,
        faults=FAULTS,
        storage_faults=STORAGE_FAULTS,
    )
    shard = Shard(server, tmp / f"videos-{number}", retry_after)
    record_storage_headers(server, shard.storage_headers)
    await stack.enter_async_context(server)
    yield shard


async def _run_batch(
    shard: Shard, number: int, jobs: int, key: str, policy: UnknownSubmissionPolicy
) -> None:
    server = shard.server
    client = HailuoClient(
        key,
        base_url=server.url,
        timeout=TIMEOUT,
        max_retries=MAX_RETRIES,
        retry_policy=RETRY,
        poll_policy=PollPolicy().scaled(SCALE),
        limits=Limits(rate_window=60 * SCALE),
        on_unknown_submission=policy,
    )
    async with client:
        shard.client_reprs.append(repr(client))
        requests = (request_for(number, index) for index in range(jobs))
        async with client.generate_many(
            requests, max_active_jobs=ACTIVE_PER_SHARD, download_to=shard.download_to
        ) as outcomes:
            async for outcome in outcomes:
                shard.outcomes.append(outcome)
    shard.client_reprs.append(repr(client))
    shard.sockets_after_close = await wait_for_no_sockets(server.url, server.storage_url)


async def run_soak(
    *,
    jobs: int,
    policy: UnknownSubmissionPolicy,
    key: str,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> SoakRun:
    """Run ``jobs`` jobs, half against a fake that sends Retry-After on 429 and half not."""
    faults = tally_faults(monkeypatch)
    sizes = [jobs // 2, jobs - jobs // 2]
    peak = 0
    before = client_tasks()
    with capture_logs() as logs:
        async with AsyncExitStack() as stack:
            shards = [
                await stack.enter_async_context(
                    _shard(stack, key, tmp, number=n, retry_after=n == 0, seed=seed + n)
                )
                for n in range(2)
            ]
            urls = [url for s in shards for url in (s.server.url, s.server.storage_url)]
            started = time.monotonic()
            async with anyio.create_task_group() as sampling:

                async def sample_sockets() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, sockets_to(*urls))
                        await anyio.sleep(0.05)

                sampling.start_soon(sample_sockets)
                async with anyio.create_task_group() as batches:
                    for number, (shard, size) in enumerate(zip(shards, sizes, strict=True)):
                        batches.start_soon(_run_batch, shard, number, size, key, policy)
                sampling.cancel_scope.cancel()
            seconds = time.monotonic() - started
        # The fakes are closed too: any task left now is the client's (or theirs) and leaked.
        await anyio.lowlevel.checkpoint()
        leftover = len(client_tasks() - before)
    return SoakRun(policy, jobs, shards, logs, faults, seconds, peak, leftover)
