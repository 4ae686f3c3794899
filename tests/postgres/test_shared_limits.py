"""Shared account limits across real processes, proven on the database's clock."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from anyio import wait_all_tasks_blocked
from pgutil import DSN, admin
from psycopg import sql

from hailuo_async import InvalidRequestError
from hailuo_async.postgres import (
    LIMITS_SCHEMA_VERSION,
    CoordinationError,
    SharedAccountLimits,
    account_name,
)

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("limits_child.py")


class Workers:
    """Worker processes started together: each reports ready, then all are told to go."""

    def __init__(self, settings: list[dict[str, Any]]) -> None:
        self.processes = [
            subprocess.Popen(  # noqa: S603 (our own script, our own settings)
                [sys.executable, str(CHILD), json.dumps(one)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for one in settings
        ]

    def wait_ready(self) -> list[str]:
        """Block until every worker has joined the limits; return their holder ids."""
        holders = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, f"a worker died before it was ready (exit {process.wait()})"
            holders.append(json.loads(line).get("ready") or json.loads(line).get("holder"))
        return holders

    def go_and_collect(self, timeout: float = 180) -> list[dict[str, Any]]:
        """Start every worker at once and return their reports."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in self.processes:
            out, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0, f"a worker failed (exit {process.returncode})"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports

    def kill_all(self) -> None:
        """Kill any worker still running."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def _settings(schema: str, account: str, **extra: Any) -> dict[str, Any]:
    return {"dsn": DSN, "schema": schema, "account": account, **extra}


async def test_four_processes_never_exceed_the_shared_request_rate(pg_schema: str) -> None:
    """Four processes' request turns, on the database's clock, never pass the rate in any window."""
    window, per_window = 2.0, 60  # 1,800 requests per minute, checked over 2-second windows
    account = f"acct-{uuid.uuid4().hex[:8]}"
    settings = _settings(
        pg_schema,
        account,
        mode="rate",
        rpm=per_window * 60 / window,
        window=window,
        tasks=4,
        per_task=10,
        lease=120.0,
    )
    workers = Workers([settings] * 4)
    try:
        workers.wait_ready()
        reports = workers.go_and_collect()
    finally:
        workers.kill_all()
    starts = sorted(start for report in reports for start in report["starts"])
    assert len(starts) == 4 * 4 * 10
    # Every window [t, t + window) holds at most per_window starts.
    busiest = max(
        sum(1 for other in starts[i:] if other < start + window) for i, start in enumerate(starts)
    )
    assert busiest <= per_window - 1  # one of the rate kept for the spread of arrivals
    # More turns than one window allows were granted, so the limit really bound them.
    assert starts[-1] - starts[0] >= window
    # Evenly spaced, but for spacing nobody used, carried over: within the 5 % the spacing
    # leaves unspent, less the request kept, so any j + 1 starts span j - 1 spacings.
    spacing = window / (per_window * 0.95)
    carried = per_window - 2 - per_window * 0.95
    for first in range(len(starts)):
        for later in range(first + 1, len(starts)):
            span = (later - first - carried) * spacing
            assert starts[later] - starts[first] >= span * 0.999 - 1e-6
    # At most one round trip per request (concurrent waiters share one), plus joining.
    assert sum(report["round_trips"] for report in reports) <= len(starts) + 4 * 3


async def test_three_processes_never_exceed_the_shared_active_cap(pg_schema: str) -> None:
    """Three processes taking places under a shared cap of 5 never hold more than 5 together."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    settings = _settings(pg_schema, account, mode="active", cap=5, tasks=4, per_task=5, hold=0.02)
    workers = Workers([settings] * 3)
    try:
        workers.wait_ready()
        reports = workers.go_and_collect()
    finally:
        workers.kill_all()
    assert sum(report["granted"] for report in reports) == 3 * 4 * 5
    # The total is counted under the row's lock, with releases not yet sent still counted:
    # an upper bound of the places really held at each grant.
    assert max(report["peak_total"] for report in reports) <= 5
    (left,) = _fetch(
        pg_schema, "SELECT count(*) FROM {s}.account_holders WHERE account = %s", account
    )
    assert left == 0  # every worker left, freeing its places at once


