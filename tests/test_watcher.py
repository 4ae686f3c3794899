"""The task watcher: one scheduler, results in completion order, nothing left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from clientutil import client_for, client_tasks, serve
from clientutil import make_client as base_make_client

from hailuo_async import (
    AuthenticationError,
    HailuoClient,
    InvalidRequestError,
    NotFoundError,
    PollPolicy,
    RetryPolicy,
    TaskEvent,
    TaskResult,
    TaskStatus,
    TaskWatcher,
    VideoRequest,
)
from hailuo_async.extend import SharedState
from hailuo_async.testing import FakeHailuoServer, Fixed, Uniform

pytestmark = pytest.mark.anyio

SCALE = 0.01
KEY = "test-key"


@pytest.fixture
async def server() -> AsyncIterator[FakeHailuoServer]:
    """A fake whose jobs take 30 to 60 service seconds (0.3 to 0.6 s)."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=7, job_duration=Uniform(30, 60), eta_error=0.2
    ) as fake:
        yield fake


make_client = partial(
    base_make_client,
    retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.05, not_found_grace=0.2),
)


async def submit_many(client: HailuoClient, count: int) -> list[str]:
    """Submit ``count`` jobs and return their task ids."""
    return [await client.submit(VideoRequest(prompt=f"job {i}")) for i in range(count)]


async def test_yields_each_result_once_when_it_ends(server: FakeHailuoServer) -> None:
    """Every watched task is yielded once, terminal, and iteration then ends."""
    async with make_client(server) as client:
        ids = await submit_many(client, 12)
        seen = []
        async with client.watch(ids) as watcher:
            async for result in watcher:
                assert result.is_done
                seen.append(result.task_id)
    assert sorted(seen) == sorted(ids)


async def test_results_come_in_completion_order() -> None:
    """A job that ends sooner is yielded sooner, whatever order the ids were given in."""
    async with FakeHailuoServer(
        in_process=True, time_scale=SCALE, seed=1, job_duration=Fixed(100), eta_error=0.05
    ) as server:
        async with make_client(server) as client:
            ids = []
            for i in range(3):
                ids.append(await client.submit(VideoRequest(prompt=f"job {i}")))
                await anyio.sleep(0.3)
            async with client.watch(reversed(ids)) as watcher:
                order = [result.task_id async for result in watcher]
    assert order == ids


async def test_ids_added_while_iterating_are_watched(server: FakeHailuoServer) -> None:
    """An id added during the iteration is yielded before the iteration ends."""
    async with make_client(server) as client:
        first, second = await submit_many(client, 2)
        seen = []
        async with client.watch([first]) as watcher:
            async for result in watcher:
                seen.append(result.task_id)
                if result.task_id == first:
                    watcher.add(second)
    assert seen == [first, second]


async def test_keep_open_waits_for_finish(server: FakeHailuoServer) -> None:
    """A keep-open watcher waits for more ids until finish() is called."""
    async with make_client(server) as client:
        seen = []
        async with client.watch(keep_open=True) as watcher:

            async def feed() -> None:
                for task_id in await submit_many(client, 2):
                    watcher.add(task_id, submitted_at=anyio.current_time())
                    await anyio.sleep(0.05)
                watcher.finish()

            async with anyio.create_task_group() as group:
                group.start_soon(feed)
                async for result in watcher:
                    seen.append(result.task_id)
    assert len(seen) == 2


async def test_unknown_id_is_dropped_with_an_error_event(server: FakeHailuoServer) -> None:
    """An id the service does not know ends its watch with an error, not the iteration."""
    events: list[TaskEvent] = []
    async with make_client(server) as client:
        (known,) = await submit_many(client, 1)
        async with client.watch([known, "no-such-task"], on_event=events.append) as watcher:
            results = [result async for result in watcher]
        assert [r.task_id for r in results] == [known]
        assert isinstance(watcher.errors["no-such-task"], NotFoundError)
    assert any(e.kind == "error" and e.task_id == "no-such-task" for e in events)


