"""Counters the fake keeps so tests and benchmarks can see what a client really did."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import attrs

__all__ = ["Stats", "bump"]

_K = TypeVar("_K")


@attrs.define
class Stats:
    """Live counters of a FakeHailuoServer; `snapshot()` gives a detached copy.

    Dicts count by key and start empty; a key appears once its count is non-zero.
    """

    submission_attempts: int = 0
    """Every POST that reached the submit endpoint, whatever its answer."""
    submissions_accepted: int = 0
    """Tasks created (each a paid job), including those whose response was lost."""
    polls_total: int = 0
    """Every GET that reached the task-result endpoint, whatever its answer."""
    polls_by_task: dict[str, int] = attrs.Factory(dict)
    """Authenticated task-result GETs naming a known task, per task id."""
    retrieves_total: int = 0
    """Every GET that reached MiniMax's files/retrieve endpoint, whatever its answer."""
    retrieves_by_task: dict[str, int] = attrs.Factory(dict)
    """Authenticated retrieves naming a known task's file, per task id."""
    requests_by_second: dict[int, int] = attrs.Factory(dict)
    """Every API request (any endpoint, any answer) by the service second it arrived in,
    counted from the server's start: the request rate as the service saw it."""
    busiest_window: int = 0
    """The most requests of one key admitted within one sliding window of
    ``requests_per_minute`` (0 when no such limit is set): how much of the budget was spent."""
    rate_limited: dict[str, int] = attrs.Factory(dict)
    """Rate-limit answers by cause: "rate_window", "active_cap", "injected" or "burst"
    (429s on the gateway; base_resp 1002, 2045 or 2056 on MiniMax)."""
    error_codes: dict[int, int] = attrs.Factory(dict)
    """MiniMax answers by their non-zero ``base_resp.status_code`` (rate limits included)."""
    faults_injected: dict[str, int] = attrs.Factory(dict)
    """Injected API faults by kind (the `Faults` field names)."""
    storage_faults_injected: dict[str, int] = attrs.Factory(dict)
    """Injected download faults by kind (the `StorageFaults` field names)."""
    responses_by_status: dict[int, int] = attrs.Factory(dict)
    """API responses by HTTP status; dropped connections are not responses."""
    rejected_by_field: dict[str, int] = attrs.Factory(dict)
    """400 and 413 answers by the field they name ("body" for the body as a whole)."""
    task_ids: list[str] = attrs.Factory(list)
    """Every task created, in order."""
    lost_task_ids: list[str] = attrs.Factory(list)
    """Tasks created whose id never reached the client (lost, malformed or abandoned)."""
    task_ids_by_body: dict[str, list[str]] = attrs.Factory(dict)
    """Task ids per sha256 of the canonical submit body, to spot repeated submissions."""
    tasks_terminal: int = 0
    """Tasks whose schedule has reached SUCCEED or FAILED."""
    storage_requests: int = 0
    """Every request to the storage host."""
    storage_downloads: int = 0
    """Downloads answered 200 (faulty ones included)."""
    storage_denied: int = 0
    """403s from the storage host: expired or unknown URL, or a refused Authorization header."""
    storage_authorization_headers: list[str] = attrs.Factory(list)
    """The Authorization header of every storage request that carried one (should stay empty)."""
    webhook_attempts: int = 0
    """Every webhook POST the fake made, retries and duplicates included."""
    webhooks_sent: int = 0
    """Webhook deliveries the receiver acknowledged with a 2xx (a duplicate counts twice)."""
    webhooks_failed: int = 0
    """Webhook deliveries given up after every retry failed."""
    webhooks_dropped: int = 0
    """Webhook events silently never sent (the `webhook_drop` knob)."""
    webhooks_duplicated: int = 0
    """Webhook events delivered twice (the `webhook_duplicate` knob)."""
    challenges_sent: int = 0
    """MiniMax callback challenges POSTed (one per task submitted with a callback_url)."""
    challenges_failed: int = 0
    """Challenges not echoed back in time: those tasks get no callbacks."""

    @property
    def api_requests(self) -> int:
        """Every request that reached an API endpoint: submits, polls and retrieves."""
        return self.submission_attempts + self.polls_total + self.retrieves_total

    @property
    def never_polled_task_ids(self) -> list[str]:
        """Tasks created but never asked about."""
        return [task_id for task_id in self.task_ids if task_id not in self.polls_by_task]

    @property
    def duplicate_bodies(self) -> dict[str, list[str]]:
        """Body hashes submitted (and accepted) more than once, with their task ids."""
        return {digest: ids for digest, ids in self.task_ids_by_body.items() if len(ids) > 1}

    @property
    def duplicate_submissions(self) -> int:
        """Accepted submissions that repeat an earlier body: possible double-paid jobs."""
        return sum(len(ids) - 1 for ids in self.task_ids_by_body.values())

    @property
    def rate_limited_total(self) -> int:
        """All rate-limit answers served, whatever the cause."""
        return sum(self.rate_limited.values())

    def snapshot(self) -> Stats:
        """A deep copy that later requests do not change."""
        return copy.deepcopy(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, the derived properties included."""
        data = attrs.asdict(self)
        for name in ("responses_by_status", "requests_by_second", "error_codes"):
            data[name] = {str(k): v for k, v in data[name].items()}
        data["never_polled_task_ids"] = self.never_polled_task_ids
        data["duplicate_bodies"] = self.duplicate_bodies
        data["duplicate_submissions"] = self.duplicate_submissions
        data["rate_limited_total"] = self.rate_limited_total
        data["api_requests"] = self.api_requests
        return data


def bump(counter: dict[_K, int], key: _K) -> None:
    """Add one to `counter[key]`."""
    counter[key] = counter.get(key, 0) + 1
