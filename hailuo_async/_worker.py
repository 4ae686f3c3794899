"""A batch worker's settings: who it is, how long its leases last, how many jobs it claims.

With a shared journal (PostgreSQL), ``generate_many`` and ``client.work`` run the batch as
one worker among any number: instead of reading requests and submitting them itself, the
batch's producer claims jobs under leases (as places among the active jobs free up), and a
heartbeat task keeps the leases alive. The rest (submitter, watcher, finishing) is the
batch's own machinery (:mod:`._batch`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable

import attrs

from ._checks import Number, field_name
from ._exceptions import InvalidRequestError

__all__ = ["LeaseClock", "WorkerSettings", "default_worker_id"]


def default_worker_id() -> str:
    """A name no other worker has: the host, the process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _check_worker_id(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise InvalidRequestError(
            field_name(type(instance), attribute.name), "must be a non-empty printable string"
        )


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """How one worker takes part in a shared batch.

    ``lease`` seconds: how long a claimed job stays this worker's without a heartbeat (one
    every ``lease / 3``); a dead worker's jobs are taken over after it. A client with
    ``coordination`` uses at most half its coordination lease (see :meth:`within`).
    ``claim``: the most jobs claimed at once. ``idle_poll``: seconds between claims when
    nothing is claimable (jobs other workers hold may come free when their lease runs out).
    """

    worker_id: str = attrs.field(factory=default_worker_id, validator=_check_worker_id)
    lease: float = attrs.field(default=30.0, validator=Number(above=True))
    claim: int = attrs.field(default=10, validator=Number(low=1, whole=True))
    idle_poll: float = attrs.field(default=1.0, validator=Number(above=True))

    def within(self, places_lease: float) -> WorkerSettings:
        """These settings with a lease of at most half ``places_lease`` (the coordination's).

        A worker stopped past its leases loses its active-job places and its jobs. Its jobs
        must come free first: the worker that gets the places then takes over the tasks
        still running (counting them) instead of submitting new ones beyond the shared cap.
        The places' lease is renewed at least every third of it, so it runs out no sooner
        than two thirds of it after the stop; half leaves room for a slow round trip.
        """
        return attrs.evolve(self, lease=min(self.lease, places_lease / 2))

    @property
    def heartbeat_every(self) -> float:
        """Seconds between heartbeats: three per lease, so one lost beat loses no lease."""
        return self.lease / 3


class LeaseClock:
    """Until when each of a worker's leases surely holds, by this process's monotonic clock.

    The database's clock decides a lease; this one only gives a lower bound of it, with no
    round trip: a lease asked for (claimed or renewed) at local time ``t`` lasts at least
    until ``t + lease``. A renewal extends only the leases still live when it ran: those
    whose bound had not passed when its answer came. A process stopped (SIGSTOP, a frozen
    VM) past that bound finds it passed when it wakes, before it sends anything.
    """

    def __init__(self, lease: float) -> None:
        self.lease = lease
        # Leases this close to their end are not relied on: a POST must land while it holds.
        self.margin = lease / 4
        self._until: dict[str, float] = {}

    def claimed(self, keys: Iterable[str], asked_at: float) -> None:
        """Leases taken on ``keys`` by a claim sent at ``asked_at``."""
        until = asked_at + self.lease
        for key in keys:
            self._until[key] = until

    def renewed(self, asked_at: float, answered_at: float) -> None:
        """A heartbeat sent at ``asked_at`` and answered at ``answered_at`` succeeded."""
        until = asked_at + self.lease
        for key, known in self._until.items():
            if answered_at < known:
                self._until[key] = max(known, until)

    def holds(self, key: str) -> bool:
        """True while the lease on ``key`` surely holds, with the margin to spare."""
        return time.monotonic() < self._until.get(key, 0.0) - self.margin