async def test_authentication_failure_is_raised(server: FakeHailuoServer) -> None:
    """A wrong key cannot poll anything: the iteration raises AuthenticationError."""
    async with make_client(server) as good:
        ids = await submit_many(good, 1)
    bad = HailuoClient(
        "wrong-key", base_url=server.url, transport=server.transport(), max_retries=0
    )
    async with bad:
        with pytest.raises(AuthenticationError):
            async with bad.watch(ids) as watcher:
                async for _ in watcher:
                    pass


async def test_events_report_status_progress_and_end(server: FakeHailuoServer) -> None:
    """The events stream and the callback see status changes and the end of each task."""
    callback_events: list[TaskEvent] = []
    async with make_client(server) as client:
        ids = await submit_many(client, 3)
        streamed = []
        async with client.watch(ids, on_event=callback_events.append) as watcher:
            with watcher.events() as stream:
                async for _ in watcher:
                    pass
                while True:
                    try:
                        streamed.append(stream.receive_nowait())
                    except anyio.WouldBlock:
                        break
    done = [e for e in callback_events if e.kind == "done"]
    assert sorted(e.task_id for e in done) == sorted(ids)
    assert all(e.result is not None and e.result.status is TaskStatus.SUCCEED for e in done)
    assert streamed == callback_events


async def test_pushed_result_ends_the_watch_without_a_poll(server: FakeHailuoServer) -> None:
    """A result delivered from elsewhere (a webhook) is yielded and stops that task's polls."""
    async with make_client(server) as client:
        (task_id,) = await submit_many(client, 1)
        await anyio.sleep(0.7)  # the job has ended on the server
        result = await client.get_task(task_id)
        polls_before = server.stats.polls_by_task[task_id]
        async with client.watch() as watcher:
            watcher.add(task_id, submitted_at=anyio.current_time())
            assert watcher.deliver(result)
            yielded = [r async for r in watcher]
    assert yielded == [result]
    assert server.stats.polls_by_task[task_id] == polls_before


async def test_nothing_runs_after_the_watcher_is_left(server: FakeHailuoServer) -> None:
    """Leaving the async with early cancels the scheduler and every poll in flight."""
    async with make_client(server) as client:
        ids = await submit_many(client, 20)
        before = client_tasks()
        async with client.watch(ids) as watcher:
            async for _ in watcher:
                break
        assert client_tasks() == before
        await anyio.sleep(0.05)  # requests already on the wire when we left still land
        polls = server.stats.polls_total
        await anyio.sleep(0.3)
        assert server.stats.polls_total == polls


async def test_one_scheduler_not_one_task_per_id(server: FakeHailuoServer) -> None:
    """Watching many ids adds only a few tasks to the event loop."""
    # Polls in flight are capped at 4: one task per id would show 50 tasks at once.
    async with make_client(server, max_in_flight=4) as client:
        ids = await submit_many(client, 50)
        before = len(client_tasks())
        added = []
        async with client.watch(ids) as watcher:
            await anyio.lowlevel.checkpoint()
            added.append(len(client_tasks()) - before)
            async for _ in watcher:
                # Sampled as each job ends, while most of the others are still watched.
                added.append(len(client_tasks()) - before)
    assert len(added) == 1 + len(ids)
    assert max(added) <= 1 + client.limits.max_in_flight
    assert watcher.polls >= len(ids)


async def test_iterating_outside_async_with_is_refused(server: FakeHailuoServer) -> None:
    """Iterating a watcher that was never entered raises a clear error."""
    async with make_client(server) as client:
        watcher = client.watch(["x"])
        with pytest.raises(RuntimeError, match="async with"):
            await watcher.__anext__()


