"""Job keys: what names one job of a batch across restarts of the process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._decoding import request_to_json
from .._exceptions import InvalidRequestError
from .._models import VideoRequest

__all__ = ["MAX_KEY_CHARS", "JobKeyer", "JobSpec", "job_keys", "job_specs"]

MAX_KEY_CHARS = 512


@attrs.frozen(kw_only=True)
class JobSpec:
    """One job to record: its key, its place in the batch, its request (the library's JSON
    form, :func:`~hailuo_async._decoding.request_to_json`) and the request's fingerprint."""

    key: str
    index: int
    payload: Mapping[str, Any] = attrs.field(repr=False)
    fingerprint: str


def _check_key(key: object, index: int) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidRequestError("keys", f"key of request {index} must be a non-empty string")
    if len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidRequestError(
            "keys", f"key of request {index} must be at most {MAX_KEY_CHARS} printable characters"
        )
    return key


class JobKeyer:
    """Keys one request at a time, as a lazily read batch needs; the same keys as job_keys."""

    def __init__(self) -> None:
        self._occurrences: dict[str, int] = {}
        self._seen: set[str] = set()
        self._next_index = 0

    def spec(self, request: VideoRequest, key: str | None = None) -> JobSpec:
        """The next request's spec (its index is its place in the order of the calls)."""
        index = self._next_index
        if not isinstance(request, VideoRequest):
            raise TypeError(f"request {index} is a {type(request).__name__}, not a VideoRequest")
        fingerprint = request.fingerprint
        if key is None:
            # The same request twice in a batch is two paid jobs, so it needs two keys; the
            # occurrence number keeps them apart and stays stable while the order is kept.
            occurrence = self._occurrences.get(fingerprint, 0) + 1
            self._occurrences[fingerprint] = occurrence
            key = f"{fingerprint}#{occurrence}"
        else:
            key = _check_key(key, index)
        if key in self._seen:
            raise InvalidRequestError("keys", f"key {key!r} is given to more than one request")
        self._seen.add(key)
        self._next_index = index + 1
        return JobSpec(
            key=key, index=index, payload=request_to_json(request), fingerprint=fingerprint
        )


def job_specs(
    requests: Sequence[VideoRequest], keys: Sequence[str | None] | None = None
) -> list[JobSpec]:
    """What :meth:`JobStore.record` takes for a batch, keyed as :func:`job_keys` says."""
    if keys is not None and len(keys) != len(requests):
        raise InvalidRequestError("keys", f"has {len(keys)} entries for {len(requests)} requests")
    keyer = JobKeyer()
    return [
        keyer.spec(request, None if keys is None else keys[index])
        for index, request in enumerate(requests)
    ]


def job_keys(
    requests: Sequence[VideoRequest], keys: Sequence[str | None] | None = None
) -> list[str]:
    """The key of each request: the caller's key if given, else ``f"{fingerprint}#{n}"``.

    ``n`` counts the earlier requests of the batch with the same fingerprint (from 1), so a
    request asked twice is two jobs. Keys must be unique within the batch.
    """
    return [spec.key for spec in job_specs(requests, keys)]
