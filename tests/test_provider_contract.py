"""One contract, both providers: the same client calls against the fake in each dialect, over
real sockets, keep the same promises. Each test asserts on what the fake's counters prove.

The last tests are MiniMax's own codes (1026, 1027, 1008, the rate limits' burst).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from clientutil import make_client, serve_app

from hailuo_async import (
    AuthenticationError,
    ContentPolicyError,
    HailuoClient,
    InsufficientBalanceError,
    InvalidRequestError,
    JobOutcome,
    NotFoundError,
    TaskFailedError,
    TaskStatus,
    VideoRequest,
)
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Faults, Fixed, Uniform, sample_video
from hailuo_async.webhooks import WebhookSecret, aiohttp_handler

pytestmark = pytest.mark.anyio

SCALE = 0.01
# The service's word for a finished job, in each dialect.
SUCCESS = {"gateway": "TASK_STATUS_SUCCEED", "minimax": "Success"}
# A request each provider refuses (and the field it names), and one the other takes.
REFUSED = {
    "gateway": (VideoRequest("a fox", model="MiniMax-Hailuo-2.3"), "model"),
    "minimax": (VideoRequest("a fox", resolution="512P"), "resolution"),
}


@pytest.fixture(params=["gateway", "minimax"])
def provider(request: pytest.FixtureRequest) -> str:
    """Each test runs against both dialects."""
    name: str = request.param
    return name


def fake(provider: str, **knobs: Any) -> FakeHailuoServer:
    """The fake in ``provider``'s dialect, its jobs 20-40 service seconds."""
    settings: dict[str, Any] = {"seed": 3, "job_duration": Uniform(20, 40), **knobs}
    return FakeHailuoServer(time_scale=SCALE, provider=provider, **settings)


def requests_made(server: FakeHailuoServer) -> int:
    """Every request the API answered: submissions, polls (queries) and retrieves."""
    stats = server.stats
    return stats.submission_attempts + stats.polls_total + stats.retrieves_total


async def test_a_job_is_made_polled_and_downloaded(provider: str, tmp_path: Path) -> None:
    """One job: submitted once, polled to its end, its video downloaded whole; the status is
    the library's, the service's own word kept beside it."""
    async with fake(provider) as server, make_client(server) as client:
        result = await client.generate(VideoRequest("a red fox trotting through fresh snow"))
        path = await client.download(result, tmp_path)
        stats = server.stats
    assert result.ok
    assert (result.status, result.raw_status) == (TaskStatus.SUCCEED, SUCCESS[provider])
    assert result.progress_percent == 100
    assert path.read_bytes() == sample_video()
    assert stats.submission_attempts == stats.submissions_accepted == 1
    assert stats.storage_downloads == 1
    # MiniMax: the file's URL is retrieved once, after the query that saw the task succeed.
    assert stats.retrieves_total == (1 if provider == "minimax" else 0)


async def test_a_journaled_batch_resumes_with_nothing_paid_again(
    provider: str, tmp_path: Path
) -> None:
    """A batch run twice on one journal: the second run replays every job, sending nothing."""
    journal = tmp_path / "journal.sqlite"
    requests = [VideoRequest(f"a fox, take {i}") for i in range(6)]
    async with fake(provider) as server, make_client(server) as client:
        async with client.generate_many(requests, journal=journal) as stream:
            first = [outcome async for outcome in stream]
        sent = requests_made(server)
        async with client.generate_many(requests, journal=journal) as stream:
            again = [outcome async for outcome in stream]
        stats = server.stats
    assert all(outcome.ok for outcome in first)
    assert all(outcome.replayed and outcome.ok for outcome in again)
    assert stats.submissions_accepted == 6
    assert requests_made(server) == sent
    async with SQLiteJobStore(journal) as store:
        assert await store.bind_provider("other") == provider


async def test_a_failed_job_says_why(provider: str) -> None:
    """A job the service fails is TaskFailedError, the service's reason in it."""
    async with fake(provider, failure_rate=1.0) as server, make_client(server) as client:
        with pytest.raises(TaskFailedError) as caught:
            await client.generate(VideoRequest("a doomed fox"))
    result = caught.value.result
    assert result.status is TaskStatus.FAILED
    assert result.reason
    assert not result.videos


async def test_an_unknown_task_is_not_found(provider: str) -> None:
    """A task id the service does not know is NotFoundError, after one answered request."""
    async with fake(provider) as server, make_client(server, max_retries=0) as client:
        with pytest.raises(NotFoundError):
            await client.get_task("123456789012345")
        assert requests_made(server) == 1


async def test_a_wrong_key_is_refused_and_nothing_is_made(provider: str) -> None:
    """A key the service refuses: AuthenticationError, no task made, no retry."""
    async with fake(provider) as server, make_client(server, api_key="wrong-key") as client:
        with pytest.raises(AuthenticationError):
            await client.submit(VideoRequest("a fox"))
        stats = server.stats
    assert stats.submissions_accepted == 0
    assert stats.submission_attempts == 1


async def test_a_request_the_provider_refuses_never_leaves(provider: str) -> None:
    """What a provider's service would refuse is refused here, naming the field; 0 requests."""
    request, field = REFUSED[provider]
    async with fake(provider) as server, make_client(server) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.submit(request)
        assert requests_made(server) == 0
    assert caught.value.field == field


async def test_faults_are_retried_and_nothing_is_paid_twice(provider: str) -> None:
    """Server errors and rate-limit answers on any request: every job ends well, each body
    submitted once (a refused submission made no task)."""
    faults = {"faults": Faults(server_error=0.15, rate_limit=0.15)}
    requests = [VideoRequest(f"a fox in the fault storm, take {i}") for i in range(12)]
    async with fake(provider, **faults) as server, make_client(server) as client:
        async with client.generate_many(requests) as stream:
            outcomes = [outcome async for outcome in stream]
        stats = server.stats
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes]
    assert stats.submissions_accepted == 12
    assert all(len(ids) == 1 for ids in stats.task_ids_by_body.values())
    assert stats.faults_injected  # the storm happened