async def test_polls_follow_the_eta_not_a_fixed_beat(server: FakeHailuoServer) -> None:
    """Jobs of 30-60 service seconds are seen done in a handful of polls each."""
    async with make_client(server) as client:
        ids = await submit_many(client, 30)
        async with client.watch() as watcher:
            for task_id in ids:
                watcher.add(task_id, submitted_at=anyio.current_time())
            async for _ in watcher:
                pass
    polls = [server.stats.polls_by_task[task_id] for task_id in ids]
    # A fixed 1 s poller would make 30 to 60 polls each.
    assert sum(polls) / len(polls) <= 8


async def test_a_watcher_needs_only_a_poll_function_and_the_shared_state() -> None:
    """With a plain function as its poll, a watcher yields results, no HTTP involved."""
    answers = {
        "a": iter([TaskStatus.PROCESSING, TaskStatus.FAILED]),
        "b": iter([TaskStatus.FAILED]),
    }
    polled: list[str] = []

    async def poll(task_id: str) -> TaskResult:
        polled.append(task_id)
        return TaskResult(task_id=task_id, status=next(answers[task_id]))

    state = SharedState.in_memory()
    policy = PollPolicy(first_poll_delay=0.0, min_interval=0.01, max_interval=0.02)
    async with TaskWatcher(poll, state, ["a", "b"], poll_policy=policy) as watcher:
        results = {result.task_id: result.status async for result in watcher}
    assert results == {"a": TaskStatus.FAILED, "b": TaskStatus.FAILED}
    assert sorted(polled) == ["a", "a", "b"]
    assert watcher.polls == 3
    assert not state.push.is_wanted("a")


async def test_a_pushed_result_reaches_the_watcher_through_the_registry() -> None:
    """A result delivered to the shared push registry ends the watch without a poll."""

    async def poll(task_id: str) -> TaskResult:
        raise AssertionError("a pushed task is not polled before its backstop")

    state = SharedState.in_memory()
    policy = PollPolicy(first_poll_delay=5.0, min_interval=1.0, max_interval=5.0)
    async with TaskWatcher(poll, state, poll_policy=policy) as watcher:
        watcher.add("p", submitted_at=anyio.current_time(), pushed=True)
        assert state.push.is_wanted("p")
        assert state.push.deliver(TaskResult(task_id="p", status=TaskStatus.FAILED)) == 1
        results = [result async for result in watcher]
    assert [r.task_id for r in results] == ["p"]
    assert not state.push.is_wanted("p")


@pytest.mark.parametrize("status", [404, 500])
async def test_a_poll_failing_after_a_push_ended_the_task_is_harmless(
    status: int,
) -> None:
    """A push ends a task while its poll is in flight; the poll's failure is then ignored."""
    # One transient failure ends a watch, so the 500 takes the "too many failures" branch.
    policy = RetryPolicy(max_retries=0, max_failed_polls=1)
    poll_started, release = anyio.Event(), anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        poll_started.set()
        await release.wait()
        return web.json_response({"message": "no"}, status=status)

    async with serve(handler) as url, client_for(url, api_key=KEY, retry_policy=policy) as client:
        async with client.watch(["t-1"]) as watcher:
            await poll_started.wait()
            assert watcher.deliver(_succeeded("t-1"))
            release.set()
            results = [result async for result in watcher]
            # Let the failed poll finish inside the watcher.
            await anyio.sleep(0.05)
    assert [r.task_id for r in results] == ["t-1"]
    assert "t-1" not in watcher.errors


async def test_watcher_add_checks_ids_like_the_client() -> None:
    """A watcher refuses the ids the client refuses (blank, unprintable, too long)."""
    async with client_for("http://127.0.0.1:9", api_key=KEY) as client:
        watcher = client.watch()
        for bad in ("   ", "a\nb", "x" * 300):
            with pytest.raises(InvalidRequestError):
                watcher.add(bad)


def _succeeded(task_id: str) -> TaskResult:
    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEED, raw_status="TASK_STATUS_SUCCEED")
