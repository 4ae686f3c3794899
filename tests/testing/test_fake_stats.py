"""The counters a FakeHailuoServer keeps about its clients."""

from __future__ import annotations

import json

import pytest
from fakeutil import VALID_BODY, running

from hailuo_async.testing import FakeHailuoServer, Stats

pytestmark = pytest.mark.anyio


async def test_submission_and_poll_counters() -> None:
    """Attempts count every POST, accepted counts tasks, polls count per task."""
    async with running() as api:
        first = await api.create()
        second = await api.create({"prompt": "another"})
        await api.submit({"prompt": ""})
        await api.submit(headers={"Authorization": "Bearer no"})
        for _ in range(3):
            await api.poll(first)
        await api.result("unknown")
        stats = api.server.stats
        assert stats.submission_attempts == 4
        assert stats.submissions_accepted == 2
        assert stats.polls_total == 4
        assert stats.polls_by_task == {first: 3}
        assert stats.never_polled_task_ids == [second]
        assert stats.task_ids == [first, second]
        assert stats.responses_by_status == {200: 5, 400: 1, 401: 1, 404: 1}
        assert stats.rejected_by_field == {"prompt": 1}


async def test_identical_bodies_are_counted_as_possible_duplicates() -> None:
    """Bodies seen more than once are listed with their task ids, key order aside."""
    async with running() as api:
        one = await api.create(VALID_BODY)
        two = await api.submit(raw=json.dumps(VALID_BODY, indent=4).encode())
        other = await api.create({"prompt": "something else"})
        stats = api.server.stats
        assert stats.duplicate_submissions == 1
        assert list(stats.duplicate_bodies.values()) == [[one, two.json()["task_id"]]]
        assert other not in next(iter(stats.duplicate_bodies.values()))
        assert len(stats.task_ids_by_body) == 2


async def test_snapshot_is_detached_and_as_dict_is_json() -> None:
    """snapshot() does not move with later traffic; as_dict() serialises to JSON."""
    async with running() as api:
        task_id = await api.create()
        snapshot = api.server.stats.snapshot()
        await api.poll(task_id)
        assert snapshot.polls_total == 0
        assert api.server.stats.polls_total == 1
        data = json.loads(json.dumps(api.server.stats.as_dict()))
    assert data["submissions_accepted"] == 1
    assert data["responses_by_status"] == {"200": 2}
    assert data["never_polled_task_ids"] == []
    assert data["duplicate_submissions"] == 0


async def test_task_listing_accessors() -> None:
    """task_ids and lost_task_ids are copies; tasks is a read-only view."""
    async with running() as api:
        task_id = await api.create()
        server = api.server
        server.task_ids.clear()
        assert server.task_ids == [task_id]
        assert list(server.tasks) == [task_id]
        with pytest.raises(TypeError):
            server.tasks["x"] = server.tasks[task_id]  # type: ignore[index]


async def test_unknown_routes_answer_json() -> None:
    """Wrong paths and methods still answer in the gateway's JSON style."""
    async with running() as api:
        missing = await api.request("GET", api.server.url + "/v3/async/nope")
        wrong_method = await api.request("GET", api.server.url + "/v3/async/minimax-hailuo-02")
    assert missing.status == 404
    assert missing.json()["reason"] == "NOT_FOUND"
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"


async def test_server_urls_and_lifecycle() -> None:
    """url has no trailing slash, the ports differ, and close() is idempotent."""
    server = FakeHailuoServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    async with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert not server.url.endswith("/")
        assert server.storage_url != server.url
        assert "FakeHailuoServer http://" in repr(server)
        with pytest.raises(RuntimeError):
            await server.start()
    await server.close()


def test_stats_start_at_zero() -> None:
    """A fresh Stats has nothing counted."""
    stats = Stats()
    assert stats.as_dict()["rate_limited_total"] == 0
    assert stats.never_polled_task_ids == []
