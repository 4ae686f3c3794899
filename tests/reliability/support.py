"""Shared helpers of the reliability suite: figures, log capture, secret scans, sockets, tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from clientutil import serve

try:
    import psutil  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # pragma: no cover (the test extra does not require it)
    psutil = None

__all__ = [
    "Figures",
    "LogCapture",
    "attempt_histogram",
    "canary",
    "capture_logs",
    "client_tasks",
    "count_in",
    "error_texts",
    "knobs",
    "scaled",
    "serve",
    "sockets_to",
    "wait_for_no_sockets",
]

# Set by conftest.py before the test modules are imported: the sizes of a run depend on it.
knobs: dict[str, bool] = {"soak": False}

LOGGERS = ("hailuo_async", "aiohttp")
_ATTEMPT_LINE = re.compile(r"^(GET|POST) (\S+) -> (\S+) \(attempt (\d+), ")


def scaled(fast: int, soak: int) -> int:
    """``soak`` under ``--soak``, else ``fast``."""
    return soak if knobs["soak"] else fast


@attrs.define
class Figures:
    """Figures each test reports, by section, printed at the end of the session."""

    sections: dict[str, dict[str, object]] = attrs.Factory(dict)

    def record(self, section: str, values: Mapping[str, object], *, quiet: bool = False) -> None:
        """Add (or overwrite) figures of ``section``; print them (``pytest -s``) unless quiet."""
        self.sections.setdefault(section, {}).update(values)
        if quiet:
            return
        for name, value in values.items():
            print(f"[{section}] {name}: {value}")

    def lines(self) -> Iterator[str]:
        """The figures as aligned text lines."""
        for section, values in sorted(self.sections.items()):
            yield section
            for name, value in values.items():
                yield f"    {name:<58} {value}"


def canary() -> str:
    """A fresh API key that must never show up anywhere it should not."""
    return f"sk-canary-{secrets.token_hex(12)}"


class LogCapture(logging.Handler):
    """Keeps every record of the library's and aiohttp's loggers, at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        """Every text a record carries: message, raw args, and a formatted exception."""
        formatter = logging.Formatter()
        for record in self.records:
            yield record.getMessage()
            yield repr(record.args)
            if record.exc_info:
                yield formatter.formatException(record.exc_info)

    def messages(self, logger: str) -> list[str]:
        """The messages of one logger (and its children)."""
        return [
            r.getMessage()
            for r in self.records
            if r.name == logger or r.name.startswith(logger + ".")
        ]


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Capture DEBUG records of ``hailuo_async`` and ``aiohttp`` for the block."""
    handler = LogCapture()
    saved: list[tuple[logging.Logger, int]] = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def attempt_histogram(messages: Iterable[str], method: str) -> dict[int, int]:
    """Calls of ``method`` that took exactly N attempts, from the transport's DEBUG lines.

    Every attempt logs "attempt N"; a call that made k attempts logged 1..k, so the calls
    with exactly k attempts are the lines for k less the lines for k + 1.
    """
    lines: Counter[int] = Counter()
    for message in messages:
        match = _ATTEMPT_LINE.match(message)
        if match is not None and match.group(1) == method:
            lines[int(match.group(4))] += 1
    return {k: lines[k] - lines[k + 1] for k in sorted(lines) if lines[k] - lines[k + 1]}


def error_texts(error: BaseException) -> Iterator[str]:
    """Every text an error exposes: str, repr, attributes, and the same along its chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(vars(current))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        grouped = getattr(current, "exceptions", None)
        if isinstance(grouped, tuple):
            pending.extend(e for e in grouped if isinstance(e, BaseException))


def count_in(secret: str, texts: Iterable[Any]) -> int:
    """How many times ``secret`` appears in ``texts`` (each turned into text with str)."""
    return sum(str(text).count(secret) for text in texts)


_SERVER_TASKS = (
    "RequestHandler",  # aiohttp's connection handlers, of the fakes
    "Event.wait",  # asyncio.wait_for(closing.wait()) of the fake's slow answers
)


def client_tasks() -> set[asyncio.Task[Any]]:
    """Tasks on the loop, less the fake servers' own (the library makes no such task)."""
    return {
        task
        for task in asyncio.all_tasks()
        if not any(name in getattr(task.get_coro(), "__qualname__", "") for name in _SERVER_TASKS)
    }


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def sockets_to(*urls: str) -> int:
    """This process's open TCP sockets connected to the hosts of ``urls`` (client side).

    From psutil when installed, else from ``/proc`` (Linux); skips the test elsewhere.
    """
    ports = {_port(url) for url in urls}
    if psutil is not None:
        connections = psutil.Process().net_connections(kind="tcp")
        return sum(1 for conn in connections if conn.raddr and conn.raddr.port in ports)
    return sum(1 for port in _proc_remote_ports() if port in ports)


def _proc_remote_ports() -> list[int]:
    """Remote ports of this process's TCP sockets, read from /proc/self/fd and /proc/net/tcp*."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("counting sockets needs psutil or /proc")
    inodes = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


async def wait_for_no_sockets(*urls: str, within: float = 2.0) -> int:
    """Give closed sockets a moment to be released; return how many are still open."""
    with anyio.move_on_after(within):
        while sockets_to(*urls):  # noqa: ASYNC110 (the OS is polled: no event to wait on)
            await anyio.sleep(0.01)
    return sockets_to(*urls)
