"""Arbitrary request bodies never get a 5xx or hurt the fake."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeutil import VALID_BODY, Api, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

FIELDS = [
    "prompt",
    "image",
    "end_image",
    "duration",
    "resolution",
    "enable_prompt_expansion",
    "fast_pretreatment",
    "extra",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = (
    json_values
    | st.sampled_from([6, 10, "768P", "1080P", True, False, "https://example.com/a.png"])
    | st.just("data:image/png;base64,aGVsbG8=")
)
bodies = (
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), field_values, max_size=6)
    | json_values
)

FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """One fake for all of a test's examples."""
    async with running(max_body_bytes=200_000) as api:
        yield api


def _assert_healthy(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    statuses = api.server.stats.responses_by_status
    assert all(status < 500 for status in statuses), statuses
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def _check_reply(status: int, body: bytes) -> None:
    assert status in (200, 400, 413), (status, body[:200])
    data: dict[str, Any] = json.loads(body)
    if status == 200:
        assert isinstance(data["task_id"], str)
    else:
        assert data["code"] == status
        assert isinstance(data["metadata"]["field"], str)


@FUZZ
@given(raw=st.binary(max_size=300))
async def test_arbitrary_bytes(api: Api, raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Any bytes as a body get a 2xx or 4xx with a JSON body."""
    reply = await api.submit(raw=raw)
    _check_reply(reply.status, reply.body)
    _assert_healthy(api, caplog)


@FUZZ
@given(body=bodies)
async def test_arbitrary_json(api: Api, body: Any, caplog: pytest.LogCaptureFixture) -> None:
    """JSON of any shape and types is accepted or refused with a named field."""
    reply = await api.submit(body)
    _check_reply(reply.status, reply.body)
    _assert_healthy(api, caplog)


@FUZZ
@given(prompt=st.text(min_size=1, max_size=2000))
async def test_any_prompt_text_is_counted_in_characters(
    api: Api, prompt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Any 1-2000 character prompt (surrogates and all) is accepted."""
    reply = await api.submit(raw=json.dumps({"prompt": prompt}).encode())
    assert reply.status == 200, reply
    _assert_healthy(api, caplog)


@FUZZ
@given(task_id=st.text(max_size=200))
async def test_arbitrary_task_ids(api: Api, task_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """Any task_id query value is a 400 or a 404, never a crash."""
    reply = await api.result(task_id)
    assert reply.status in (400, 404)
    _assert_healthy(api, caplog)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k-nested-lists"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="50k-nested-objects"),
        pytest.param(
            b'{"prompt": "x", "extra": {"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
            id="deep-extra",
        ),
        pytest.param(b'{"prompt": "' + b"x" * 150_000 + b'"}', id="huge-prompt"),
        pytest.param(b'{"prompt": "x", "duration": ' + b"9" * 10_000 + b"}", id="huge-int"),
        pytest.param(b'{"prompt": "x", "duration": 1e999}', id="float-overflow"),
        pytest.param(b'{"prompt": "x", "duration": NaN}', id="nan"),
        pytest.param(b'{"prompt": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b'{"' + b"k" * 100_000 + b'": 1}', id="huge-unknown-key"),
        pytest.param(b"\x00" * 1000, id="nul-bytes"),
    ],
)
async def test_pathological_bodies(api: Api, raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Deep nesting, huge strings and numbers, and odd JSON never get a 5xx."""
    reply = await api.submit(raw=raw)
    _check_reply(reply.status, reply.body)
    assert len(reply.body) < 2000
    _assert_healthy(api, caplog)
    # The fake still serves ordinary requests afterwards.
    assert (await api.submit(VALID_BODY)).status == 200