async def test_a_killed_process_places_return_once_its_connection_is_gone(
    pg_schema: str,
) -> None:
    """SIGKILL closes a holder's connection: its places come back long before its lease ends."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    workers = Workers([_settings(pg_schema, account, mode="hold", cap=3, places=3, lease=600.0)])
    try:
        (holder,) = workers.wait_ready()
        workers.processes[0].send_signal(signal.SIGKILL)
        workers.processes[0].wait()
    finally:
        workers.kill_all()
    expires_at = _expires_at(pg_schema, account, holder)
    async with _limits(pg_schema, account, max_active_jobs=3) as limits:
        jobs = limits.active_jobs
        for _ in range(3):
            with anyio.fail_after(60):
                await jobs.acquire()
        assert jobs.active == 3
        assert jobs.last_count is not None
        # Granted on the lease's first minute of ten: the dead connection told, not the lease.
        assert jobs.last_count.db_now < expires_at - dt.timedelta(seconds=540)
        assert not await jobs.try_acquire()  # the cap still holds
    assert _fetch(
        pg_schema,
        "SELECT count(*) FROM {s}.account_holders WHERE account = %s AND holder = %s",
        account,
        holder,
    ) == (0,)


async def test_behind_a_pooler_only_the_lease_tells_a_holder_dead(pg_schema: str) -> None:
    """A client whose server process id is not the connection's (a pooler's) is not tracked."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, max_active_jobs=2):
        pass  # the tables and functions exist
    call = sql.SQL(
        "SELECT granted FROM {s}.sync_active_jobs"
        "(%s, %s, 30, 0, 0, true, false, 0.5, 1, 0, 0, false, %s)"
    ).format(s=sql.Identifier(pg_schema))
    with admin() as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        own = int(str(row[0]))
        connection.execute(call, (account, "direct", own))
        connection.execute(call, (account, "pooled", own + 1))  # a pooler's own pid
        rows = connection.execute(
            sql.SQL("SELECT holder, backend_pid FROM {s}.account_holders").format(
                s=sql.Identifier(pg_schema)
            )
        ).fetchall()
    assert {str(holder): pid for holder, pid in rows} == {"direct": own, "pooled": None}


async def test_a_sync_cut_off_at_exit_lands_before_the_holder_leaves(pg_schema: str) -> None:
    """A sync cut off mid-way still runs on the server as the holder leaves: no row survives."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = _limits(pg_schema, account, max_active_jobs=2)
    lock_row = sql.SQL("SELECT 1 FROM {s}.account_limits WHERE account = %s FOR UPDATE").format(
        s=sql.Identifier(pg_schema)
    )
    backends = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    blocked = backends + " AND wait_event_type = 'Lock'"
    left = anyio.Event()
    seen_while_leaving: list[int] = []

    async def until(query: str, count: int) -> None:
        """Until ``query`` counts ``count`` of the holder's server processes, or it has left."""
        with anyio.fail_after(60):
            while not left.is_set() and _count(watcher, query, application) < count:  # noqa: ASYNC110
                await anyio.sleep(0.01)  # the server's state: polled

    async def unlock_once_leaving() -> None:
        await until(backends, 2)  # the leaving connection is open beside the cut-off one
        seen_while_leaving.append(_count(watcher, blocked, application))
        locker.commit()  # the cut-off sync goes on now
        with anyio.fail_after(60):
            while _count(watcher, backends, application):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # until it has landed and its process is gone

    with admin() as watcher, psycopg.connect(DSN) as locker:
        async with anyio.create_task_group() as group:
            async with limits:
                application = f"hailuo-limits-{limits.holder}"
                locker.execute(lock_row, (account,))  # every sync waits for it until the commit
                with anyio.CancelScope() as asking:
                    group.start_soon(_cancelled_when, until(blocked, 1), asking)
                    await limits.active_jobs.acquire()
                group.start_soon(unlock_once_leaving)
            left.set()
    assert seen_while_leaving == [1], "no sync was still running when the holder left"
    assert _fetch(
        pg_schema, "SELECT count(*) FROM {s}.account_holders WHERE account = %s", account
    ) == (0,)


async def _cancelled_when(condition: Awaitable[None], scope: anyio.CancelScope) -> None:
    await condition
    scope.cancel()


def _count(connection: psycopg.Connection[Any], query: str, *params: object) -> int:
    row = connection.execute(query, params).fetchone()
    assert row is not None
    return int(str(row[0]))


