"""Configuration is checked one way: a bad value is an InvalidRequestError naming its field."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hailuo_async import (
    HailuoClient,
    InvalidRequestError,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    Video,
)
from hailuo_async._download import StorageAddresses, download_video

BAD_FIELDS: list[tuple[Callable[..., object], dict[str, Any], str]] = [
    (RetryPolicy, {"max_retries": -1}, "retry_policy.max_retries"),
    (RetryPolicy, {"max_retries": 2.5}, "retry_policy.max_retries"),
    (RetryPolicy, {"initial_delay": -1}, "retry_policy.initial_delay"),
    (RetryPolicy, {"max_delay": math.nan}, "retry_policy.max_delay"),
    (RetryPolicy, {"max_retry_after": "5"}, "retry_policy.max_retry_after"),
    (RetryPolicy, {"not_found_grace": -0.1}, "retry_policy.not_found_grace"),
    (RetryPolicy, {"unreachable_after": -1}, "retry_policy.unreachable_after"),
    (RetryPolicy, {"rate_limited_waits": -1}, "retry_policy.rate_limited_waits"),
    (RetryPolicy, {"max_refreshes": True}, "retry_policy.max_refreshes"),
    (RetryPolicy, {"max_failed_polls": 0}, "retry_policy.max_failed_polls"),
    (PollPolicy, {"first_poll_delay": -1}, "poll_policy.first_poll_delay"),
    (PollPolicy, {"min_interval": 0}, "poll_policy.min_interval"),
    (PollPolicy, {"max_interval": -3}, "poll_policy.max_interval"),
    (PollPolicy, {"backoff": 0.5}, "poll_policy.backoff"),
    (PollPolicy, {"eta_fraction": 1.5}, "poll_policy.eta_fraction"),
    (PollPolicy, {"jitter": 1}, "poll_policy.jitter"),
    (PollPolicy, {"max_aimed_interval": 0}, "poll_policy.max_aimed_interval"),
    (PollPolicy, {"max_job_duration": 0}, "poll_policy.max_job_duration"),
    (PollPolicy, {"max_unknown_duration": "long"}, "poll_policy.max_unknown_duration"),
    (Limits, {"max_in_flight": 0}, "limits.max_in_flight"),
    (Limits, {"max_in_flight": 2.5}, "limits.max_in_flight"),
    (Limits, {"requests_per_minute": 0}, "limits.requests_per_minute"),
    (Limits, {"max_active_jobs": -1}, "limits.max_active_jobs"),
    (Limits, {"rate_window": 0}, "limits.rate_window"),
    (Timeouts, {"total": -5}, "timeouts.total"),
    (Timeouts, {"connect": 0}, "timeouts.connect"),
    (Timeouts, {"read": math.nan}, "timeouts.read"),
    (Timeouts, {"download": -1}, "timeouts.download"),
    (HailuoClient, {"timeout": -1}, "timeout"),
    (HailuoClient, {"timeout": "60"}, "timeout"),
    (HailuoClient, {"timeout": Timeouts}, "timeout"),
    (HailuoClient, {"limits": {"max_in_flight": 8}}, "limits"),
    (HailuoClient, {"limits": 64}, "limits"),
    (HailuoClient, {"retry_policy": {"max_retries": 2}}, "retry_policy"),
    (HailuoClient, {"poll_policy": 1.0}, "poll_policy"),
    (HailuoClient, {"max_retries": -1}, "max_retries"),
    (HailuoClient, {"max_retries": 1.5}, "max_retries"),
    (HailuoClient, {"on_unknown_submission": "ignore"}, "on_unknown_submission"),
]


@pytest.mark.parametrize(("make", "options", "field"), BAD_FIELDS)
def test_a_bad_value_is_refused_naming_its_field(
    make: Callable[..., object], options: dict[str, Any], field: str
) -> None:
    """Every config object and client argument refuses a bad value the same way."""
    if make is HailuoClient:
        options = {"api_key": "k", **options}
    with pytest.raises(InvalidRequestError) as info:
        make(**options)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_the_defaults_and_the_edges_are_accepted() -> None:
    """Defaults, zero where zero is allowed and None where it means "no bound" all pass."""
    RetryPolicy(max_retries=0, initial_delay=0, unreachable_after=None, rate_limited_waits=0)
    PollPolicy(first_poll_delay=0, backoff=1, eta_fraction=1, jitter=0, max_job_duration=None)
    Timeouts(total=None, connect=None, read=None, download=None)
    Limits(requests_per_minute=None, max_active_jobs=None)
    client = HailuoClient("k", timeout=None, limits=Limits(), retry_policy=RetryPolicy())
    assert client.timeouts == Timeouts(total=None)


def test_max_retries_on_the_client_sets_the_policys_count() -> None:
    """``max_retries`` is a shortcut: the count lives in the policy, the rest is kept."""
    policy = RetryPolicy(max_retries=2, initial_delay=0.25)
    assert HailuoClient("k", retry_policy=policy).max_retries == 2
    client = HailuoClient("k", retry_policy=policy, max_retries=7)
    assert client.retry_policy == RetryPolicy(max_retries=7, initial_delay=0.25)
    assert client.max_retries == 7


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_refreshes": -1}, "max_refreshes"),
        ({"deadline": 0}, "deadline"),
    ],
)
async def test_a_download_refuses_bad_bounds(
    options: dict[str, Any], field: str, tmp_path: Path
) -> None:
    """A download's own bounds are refused before anything is fetched."""
    video = Video(url="https://storage.example/v.mp4")
    with pytest.raises(InvalidRequestError) as info:
        await download_video(video, tmp_path, addresses=StorageAddresses(), **options)
    assert info.value.field == field