async def test_an_expired_url_is_renewed_through_the_service(provider: str, tmp_path: Path) -> None:
    """A download whose URL expired gets a fresh one: a poll of the gateway's task, one
    retrieve of MiniMax's file (no query)."""
    async with fake(provider) as server, make_client(server) as client:
        result = await client.generate(VideoRequest("a fox, fetched late"))
        before = server.stats.snapshot()
        assert server.expire_urls() == 1
        path = await client.download(result, tmp_path)
        after = server.stats.snapshot()
    assert path.read_bytes() == sample_video()
    if provider == "minimax":
        assert after.retrieves_total == before.retrieves_total + 1
        assert after.polls_total == before.polls_total
    else:
        assert after.polls_total == before.polls_total + 1
    assert after.storage_denied == before.storage_denied + 1  # the expired URL, refused


@asynccontextmanager
async def receiver(client: HailuoClient, secret: WebhookSecret) -> AsyncIterator[str]:
    """The client's aiohttp webhook receiver on loopback; yields the jobs' webhook URL."""
    hook = aiohttp_handler(client, secret=secret)
    app = web.Application()
    app.router.add_post("/hailuo/webhook/{secret}", hook)
    app.cleanup_ctx.append(hook.cleanup_ctx)
    async with serve_app(app, shutdown_timeout=0.1) as url:
        yield secret.url(f"{url}/hailuo/webhook")


async def test_a_pushed_end_is_confirmed_and_ends_the_watch(provider: str) -> None:
    """A job with a webhook ends by push, confirmed by polling the task once; MiniMax's
    challenge is answered first."""
    secret = WebhookSecret.generate()
    async with fake(provider, job_duration=Fixed(20)) as server, make_client(server) as client:
        async with receiver(client, secret) as url:
            request = VideoRequest("a fox, pushed", webhook_url=url)
            async with client.generate_many([request]) as stream:
                (outcome,) = [outcome async for outcome in stream]
        stats = server.stats
    assert outcome.ok
    assert stats.webhooks_sent >= 1
    if provider == "minimax":
        assert (stats.challenges_sent, stats.challenges_failed) == (1, 0)
    # Polled only to confirm the push (the backstop polls come long after the end).
    assert stats.polls_total == 1


# -- MiniMax's own codes ----------------------------------------------------------------------


def minimax(**knobs: Any) -> FakeHailuoServer:
    """The fake in MiniMax's dialect."""
    return fake("minimax", **knobs)


async def test_a_sensitive_prompt_is_refused_with_no_task() -> None:
    """1026: ContentPolicyError (a BadRequestError), not retried, no task made."""
    async with minimax() as server, make_client(server) as client:
        with pytest.raises(ContentPolicyError) as caught:
            await client.submit(VideoRequest("a fox #input-sensitive"))
        stats = server.stats
    assert caught.value.code == 1026
    assert (stats.submission_attempts, stats.submissions_accepted) == (1, 0)


async def test_a_refused_video_is_a_failed_task_with_its_reason() -> None:
    """1027 on a task that ended Fail: TaskFailedError, the reason saying the video was
    refused; its file is never retrieved."""
    async with minimax() as server, make_client(server) as client:
        with pytest.raises(TaskFailedError) as caught:
            await client.generate(VideoRequest("a fox #output-sensitive"))
        stats = server.stats
    assert caught.value.result.raw_status == "Fail"
    assert "1027" in caught.value.result.reason
    assert stats.retrieves_total == 0


async def test_a_rate_limit_burst_pauses_and_is_retried() -> None:
    """Injected 1002s lasting a burst (2045s): every job still ends, each submitted once."""
    faults = {"faults": Faults(rate_limit=0.2, rate_limit_burst=2.0)}
    requests = [VideoRequest(f"a fox in a burst, take {i}") for i in range(8)]
    async with minimax(**faults) as server, make_client(server) as client:
        async with client.generate_many(requests) as stream:
            outcomes = [outcome async for outcome in stream]
        stats = server.stats
    assert all(outcome.ok for outcome in outcomes)
    assert stats.submissions_accepted == 8
    assert stats.error_codes  # the refusals were answered as codes in 200 answers
    assert set(stats.error_codes) <= {1002, 2045}


async def test_an_empty_balance_stops_the_batch_and_leaves_the_rest_unsent(
    tmp_path: Path,
) -> None:
    """1008 after 3 tasks: the batch stops submitting at the first; the jobs not yet sent
    come out with InsufficientBalanceError and stay unsent in the journal, for a rerun."""
    journal = tmp_path / "journal.sqlite"
    requests = [(f"job-{i}", VideoRequest(f"a fox, take {i}")) for i in range(10)]
    async with minimax(insufficient_balance_after=3) as server:
        async with make_client(server, max_active_jobs=1) as client:
            async with client.generate_many(requests, journal=journal) as stream:
                outcomes: list[JobOutcome] = [outcome async for outcome in stream]
        stats = server.stats
    refused = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    assert sum(o.ok for o in outcomes) == 3
    assert len(refused) == 7
    assert stats.submissions_accepted == 3
    assert stats.error_codes == {1008: 1}  # one refusal: the rest were never sent
    async with SQLiteJobStore(journal) as store:
        records = await store.get_many()
    unsent = {key for key, record in records.items() if record.state is JobState.RECORDED}
    assert unsent == {o.key for o in refused if o.key in records}
    assert all(records[key].attempts <= 1 for key in unsent)
    await anyio.lowlevel.checkpoint()