async def test_a_stopped_process_places_return_after_its_lease(pg_schema: str) -> None:
    """A holder stopped (SIGSTOP) keeps its connection: its places return when its lease lapses."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    workers = Workers([_settings(pg_schema, account, mode="hold", cap=3, places=3, lease=2.0)])
    try:
        (holder,) = workers.wait_ready()
        workers.processes[0].send_signal(signal.SIGSTOP)
        expires_at = _expires_at(pg_schema, account, holder)
        async with _limits(pg_schema, account, max_active_jobs=3) as limits:
            jobs = limits.active_jobs
            with anyio.fail_after(60):
                await jobs.acquire()
            assert jobs.last_count is not None
            assert jobs.last_count.db_now > expires_at  # its connection lives: the lease decides
            for _ in range(2):
                with anyio.fail_after(60):
                    await jobs.acquire()
            assert jobs.active == 3
            assert not await jobs.try_acquire()  # the cap still holds
    finally:
        workers.processes[0].send_signal(signal.SIGCONT)
        workers.kill_all()


async def test_a_free_place_goes_to_the_waiting_process_with_fewer(pg_schema: str) -> None:
    """A process holding every place frees one: a waiting process with none gets it, not it."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    # The newcomer asks again every second, and counts as waiting for four: its ask and
    # the holder's below come within them.
    async with (
        _limits(pg_schema, account, max_active_jobs=4) as holder,
        _limits(pg_schema, account, max_active_jobs=4, wait_poll_interval=1.0) as newcomer,
    ):
        for _ in range(4):
            await holder.active_jobs.acquire()
        assert holder.active_jobs.room == 0
        granted = anyio.Event()

        async def join() -> None:
            await newcomer.active_jobs.acquire()
            granted.set()

        async with anyio.create_task_group() as group:
            asked = newcomer.round_trips
            group.start_soon(join)
            await _asked_since(newcomer, asked)  # its first ask: refused, now waiting
            holder.active_jobs.release(submitted=True)
            # The holder asks for the place it freed: refused, a process with fewer waits.
            assert not await holder.active_jobs.try_acquire()
            with anyio.fail_after(60):
                await granted.wait()
        assert (holder.active_jobs.active, newcomer.active_jobs.active) == (3, 1)
        assert _holder_active(pg_schema, account, holder.holder) == 3
        assert _holder_active(pg_schema, account, newcomer.holder) == 1


async def test_places_nobody_waits_for_may_go_past_a_share(pg_schema: str) -> None:
    """With another process holding places but not waiting, one process may take the rest."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with (
        _limits(pg_schema, account, max_active_jobs=4) as first,
        _limits(pg_schema, account, max_active_jobs=4) as second,
    ):
        await second.active_jobs.acquire()  # holds one, and waits for no more
        for _ in range(3):
            assert await first.active_jobs.try_acquire()  # past half: nobody else waits
        assert first.active_jobs.active == 3
        assert not await first.active_jobs.try_acquire()  # the cap still holds
        assert not await second.active_jobs.try_acquire()


async def test_room_is_the_share_while_another_process_waits(pg_schema: str) -> None:
    """room: every free place while alone; no more than the share once another waits."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with (
        _limits(pg_schema, account, max_active_jobs=6) as first,
        _limits(pg_schema, account, max_active_jobs=6, wait_poll_interval=1.0) as second,
    ):
        await first.active_jobs.acquire()
        assert first.active_jobs.room == 5
        for _ in range(5):
            await first.active_jobs.acquire()

        async def wait_for_one() -> None:
            await second.active_jobs.acquire()

        async with anyio.create_task_group() as group:
            asked = second.round_trips
            group.start_soon(wait_for_one)
            await _asked_since(second, asked)
            for _ in range(4):
                first.active_jobs.release(submitted=True)
            # first holds 2 of 6, second waits with none: the share is 3 each.
            assert not await first.active_jobs.try_acquire()
            assert first.active_jobs.room == 1
            group.cancel_scope.cancel()


