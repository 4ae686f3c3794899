"""InProcessTransport: HTTP to the fake's aiohttp applications through memory, no socket.

A client given ``transport=server.transport()`` opens each connection as a pair of in-memory
ends: what the client's aiohttp writes, the fake's aiohttp server reads, and back. Both
sides still speak HTTP/1.1 byte for byte (headers, chunked bodies, keep-alive), so a
request cut short, a reset connection or a read that never comes behaves as over a socket,
and the client's error mapping sees the same aiohttp errors. Only the kernel is left out:
no port is bound, no connection is accepted, nothing can reach another host.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

__all__ = ["InProcessTransport", "ServerEnd"]

ServerEnd = Callable[[], "asyncio.Protocol | None"]
"""Makes the server's protocol for a new connection (an aiohttp ``web.Server`` is one), or
None when the server has stopped (the connection is then refused)."""

_EOF = object()  # the peer closed its end: the end of the stream


class _End(asyncio.Transport):
    """One end of an in-memory connection: what it writes, the other end's protocol reads.

    Data is handed over on the next turn of the event loop, in order, as a socket's would
    be; ``pause_reading`` holds it back until ``resume_reading``. ``close`` gives the peer
    the end of the stream, ``abort`` a reset.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # No socket, no peer address: aiohttp then skips TCP options and reports no peer.
        super().__init__({"socket": None, "peername": None, "sockname": None})
        self._loop = loop
        self._protocol: asyncio.BaseProtocol | None = None
        self._peer: _End | None = None
        self._inbox: deque[object] = deque()
        self._reading = True
        self._closing = False
        self._lost = False

    def attach(self, protocol: asyncio.BaseProtocol, peer: _End) -> None:
        """Give this end the protocol that reads from it and the end it writes to."""
        self._protocol = protocol
        self._peer = peer

    # -- asyncio.Transport ---------------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        # As on a socket whose peer is gone, bytes written after the end are dropped.
        if data and not self._closing and self._peer is not None:
            self._peer._receive(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._closing and self._peer is not None:
            self._peer._receive(_EOF)

    def get_write_buffer_size(self) -> int:
        return 0  # handed over at once: nothing waits to be sent

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # nothing is buffered for sending

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            if self._inbox:
                self._loop.call_soon(self._read_inbox)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._peer is not None:
            self._peer._receive(_EOF)
        self._loop.call_soon(self._lose, None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        if self._peer is not None:
            self._peer._receive(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
        self._loop.call_soon(self._lose, None)

    # -- what the peer sends -------------------------------------------------------------

    def _receive(self, item: object) -> None:
        if self._lost:
            return
        self._inbox.append(item)
        if len(self._inbox) == 1 and self._reading:
            self._loop.call_soon(self._read_inbox)

    def _read_inbox(self) -> None:
        protocol = self._protocol
        assert isinstance(protocol, asyncio.Protocol)
        while self._inbox and self._reading and not self._lost:
            item = self._inbox.popleft()
            if isinstance(item, bytes):
                protocol.data_received(item)
            elif isinstance(item, Exception):
                self._closing = True
                self._lose(item)
            elif not protocol.eof_received():
                self.close()  # what asyncio's socket transports do after an end of stream

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._inbox.clear()
        if self._protocol is not None:
            self._protocol.connection_lost(exc)


def _connect(
    loop: asyncio.AbstractEventLoop, client: asyncio.Protocol, server: asyncio.Protocol
) -> None:
    """Join two protocols by a pair of in-memory ends and tell each it is connected."""
    client_end, server_end = _End(loop), _End(loop)
    client_end.attach(client, server_end)
    server_end.attach(server, client_end)
    server.connection_made(server_end)
    client.connection_made(client_end)


class _InProcessConnector(aiohttp.BaseConnector):
    """An aiohttp connector whose connections go to in-process servers, by host and port."""

    def __init__(self, hosts: Mapping[tuple[str, int], ServerEnd], *, limit: int) -> None:
        super().__init__(limit=limit, limit_per_host=0)
        self._hosts = hosts

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        make_server = self._hosts.get((req.host, req.port or 0))
        server = make_server() if make_server is not None else None
        if server is None:
            refused = ConnectionRefusedError(
                errno.ECONNREFUSED, f"nothing serves {req.host}:{req.port} in this process"
            )
            raise aiohttp.ClientConnectorError(req.connection_key, refused)
        client = self._factory()
        _connect(self._loop, client, server)
        return client


class InProcessTransport:
    """Connections to servers running in this process, through memory (an ``HTTPTransport``).

    ``hosts`` maps ``(host, port)`` to what makes a server's end of a new connection (an
    aiohttp ``web.Server``, as ``AppRunner.server`` gives after ``setup()``). A connection to
    any other host is refused. :meth:`FakeHailuoServer.transport` makes one for the fake's
    API and storage hosts.
    """

    def __init__(self, hosts: Mapping[tuple[str, int], ServerEnd]) -> None:
        self._hosts = dict(hosts)

    def connector(
        self, *, limit: int, resolver: AbstractResolver | None = None
    ) -> aiohttp.BaseConnector:
        """A new connection pool of at most ``limit`` connections (0: no limit).

        ``resolver`` is not asked: no host name is looked up, and only the servers given
        are reached.
        """
        return _InProcessConnector(self._hosts, limit=limit)

    def __repr__(self) -> str:
        hosts = ", ".join(f"{host}:{port}" for host, port in self._hosts)
        return f"<InProcessTransport {hosts}>"
