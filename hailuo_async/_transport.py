"""Send one HTTP request with aiohttp; every aiohttp error becomes one of ours, here alone."""

from __future__ import annotations

import asyncio
import io
import logging
import platform
import sys
import time
from collections.abc import Mapping
from typing import Protocol

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver
from yarl import URL

from ._checks import Number
from ._exceptions import APIConnectionError, APIResponseValidationError, APITimeoutError
from ._version import __version__

__all__ = [
    "USER_AGENT",
    "HTTPTransport",
    "Response",
    "TCPTransport",
    "Timeouts",
    "Transport",
    "map_transport_error",
]

logger = logging.getLogger("hailuo_async")
# Request bodies up to this size are handed to aiohttp as bytes (it warns from 1 MiB).
_RAW_BODY_LIMIT = 64 * 1024

# asyncio's socket transports read into a fresh 256 KiB bytes on every read. glibc's malloc
# serves a block that large with mmap (then mremap and munmap: three system calls and a page
# fault per read, a quarter of a request's cost on loopback) until a block over its mmap
# threshold has been freed once; it then raises the threshold to that block's size
# (mallopt(3): the dynamic mmap threshold) and serves such reads from the heap. Whether a
# process has done so is an accident of what it ran before: one such block, freed as the
# session opens, makes it so.
_READ_BLOCK = 512 * 1024