async def test_a_429_pauses_every_process(pg_schema: str) -> None:
    """A 429 with Retry-After in one process holds back the next turn of another until it ends."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with (
        _limits(pg_schema, account, requests_per_minute=6000) as first,
        _limits(pg_schema, account) as second,
    ):
        await first.requests.report_rate_limited("submit", 1.5)
        submit_paused_until, polls_free = _fetch(
            pg_schema,
            "SELECT submit_paused_until, poll_paused_until < clock_timestamp()"
            " FROM {s}.account_limits WHERE account = %s",
            account,
        )
        start = await second.requests.wait_turn("submit")
        assert start is not None
        assert start >= submit_paused_until
        assert second.requests.rate_limited["submit"] == 0
        # Polls are paused apart from submits.
        assert polls_free


async def test_take_now_never_grants_a_start_of_the_shared_budget(pg_schema: str) -> None:
    """take_now spends none of the shared budget; downloads take places up to the cap."""
    # A submit's or poll's start is a reservation (a round trip), none kept spare: take_now
    # never grants one. A download spends none of the budget, only a place in flight.
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, requests_per_minute=600, max_in_flight=2) as limits:
        requests = limits.requests
        round_trips = limits.round_trips
        assert not any(requests.take_now(kind) for kind in ("submit", "poll") for _ in range(100))
        assert [requests.take_now("download") for _ in range(3)] == [True, True, False]
        assert limits.round_trips == round_trips
        # The places taken at once are the slot's too: a download waits for one to return.
        entered: list[str] = []

        async def download() -> None:
            async with requests.slot("download"):
                entered.append("download")

        async with anyio.create_task_group() as group:
            group.start_soon(download)
            await wait_all_tasks_blocked()
            assert entered == []
            requests.give_back("download")
        assert entered == ["download"]
        requests.give_back("download")
        async with requests.slot("poll"):
            pass
        (reserved,) = _fetch(
            pg_schema, "SELECT window_count FROM {s}.account_limits WHERE account = %s", account
        )
        assert reserved == 1  # the slot's start alone: take_now reserved none
        assert requests.take_now("download")
        requests.give_back("download")
        requests.on_rate_limited("download", 30.0)
        assert not requests.take_now("download")  # a paused kind waits in slot


async def test_learnt_limits_are_shared(pg_schema: str) -> None:
    """A cap and rate discovered through 429s in one process are the ones every process uses."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, requests_per_minute=None) as first:
        jobs = first.active_jobs
        assert jobs.adaptive
        for _ in range(3):
            await jobs.acquire()
            jobs.on_submitted()
        await jobs.acquire()
        assert jobs.on_rate_limited()  # the fourth submission met the service's cap
        jobs.release(submitted=False)
        await jobs._sync(want=False)
        assert jobs.value == 3
        async with _limits(pg_schema, account) as second:
            assert second.active_jobs.value == 3
            assert not await second.active_jobs.try_acquire()
            jobs.release(submitted=True)
            await jobs._sync(want=False)
            assert await second.active_jobs.try_acquire()
        rate, slow_start = _fetch(
            pg_schema,
            "SELECT rate, active_slow_start FROM {s}.account_limits WHERE account = %s",
            account,
        )
        assert rate is None  # no rate known yet: requests go unpaced
        assert slow_start is False


