"""A refusal of the account stops the submissions and leaves every job unsent, not failed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from clientutil import FAST_RETRY, make_client, serve
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    threaded_fake,
)

from hailuo_async import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    HailuoClient,
    InsufficientBalanceError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    VideoRequest,
)
from hailuo_async._refusals import refuses_the_account, refuses_the_job
from hailuo_async.extend import job_specs
from hailuo_async.journal import JobState, SQLiteJobStore
from hailuo_async.testing import FakeHailuoServer, Fixed

SCALE = 0.01


def prompts(count: int) -> Iterator[VideoRequest]:
    """``count`` distinct requests."""
    return (VideoRequest(prompt=f"refused {i}") for i in range(count))


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 20 service seconds."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=8, job_duration=Fixed(20)
    ) as fake:
        yield fake


def _status(cls: type[APIStatusError], code: int) -> APIStatusError:
    return cls(f"{code}", status_code=code)


def test_which_refusals_are_the_account_s_and_which_the_job_s() -> None:
    """401, 403, a low balance and 402 refuse the account; 400 and 413 the job; 5xx/429 neither."""
    for error in (
        _status(AuthenticationError, 401),
        _status(PermissionDeniedError, 403),
        _status(InsufficientBalanceError, 400),
        _status(APIStatusError, 402),
    ):
        assert refuses_the_account(error)
        assert not refuses_the_job(error)
    for error in (_status(BadRequestError, 400), _status(APIStatusError, 413)):
        assert refuses_the_job(error)
        assert not refuses_the_account(error)
    for error in (_status(InternalServerError, 503), _status(RateLimitError, 429)):
        assert not refuses_the_job(error)
        assert not refuses_the_account(error)


@pytest.mark.anyio
async def test_a_refused_key_leaves_the_jobs_recorded_and_the_rerun_submits_them(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """Wrong key: nothing journaled failed; with the right key the rerun submits every job once."""
    journal = tmp_path / "run.sqlite"
    async with HailuoClient(
        "wrong", base_url=server.url, transport=server.transport(), max_retries=0
    ) as client:
        async with client.generate_many(prompts(10), journal=journal, max_active_jobs=2) as out:
            refused = [outcome async for outcome in out]
    async with SQLiteJobStore(journal) as store:
        states = {record.state for record in (await store.get_many()).values()}
    async with make_client(server) as client:
        async with client.generate_many(prompts(10), journal=journal) as outcomes:
            rerun = [outcome async for outcome in outcomes]
    assert len(refused) == 10
    assert all(isinstance(o.error, AuthenticationError) and o.task_id is None for o in refused)
    assert states == {JobState.RECORDED}
    assert all(o.ok and not o.replayed for o in rerun)
    assert server.stats.submissions_accepted == 10
    assert server.stats.duplicate_submissions == 0


@pytest.mark.anyio
async def test_a_low_balance_stops_the_submissions_at_the_first_refusal(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """InsufficientBalanceError after 3 jobs: those run to their end, the rest come out unsent."""
    journal = tmp_path / "run.sqlite"
    calls: list[VideoRequest] = []
    async with make_client(server) as client:
        submit = client._api.submit

        async def balance_runs_out(request: VideoRequest, **options: Any) -> str:
            calls.append(request)
            if len(calls) > 3:
                # As the API layer does for any answered refusal: the job goes back to recorded.
                recorder = options.get("recorder")
                if recorder is not None:
                    await recorder.before_send()
                    await recorder.not_sent()
                raise InsufficientBalanceError("balance", status_code=200)
            return await submit(request, **options)

        client._api.submit = balance_runs_out  # type: ignore[method-assign]
        async with client.generate_many(prompts(20), journal=journal, max_active_jobs=1) as out:
            outcomes = [outcome async for outcome in out]
    async with SQLiteJobStore(journal) as store:
        records = await store.get_many()
    ok = [o for o in outcomes if o.ok]
    unsent = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    assert len(ok) == 3
    assert len(unsent) == 17
    assert all(o.task_id is None for o in unsent)
    assert len(calls) == 4  # the submissions stopped at the first refusal
    assert server.stats.submissions_accepted == 3
    states = [record.state for record in records.values()]
    # The refused job is recorded (unsent), none failed; jobs read after the refusal are not
    # even recorded (the one read while the refused one was on its way may be).
    assert states.count(JobState.FINISHED) == 3
    assert set(states) == {JobState.FINISHED, JobState.RECORDED}


@pytest.mark.anyio
async def test_a_402_refuses_the_account_too(tmp_path: Path) -> None:
    """A gateway's 402 Payment Required stops the batch after one POST; no job is failed."""
    posts: list[str] = []

    async def payment_required(request: web.Request) -> web.StreamResponse:
        posts.append(request.path)
        return web.json_response({"message": "insufficient balance"}, status=402)

    journal = tmp_path / "run.sqlite"
    async with serve(payment_required) as url:
        async with HailuoClient("k", base_url=url, retry_policy=FAST_RETRY) as client:
            async with client.generate_many(prompts(6), journal=journal, max_active_jobs=1) as out:
                outcomes = [outcome async for outcome in out]
    assert len(posts) == 1
    assert [getattr(o.error, "status_code", None) for o in outcomes] == [402] * 6
    async with SQLiteJobStore(journal) as store:
        assert set(await store.counts()) == {JobState.RECORDED}


