"""What a batch reads: its items (a request, or a ``(key, request)`` pair), lazily."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

import anyio.lowlevel

from .._exceptions import InvalidRequestError
from .._models import VideoRequest

__all__ = ["BatchItem", "RequestSource", "as_request", "lazily"]

BatchItem = VideoRequest | tuple[str, VideoRequest]
"""One item of a batch's source: a request, or a ``(key, request)`` pair for the journal."""
RequestSource = Iterable[BatchItem] | AsyncIterable[BatchItem]
"""What ``generate_many`` reads lazily: an iterable or async iterable of batch items."""
# Items of a synchronous source read between two turns given to the batch's other tasks.
_YIELD_EVERY = 16


def as_request(index: int, item: object) -> tuple[VideoRequest, str | None]:
    """The item's request and key (None for a bare request); a wrong item is refused."""
    if isinstance(item, VideoRequest):
        return item, None
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], VideoRequest)
    ):
        return item[1], item[0]
    raise InvalidRequestError(
        "requests",
        f"item {index} is a {type(item).__name__}, not a VideoRequest or a (key, VideoRequest)",
    )


async def lazily(requests: RequestSource) -> AsyncIterator[object]:
    """The source's items one by one, sync or async alike."""
    # Typed as object: callers' iterables are checked item by item, not trusted.
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for number, request in enumerate(requests, 1):
            yield request
            # Let the batch's other tasks run during a long synchronous source. Not after
            # every item: the producer mostly waits for a place anyway, and a turn of the
            # loop per job is a cost every job pays.
            if number % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