async def test_a_known_rate_is_cut_by_no_429_but_a_learnt_one_is(pg_schema: str) -> None:
    """A rate the caller gave stays; a learnt rate is cut by a 429, for every process."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, requests_per_minute=600) as fixed:
        await fixed.requests.report_rate_limited("poll", 0.01)
        assert _rate(pg_schema, account) == 600
    other = f"acct-{uuid.uuid4().hex[:8]}"
    window = 1.0
    async with _limits(pg_schema, other, rate_window=window) as learner:
        # Waiters queued together share reservations: 30 requests land in one window (a
        # whole second, so that a busy machine's slow round trips do not spread them).
        async with anyio.create_task_group() as group:
            for _ in range(30):
                group.start_soon(learner.requests.wait_turn, "poll")
        await anyio.sleep(window + 0.05)  # a full window of traffic has passed
        await learner.requests.report_rate_limited("poll", 0.01)
        learnt = _rate(pg_schema, other)
        assert learnt is not None
        # 429s within 4 spacings of the cut are its echoes: wait those out (at least).
        per_window = learnt * window / 60
        await anyio.sleep(4 * window / max(per_window, 1.0) + 0.05)
        await learner.requests.report_rate_limited("poll", 0.01)
        cut = _rate(pg_schema, other)
        assert cut is not None
        assert cut < learnt


async def test_the_account_name_never_holds_the_key(pg_schema: str) -> None:
    """The default account is a hash of the key: the key reaches no table of the database."""
    key = "sk-secret-" + uuid.uuid4().hex
    async with SharedAccountLimits(DSN, api_key=key, schema=pg_schema) as limits:
        assert limits.account == account_name(key)
        assert key not in limits.account
        assert key not in repr(limits)
        await limits.requests.wait_turn("submit")
        with admin() as connection:
            dump = connection.execute(
                sql.SQL(
                    "SELECT a::text FROM {s}.account_limits a"
                    " UNION ALL SELECT h::text FROM {s}.account_holders h"
                ).format(s=sql.Identifier(pg_schema))
            ).fetchall()
    assert dump
    assert all(key not in str(row) for (row,) in dump)


async def test_bad_settings_and_databases_fail_clearly(pg_schema: str) -> None:
    """Bad names, a wrong address and a newer schema raise errors that name the problem."""
    with pytest.raises(InvalidRequestError, match="schema"):
        SharedAccountLimits(DSN, account="a", schema="Robert'); DROP")
    with pytest.raises(InvalidRequestError, match="account"):
        SharedAccountLimits(DSN, account="no spaces please")
    with pytest.raises(InvalidRequestError, match="account"):
        SharedAccountLimits(DSN)
    with pytest.raises(InvalidRequestError, match="requests_per_minute"):
        SharedAccountLimits(DSN, account="a", requests_per_minute=0)
    missing_db = DSN.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(CoordinationError, match='"no_such_database_here" does not exist'):
        async with SharedAccountLimits(missing_db, account="a", schema=pg_schema):
            pass
    with pytest.raises(CoordinationError, match="bad database address"):
        async with SharedAccountLimits(DSN + "?no_such_option=1", account="a", schema=pg_schema):
            pass
    s = sql.Identifier(pg_schema)
    with admin() as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {s}").format(s=s))
        connection.execute(
            sql.SQL(
                "CREATE TABLE {s}.limits_meta"
                " (singleton boolean PRIMARY KEY DEFAULT true, version integer NOT NULL)"
            ).format(s=s)
        )
        connection.execute(
            sql.SQL("INSERT INTO {s}.limits_meta (version) VALUES (%s)").format(s=s),
            (LIMITS_SCHEMA_VERSION + 1,),
        )
    with pytest.raises(CoordinationError, match="newer than"):
        async with SharedAccountLimits(DSN, account="a", schema=pg_schema):
            pass


async def test_requests_wait_out_a_terminated_connection(pg_schema: str) -> None:
    """A reservation whose connection the server killed is retried on a new one, not lost."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, requests_per_minute=6000) as limits:
        await limits.requests.wait_turn("poll")
        (killed,) = _fetch(
            pg_schema,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            f"hailuo-limits-{limits.holder}",
        )
        assert killed >= 1
        before = limits.round_trips
        assert await limits.requests.wait_turn("poll") is not None
        assert limits.round_trips > before


async def test_a_round_trip_cancelled_midway_leaves_the_limits_usable(pg_schema: str) -> None:
    """A reservation cancelled while the server runs it costs its connection, nothing more."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with _limits(pg_schema, account, requests_per_minute=6000) as limits:
        await limits.requests.wait_turn("poll")
        with admin() as blocker:
            # Hold the account's row: the next reservation waits for it, inside the server.
            with blocker.transaction():
                blocker.execute(
                    sql.SQL(
                        "SELECT 1 FROM {s}.account_limits WHERE account = %s FOR UPDATE"
                    ).format(s=sql.Identifier(pg_schema)),
                    (account,),
                )
                before = limits.round_trips
                with anyio.move_on_after(0.5) as scope:
                    await limits.requests.wait_turn("poll")
                assert scope.cancelled_caught
                assert limits.round_trips == before + 1  # it was sent, and is still waiting
        with anyio.fail_after(30):
            assert await limits.requests.wait_turn("poll") is not None
            assert await limits.active_jobs.try_acquire()


# The interval between asks and the lease are far longer than any test: a place that
# arrives in time arrived by the wake-up under test, not by a later ask.
_NEVER = 3600.0


async def test_a_waiter_asks_again_when_its_process_releases_a_place(pg_schema: str) -> None:
    """A waiter takes the place its process frees at once, in one round trip with the release."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"max_active_jobs": 1, "wait_poll_interval": _NEVER}
    async with _limits(pg_schema, account, lease=_NEVER, **options) as limits:
        jobs = limits.active_jobs
        await jobs.acquire()  # the account's only place: the cap is known to be full
        before = limits.round_trips
        granted = anyio.Event()

        async def wait_for_a_place() -> None:
            await jobs.acquire()
            granted.set()

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_a_place)
            await wait_all_tasks_blocked()
            assert not granted.is_set()
            assert limits.round_trips == before  # a full cap is not asked again
            jobs.release(submitted=False)
            with anyio.fail_after(60):
                await granted.wait()
        assert jobs.active == 1
        assert limits.round_trips == before + 1  # the ask carried the release
        assert _holder_active(pg_schema, account, limits.holder) == 1


