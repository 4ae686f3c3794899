"""A worker's local bound on its leases: what it may rely on before a POST leaves, no round trip."""

from __future__ import annotations

import time

from hailuo_async._worker import LeaseClock

LEASE = 3600.0  # far longer than the test: only the times given to the clock matter


def test_a_claim_holds_for_its_lease_less_the_margin() -> None:
    """A lease asked for now holds; one asked for a lease ago, or a margin short of it, not."""
    clock = LeaseClock(LEASE)
    now = time.monotonic()
    clock.claimed(["fresh"], now)
    clock.claimed(["old"], now - LEASE)
    clock.claimed(["in-margin"], now - LEASE + clock.margin / 2)
    assert clock.holds("fresh")
    assert not clock.holds("old")
    assert not clock.holds("in-margin")
    assert not clock.holds("never-claimed")


def test_a_heartbeat_extends_only_the_leases_still_live_when_it_answered() -> None:
    """A lease past its bound when the heartbeat's answer came is not revived by it."""
    clock = LeaseClock(LEASE)
    now = time.monotonic()
    clock.claimed(["live"], now - LEASE / 2)
    clock.claimed(["lapsed"], now - LEASE - 1)
    clock.renewed(asked_at=now, answered_at=now)
    assert clock.holds("live")
    assert not clock.holds("lapsed")
    # A heartbeat sent earlier than the last one never shortens a lease.
    clock.renewed(asked_at=now - LEASE + clock.margin / 2, answered_at=now)
    assert clock.holds("live")