@pytest.mark.anyio
async def test_a_job_an_earlier_release_failed_for_a_refused_key_is_submitted(
    server: FakeHailuoServer, tmp_path: Path
) -> None:
    """A journal that says failed (AuthenticationError, no task id): the rerun submits it."""
    requests = list(prompts(2))
    async with SQLiteJobStore(tmp_path / "old.sqlite") as store:
        specs = job_specs(requests)
        await store.record(specs)
        for spec in specs:
            await store.mark_submitting(spec.key)
            await store.mark_unsent(spec.key)
            await store.mark_failed(spec.key, _status(AuthenticationError, 401))
    async with make_client(server) as client:
        async with client.generate_many(requests, journal=tmp_path / "old.sqlite") as out:
            outcomes = [outcome async for outcome in out]
    assert all(o.ok and not o.replayed for o in outcomes)
    assert server.stats.submissions_accepted == 2


def test_the_cli_says_not_sent_and_the_rerun_just_submits(tmp_path: Path) -> None:
    """Wrong key: exit 1, "not sent", no --retry-failed; the right key's rerun submits all."""
    (tmp_path / "p.txt").write_text("".join(f"a wren, take {i}\n" for i in range(5)))
    with threaded_fake() as server:
        env = fake_env(server)
        refused = invoke("batch", "p.txt", "--out", "o", env={**env, "HAILUO_API_KEY": "wrong"})
        rerun = invoke("batch", "p.txt", "--out", "o", env=env)
        accepted = server.stats.submissions_accepted
    assert refused.exit_code == 1
    assert "5 job(s) were not sent: the service refused the account" in refused.stdout
    assert "HAILUO_API_KEY" in refused.stdout
    assert "--retry-failed" not in refused.stdout
    assert "not sent" in refused.stdout
    assert rerun.exit_code == 0, rerun.output
    assert "ended in earlier runs" not in rerun.stdout
    assert accepted == 5


def test_a_refused_request_is_a_failure_that_cost_nothing(tmp_path: Path) -> None:
    """A job the service refuses (413 here) fails, and the advice says nothing was paid."""
    long_prompt = "a heron, described at length " * 50
    (tmp_path / "j.jsonl").write_text(
        json.dumps({"prompt": "a heron"}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n"
    )
    with threaded_fake(max_body_bytes=1024) as server:
        result = invoke("batch", "j.jsonl", "--out", "o", env=fake_env(server))
    assert result.exit_code == 1
    assert "1 job(s) were refused by the service when submitted" in result.stdout
    assert "nothing was paid" in result.stdout
    assert "new paid jobs" not in result.stdout