async def test_a_release_reaches_the_database_after_an_ask(pg_schema: str) -> None:
    """A place released after an ask is sent at once: another process gets it, not the lease."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"max_active_jobs": 1, "lease": _NEVER}
    async with (
        _limits(pg_schema, account, **options) as first,
        _limits(pg_schema, account, **options) as second,
    ):
        await first.active_jobs.acquire()  # an ask, then a release with nobody waiting here
        assert not await second.active_jobs.try_acquire()
        before = first.round_trips
        first.active_jobs.release(submitted=False)
        with anyio.fail_after(60):
            await second.active_jobs.acquire()
        assert first.round_trips == before + 1  # the release's own synchronisation
        assert _holder_active(pg_schema, account, first.holder) == 0
        assert _holder_active(pg_schema, account, second.holder) == 1


async def test_a_known_cap_sends_submissions_with_the_next_sync(pg_schema: str) -> None:
    """With a known cap, submissions and completions cost no round trip of their own."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"max_active_jobs": 2, "lease": _NEVER}
    async with _limits(pg_schema, account, **options) as limits:
        jobs = limits.active_jobs
        await jobs.acquire()
        jobs.on_submitted()
        jobs.on_completed()
        before = limits.round_trips
        jobs.release(submitted=True)
        with anyio.fail_after(60):
            while _holder_active(pg_schema, account, limits.holder) != 0:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)  # room for a stray synchronisation to show in the count
        assert limits.round_trips == before + 1
        (on_server,) = _fetch(
            pg_schema,
            "SELECT on_server FROM {s}.account_holders WHERE account = %s AND holder = %s",
            account,
            limits.holder,
        )
        assert on_server == 0


# -- helpers -------------------------------------------------------------------------------


def _limits(schema: str, account: str, **options: Any) -> SharedAccountLimits:
    options.setdefault("wait_poll_interval", 0.05)
    return SharedAccountLimits(DSN, account=account, schema=schema, **options)


def _fetch(schema: str, query: str, *params: object) -> tuple[Any, ...]:
    """The first row of ``query``, with ``{s}`` standing for the test's schema."""
    with admin() as connection:
        row = connection.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchone()
    assert row is not None
    return row


async def _asked_since(limits: SharedAccountLimits, round_trips: int) -> None:
    """Wait until ``limits`` has made a round trip since it had made ``round_trips``."""
    with anyio.fail_after(60):
        while limits.round_trips == round_trips:  # noqa: ASYNC110 - no event for a round trip
            await anyio.sleep(0.01)


def _expires_at(schema: str, account: str, holder: str) -> dt.datetime:
    """When ``holder``'s lease on its places runs out, on the database's clock."""
    (expires_at,) = _fetch(
        schema,
        "SELECT expires_at FROM {s}.account_holders WHERE account = %s AND holder = %s",
        account,
        holder,
    )
    assert isinstance(expires_at, dt.datetime)
    return expires_at


def _rate(schema: str, account: str) -> float | None:
    (rate,) = _fetch(
        schema, "SELECT rate * 60 / rate_window FROM {s}.account_limits WHERE account = %s", account
    )
    return None if rate is None else float(rate)


def _holder_active(schema: str, account: str, holder: str) -> int:
    (active,) = _fetch(
        schema,
        "SELECT active FROM {s}.account_holders WHERE account = %s AND holder = %s",
        account,
        holder,
    )
    return int(active)
