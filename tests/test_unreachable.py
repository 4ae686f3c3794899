"""A service never reached is given up on early (RetryPolicy.unreachable_after); once it has
answered, a refused connection gets the usual retries. No timing is asserted: which error
ends the call says which rule ended it."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from clientutil import client_for
from test_cli import _clean_env, invoke  # noqa: F401 (_clean_env: an autouse fixture)

from hailuo_async import (
    APIConnectionError,
    RetryPolicy,
    ServiceUnreachableError,
    VideoRequest,
)
from hailuo_async.testing import FakeHailuoServer, Fixed

pytestmark = pytest.mark.anyio

# Quick retries, so that a test of the usual schedule ends soon.
QUICK: dict[str, Any] = {"initial_delay": 0.01, "max_delay": 0.02}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_service_never_reached_ends_as_unreachable() -> None:
    """Refused from the first request on: ServiceUnreachableError, though retries remain."""
    url = f"http://127.0.0.1:{_closed_port()}"
    policy = RetryPolicy(**QUICK, unreachable_after=0.2)
    # A thousand retries would take many seconds: only the unreachable rule ends it early.
    async with client_for(url, api_key="k", retry_policy=policy, max_retries=1000) as client:
        with pytest.raises(ServiceUnreachableError) as caught:
            await client.submit(VideoRequest(prompt="a fox"))
    error = caught.value
    assert not error.request_sent  # nothing was sent: nothing can be paid for
    assert error.first_contact
    assert isinstance(error.__cause__, APIConnectionError)
    assert re.search(r"no answer from the service in \d+\.\d s", str(error))


async def test_without_the_setting_the_usual_retries_run() -> None:
    """unreachable_after left None (the library's default): the plain error, after retries."""
    url = f"http://127.0.0.1:{_closed_port()}"
    policy = RetryPolicy(**QUICK)
    async with client_for(url, api_key="k", retry_policy=policy, max_retries=2) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.get_task("abc")
    assert type(caught.value) is APIConnectionError
    assert caught.value.first_contact


async def test_after_an_answer_a_refused_connection_is_retried_as_usual() -> None:
    """Once the service answered, a refused connection is a blip: no early give-up."""
    policy = RetryPolicy(**QUICK, unreachable_after=0.0)  # would give up at once if it applied
    async with FakeHailuoServer(time_scale=0.01, job_duration=Fixed(1.0), seed=3) as server:
        client = client_for(server.url, api_key=server.api_key, retry_policy=policy)
        await client.__aenter__()
        try:
            task_id = await client.submit(VideoRequest(prompt="a heron"))
            await server.close()  # the service goes away after answering once
            with pytest.raises(APIConnectionError) as caught:
                await client.get_task(task_id)
        finally:
            await client.__aexit__(None, None, None)
    assert type(caught.value) is APIConnectionError
    assert not caught.value.first_contact


async def test_a_batch_stops_on_a_service_never_reached() -> None:
    """generate_many stops submitting at the first unreachable error: the others come out
    unsent with that same error (none tried on its own), for a rerun to submit."""
    url = f"http://127.0.0.1:{_closed_port()}"
    policy = RetryPolicy(**QUICK, unreachable_after=0.1)
    requests = [VideoRequest(prompt=f"a wren, take {n}") for n in range(20)]
    async with client_for(url, api_key="k", retry_policy=policy) as client:
        async with client.generate_many(requests, max_active_jobs=1) as stream:
            outcomes = [outcome async for outcome in stream]
    assert len(outcomes) == 20
    first = outcomes[0].error
    assert isinstance(first, ServiceUnreachableError)
    # One error object for all: the 19 others were never sent, each would have its own.
    assert all(outcome.error is first for outcome in outcomes)
    assert all(outcome.task_id is None for outcome in outcomes)


def test_the_cli_says_it_cannot_reach_the_service_with_the_hint() -> None:
    """A command that reaches nothing: one line, the hint, and the early give-up's words."""
    env = {"HAILUO_API_KEY": "k", "HAILUO_BASE_URL": f"http://localhost.:{_closed_port()}"}
    result = invoke("status", "some-task", "--allow-insecure", env=env)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the service")
    assert "no answer from the service in" in lines[0]
    assert "check --base-url / HAILUO_BASE_URL" in lines[0]