USER_AGENT = (
    f"hailuo-async/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)


_seconds = Number(above=True, optional=True)


@attrs.frozen
class Timeouts:
    """Seconds to wait: for a whole API request, for a connection to open, for a video's bytes.

    ``total`` bounds each API request; ``connect`` each connection (to the API or to the
    storage host); ``read`` the silence a video download may meet between two reads;
    ``download`` a whole download, every attempt and URL refresh included (600 s: a few
    minutes for a large video on a slow link, and a storage host that trickles bytes cannot
    hold a job for ever; None for no bound).
    """

    total: float | None = attrs.field(default=60.0, validator=_seconds)
    connect: float | None = attrs.field(default=10.0, validator=_seconds)
    read: float | None = attrs.field(default=60.0, validator=_seconds)
    download: float | None = attrs.field(default=600.0, validator=_seconds)


class HTTPTransport(Protocol):
    """Where the client's connections come from: what ``HailuoClient(transport=...)`` takes.

    The client asks for a connection pool when it opens its HTTP session (for the API's
    requests, the only ones that carry the key) and for each download (for the storage
    host). :class:`TCPTransport` (the default) opens TCP connections;
    ``FakeHailuoServer.transport()`` reaches the fake service in memory, with no socket.
    """

    def connector(
        self, *, limit: int, resolver: AbstractResolver | None = None
    ) -> aiohttp.BaseConnector:
        """A new aiohttp connector holding at most ``limit`` connections (0: no limit).

        A transport that looks host names up must do so with ``resolver`` when one is given:
        it is how a download refuses a storage host on an address it must not reach.
        """
        ...


class TCPTransport:
    """TCP connections (TLS for https), as aiohttp's :class:`~aiohttp.TCPConnector` opens them."""

    def connector(
        self, *, limit: int, resolver: AbstractResolver | None = None
    ) -> aiohttp.BaseConnector:
        """A new connection pool of at most ``limit`` connections, any number per host."""
        return aiohttp.TCPConnector(limit=limit, limit_per_host=0, resolver=resolver)

    def __repr__(self) -> str:
        return "TCPTransport()"


@attrs.define
class Response:
    """A complete answer: status, headers and the whole (size-capped) body.

    Not frozen, though nothing changes one: a frozen class's __init__ costs a bound
    ``object.__setattr__`` per field, on every request.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


def map_transport_error(
    exc: BaseException, *, method: str, url: str, first_contact: bool = False
) -> APIConnectionError:
    """The library's error for an aiohttp or socket failure.

    ``request_sent`` is False only where the request cannot have reached the service: the
    connection never opened, or opening it timed out. ``first_contact``: the service had
    not answered this client yet (kept on the errors of connections that never opened).
    """
    where = f"{method} {url}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(
            f"timed out connecting for {where}",
            request_sent=False,
            first_contact=first_contact,
            method=method,
            url=url,
        )
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return APITimeoutError(f"no answer in time to {where}", method=method, url=url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(
            f"could not connect for {where}: {exc.os_error.strerror or exc.os_error}",
            request_sent=False,
            first_contact=first_contact,
            method=method,
            url=url,
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return APIConnectionError(
            f"invalid URL for {where}",
            request_sent=False,
            first_contact=first_contact,
            method=method,
            url=url,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return APIConnectionError(
            f"the server closed the connection during {where}", method=method, url=url
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(f"the answer to {where} was cut short", method=method, url=url)
    reason = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        reason = f"{reason}: {exc.strerror}"
    return APIConnectionError(
        f"connection failed during {where} ({reason})", method=method, url=url
    )


def _serve_reads_from_the_heap() -> None:
    """Raise glibc's mmap threshold above a socket read's buffer (see ``_READ_BLOCK``)."""
    if sys.platform.startswith("linux"):
        bytes(_READ_BLOCK)  # made and freed at once; calloc'd, so no page is touched


def _shown(url: str | URL) -> str:
    """The URL as errors show it: a made URL's query is left out, as ``params`` are."""
    return url if isinstance(url, str) else str(url.with_query(None))


class Transport:
    """One aiohttp ClientSession (one connection pool) and the rules for reading answers."""

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        max_connections: int,
        max_response_bytes: int,
        connections: HTTPTransport | None = None,
    ) -> None:
        self._connections = connections or TCPTransport()
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self.answered = False
        """True once the service has answered a request (any status)."""

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, opened on first use inside the running event loop."""
        if self._session is None or self._session.closed:
            _serve_reads_from_the_heap()
            self._session = aiohttp.ClientSession(
                connector=self._connections.connector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.total, sock_connect=self._timeouts.connect
                ),
                headers={"User-Agent": USER_AGENT},
                # Credentials are attached per request, never to the session, so nothing
                # the session sends elsewhere (downloads, redirects) can carry them.
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def send(
        self,
        method: str,
        url: str | URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        *,
        log_path: str,
        attempt: int = 1,
    ) -> Response:
        """Send a request and read its whole answer, or raise APIConnectionError.

        ``url`` may be a made :class:`yarl.URL` (aiohttp then parses nothing); its query is
        left out of errors, as ``params`` are.
        """
        # Asked once: no clock read nor logging call per request unless it is logged.
        started = time.monotonic() if logger.isEnabledFor(logging.DEBUG) else None
        status: int | str = "error"
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                # A BytesIO is sent in chunks; large raw bytes make aiohttp warn (and block).
                # Small ones go as they are: wrapping each costs more than sending it.
                data=body if body is None or len(body) <= _RAW_BODY_LIMIT else io.BytesIO(body),
                params=params,
                allow_redirects=False,
            ) as response:
                status = response.status
                self.answered = True
                declared = response.content_length
                if declared is not None and declared <= self._max_response_bytes:
                    # aiohttp reads no more than a declared length: the cap holds uncounted.
                    payload = await response.read()
                else:
                    payload = await self._read_capped(response, method=method, url=url)
                return Response(
                    status=status,
                    # Already a read-only view, of headers that no longer change: no copy.
                    headers=response.headers,
                    body=payload,
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise map_transport_error(
                exc, method=method, url=_shown(url), first_contact=not self.answered
            ) from exc
        finally:
            if started is not None:
                logger.debug(
                    "%s %s -> %s (attempt %d, %.3f s)",
                    method,
                    log_path,
                    status,
                    attempt,
                    time.monotonic() - started,
                )

    async def _read_capped(
        self, response: aiohttp.ClientResponse, *, method: str, url: str | URL
    ) -> bytes:
        # What send() does not read at once: no declared length, or one over the limit.
        limit = self._max_response_bytes
        declared = response.content_length
        url = _shown(url)
        # An error status says what went wrong by itself: its oversized body is cut, not refused.
        is_error = response.status >= 400
        if declared is not None and declared > limit and not is_error:
            response.close()
            raise APIResponseValidationError(
                f"the answer to {method} {url} declares {declared} bytes; the limit is {limit}",
                status_code=response.status,
                method=method,
                url=url,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                response.close()
                if is_error:
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    break
                raise APIResponseValidationError(
                    f"the answer to {method} {url} is over the limit of {limit} bytes",
                    status_code=response.status,
                    method=method,
                    url=url,
                )
            chunks.append(chunk)
        return b"".join(chunks)
