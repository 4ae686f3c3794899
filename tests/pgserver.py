"""PostgreSQL servers a fault test may break: a private cluster, and a link that can be cut.

The shared server (``pgutil.DSN``) is used by every other test and must never be restarted;
a test that restarts PostgreSQL uses a :class:`PrivateCluster` of its own, made once per
session with ``initdb`` and removed at its end. A :class:`Link` is a TCP relay to a server
that a test cuts for a few seconds, as a network that drops would.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import psycopg
import pytest
from pgutil import REQUIRED

__all__ = ["Link", "PrivateCluster", "find_bindir"]

_OS_USER = "postgres"  # PostgreSQL refuses to run as root


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, or the newest."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(  # noqa: S603 - our own fixed command
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    candidates += [Path(path) for path in found]
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """A PostgreSQL cluster of the tests' own, on a free port: stopped, started at will.

    Made with :meth:`create` (skips loudly without the binaries, or fails when
    HAILUO_REQUIRE_POSTGRES=1); :meth:`destroy` stops it and removes its directory.
    """

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "server.log"
        self.restarts = 0

    @classmethod
    def create(cls) -> PrivateCluster:
        """initdb a new cluster in a fresh directory (a few seconds) and start it."""
        bindir = find_bindir()
        if bindir is None:
            reason = "no PostgreSQL binaries (initdb, pg_ctl) found for a private cluster"
            if REQUIRED:
                pytest.fail(f"HAILUO_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
            pytest.skip(f"SKIPPING POSTGRESQL RESTART TESTS: {reason}")
        # Under /tmp, not pytest's tmp_path: the server's user must reach it, and the
        # socket's path must stay short.
        root = Path(tempfile.mkdtemp(prefix="hailuo-pg-"))
        cluster = cls(bindir, root, _free_port())
        try:
            if os.geteuid() == 0:
                shutil.chown(root, _OS_USER, _OS_USER)
            cluster._run("initdb", "-D", str(cluster.data), "--auth=trust", "-U", "postgres", "-N")
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def dsn(self, database: str = "postgres") -> str:
        """The URL of a database of the cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """True when the server answers."""
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session, ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, pause: float = 1.0, mode: str = "fast") -> None:
        """Stop the server, wait ``pause`` seconds, start it again."""
        self.stop(mode)
        time.sleep(pause)
        self.start()
        self.restarts += 1

    async def restart_async(self, pause: float = 1.0, mode: str = "fast") -> None:
        """:meth:`restart` without blocking the event loop."""
        await anyio.to_thread.run_sync(lambda: self.restart(pause, mode))

    def ensure_running(self) -> None:
        """Start the server if a test left it stopped."""
        if not self.running:
            self.start()

    def destroy(self) -> None:
        """Stop the server (if running) and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _OS_USER, "--", *command]
        result = subprocess.run(  # noqa: S603 - our own fixed command
            command, capture_output=True, text=True, check=False, cwd=self.root
        )
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):"
                f" {result.stdout}{result.stderr}\n{log}"
            )


class Link:
    """A TCP relay to a server that can be cut, or silenced: as a network that drops would.

    :meth:`cut` drops every open link (the client sees it close) and refuses new ones.
    :meth:`blackhole` silences them instead, as a firewall that starts dropping packets:
    sockets stay open and nothing more goes through, either way, for as long as the link
    lives (its client must notice the silence and give it up); links opened meanwhile are
    accepted and silent too. :meth:`restore` lets new links through again. ``port`` is the
    relay's own, once :meth:`serve` has started; :meth:`dsn` rewrites a URL to go through it.
    """

    def __init__(self, target_dsn: str) -> None:
        self.target = urlsplit(target_dsn)
        self.up = True
        self.silent = False
        self.port = 0
        self.cuts = 0
        self.opened = 0
        """Links the relay accepted."""
        self.abandoned = 0
        """Silent links that their client closed: it noticed the silence."""
        self._scopes: set[anyio.CancelScope] = set()
        self._links: set[_Silence] = set()

    def dsn(self, dsn: str | None = None) -> str:
        """``dsn`` (the target's by default) through the relay."""
        parts = self.target if dsn is None else urlsplit(dsn)
        user = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()

    def cut(self) -> None:
        """Drop every open link and refuse new ones until :attr:`up` is set again."""
        self.up = False
        self.cuts += 1
        for scope in self._scopes:
            scope.cancel()

    def blackhole(self) -> None:
        """Silence every open link for good, and new ones until :meth:`restore`."""
        self.silent = True
        for link in self._links:
            link.on = True

    def restore(self) -> None:
        """Let new links through again (links silenced stay silent)."""
        self.up = True
        self.silent = False

    async def restore_after(self, seconds: float) -> None:
        """Let new links through again ``seconds`` from now."""
        await anyio.sleep(seconds)
        self.restore()

    async def cut_for(self, seconds: float) -> None:
        """Cut the link, and restore it ``seconds`` later."""
        self.cut()
        await self.restore_after(seconds)

    async def blackhole_for(self, seconds: float) -> None:
        """Silence the link, and let new links through ``seconds`` later."""
        self.blackhole()
        await self.restore_after(seconds)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Relay connections until cancelled."""
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
            task_status.started()
            host, port = self.target.hostname or "127.0.0.1", self.target.port or 5432
            await listener.serve(lambda client: self._relay(client, host, port))

    async def _relay(self, client: anyio.abc.SocketStream, host: str, port: int) -> None:
        async with client:
            self.opened += 1
            if not self.up:
                return
            silence = _Silence(on=self.silent)
            if silence.on:
                await self._swallow(client)
                return
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                self._links.add(silence)
                try:
                    async with (
                        await anyio.connect_tcp(host, port) as server,
                        anyio.create_task_group() as group,
                    ):
                        group.start_soon(self._pump, client, server, scope, silence, True)
                        group.start_soon(self._pump, server, client, scope, silence, False)
                except OSError:
                    pass  # the server is down: the client sees its link drop
                finally:
                    self._scopes.discard(scope)
                    self._links.discard(silence)

    async def _swallow(self, client: anyio.abc.SocketStream) -> None:
        """Read and drop what a silent link's client sends, until it gives the link up."""
        try:
            async for _ in client:
                pass
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self.abandoned += 1

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        link: anyio.CancelScope,
        silence: _Silence,
        from_client: bool,
    ) -> None:
        """Copy one direction until either side goes away, then end the whole link.

        Once the link is silenced, what comes is dropped; the client closing its side
        counts as abandoning it.
        """
        try:
            async for chunk in source:
                if not silence.on:
                    await sink.send(chunk)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        if silence.on and not from_client:
            return  # a silenced server's close does not reach the client either
        if silence.on:
            self.abandoned += 1
        link.cancel()


@attrs.define(eq=False)
class _Silence:
    """Whether one link has gone silent."""

    on: bool
