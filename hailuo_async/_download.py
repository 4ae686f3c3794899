"""Download a finished video: no credential leaves for the storage host, no partial file stays.

The body streams into a temporary file beside the destination, which is fsynced and then
renamed over it (``os.replace``), so the destination holds either the whole video or nothing
new. Requests go out on a session of their own with none of the client's defaults: no headers
but a User-Agent, no cookie jar, no netrc, no proxy auth.

The service's answer names the storage host and the file's type; neither is trusted:

- **Where it connects.** Every address the host resolves to is checked before a connection
  is opened (through the session's own resolver, so the address connected to is one that
  was checked; a literal address in the URL is checked as is, and each redirect hop too),
  and the address connected to is checked again. Link-local (``169.254.0.0/16``,
  ``fe80::/10``), unspecified, multicast and cloud metadata addresses are refused always;
  private and loopback ones (and the rest of what is not public) unless the API itself is
  on such an address, as a local fake or a gateway inside one's own network is
  (:class:`StorageAddresses`).
- **What it saves.** The file's extension comes from an allow-list (``mp4``, ``mov``,
  ``webm``; any other ``video_type`` is taken for ``mp4``), and bytes that do not start as
  that container does are refused (:class:`DownloadError`, nothing at the final path).
- **How long it takes.** Each download has an overall deadline (``Timeouts.download``,
  600 s by default, every attempt and URL refresh included), so a storage host that trickles
  bytes cannot hold a job for ever.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs
from yarl import URL

from ._callbacks import call_back
from ._checks import Number
from ._exceptions import DownloadError, HailuoError
from ._limits import RequestLimits
from ._models import TaskResult, Video
from ._retry import (
    STORAGE_EXPIRED,
    STORAGE_RETRIED,
    RetryPolicy,
    StorageHiccup,
    call_with_retries,
    parse_retry_after,
)
from ._transport import USER_AGENT, HTTPTransport, TCPTransport

__all__ = [
    "DEFAULT_DOWNLOAD_DEADLINE",
    "DEFAULT_MAX_BYTES",
    "MAX_NAME_CHARS",
    "VIDEO_TYPES",
    "DownloadProgress",
    "RefreshResult",
    "StorageAddresses",
    "address_problem",
    "copy_video",
    "download_video",
    "is_folder_destination",
    "is_private_host",
    "mp4_problem",
    "safe_filename",
    "sweep_partial_downloads",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_NAME_CHARS = 128
DEFAULT_DOWNLOAD_DEADLINE = 600.0
"""Seconds one download may take in all (attempts and URL refreshes included)."""
VIDEO_TYPES = ("mp4", "mov", "webm")
"""The containers a video is saved as; any other ``video_type`` the service names is mp4."""

DownloadProgress = Callable[[int, "int | None"], "Awaitable[None] | None"]
"""Called (or awaited) with bytes received so far and the declared total, if any."""
RefreshResult = Callable[[str], Awaitable[TaskResult]]
"""Fetches a task's result again by its id, for a fresh video URL."""

_READ_CHUNK = 256 * 1024
_WRITE_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A URL that expires within this many seconds is refreshed before it is tried.
_EXPIRY_MARGIN = 2.0
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{kind}{n}" for kind in ("COM", "LPT") for n in range(1, 10)}
)
_MP4_TYPES = frozenset({"mp4", "mov"})
# Bytes of the body read before its container is checked (an EBML header fits in them).
_HEAD_BYTES = 64
# The first box of a QuickTime file may be any of these; an MP4 starts with `ftyp`.
_MOV_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"wide", b"free", b"skip", b"mdat", b"pnot"})
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# Metadata services of the clouds (what a forged URL would aim at), whatever their range.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS, over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure's wire server (a public address)
        "192.0.0.192",  # Oracle Cloud
    )
)
_TEMP_TOKEN_BYTES = 6
_TEMP_FILE = re.compile(rf"\.(?P<name>.+)\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}\.part")
_QUERY = re.compile(r"\?[^\s'\")>]*")
_MAX_CAUSE_CHARS = 200


class _Expired(Exception):
    """The storage host refuses this URL: a fresh one is needed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the storage host answered {status}")
        self.status = status


def _redact(url: str) -> str:
    # A presigned URL's query is its signature: a credential for the object, never logged.
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
    # aiohttp's messages may quote URLs (with their signatures) and whole chunks of the body.
    text = _QUERY.sub("?...", str(exc)).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > _MAX_CAUSE_CHARS:
        first = first[:_MAX_CAUSE_CHARS] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def safe_filename(stem: str, extension: str = "mp4") -> str:
    """A file name made from ``stem`` (a task id) that cannot leave its directory.

    Keeps letters, digits, ``.``, ``_`` and ``-``; no separators, no leading dots or dashes,
    at most :data:`MAX_NAME_CHARS` characters. When anything had to change, a hash of the
    original is appended so that distinct ids keep distinct names.
    """
    cleaned = _UNSAFE_NAME_CHARS.sub("_", stem).lstrip(".-")
    limit = MAX_NAME_CHARS - 13
    changed = (
        cleaned != stem
        or len(cleaned) > limit
        or not cleaned
        or cleaned.split(".", 1)[0].upper() in _WINDOWS_RESERVED
    )
    if changed:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[:limit]}-{digest}" if cleaned else f"video-{digest}"
    suffix = extension if _EXTENSION.fullmatch(extension or "") else "mp4"
    return f"{cleaned}.{suffix.lower()}"


def is_folder_destination(dest: str | os.PathLike[str]) -> bool:
    """True when ``dest`` names a folder to save videos in, False when it names the file.

    An existing folder is a folder; otherwise the form decides: a path that ends in a
    separator, or whose last part has no suffix (``videos``, ``out/clips``), is a folder, and
    one with a suffix (``clip.mp4``) is a file. So a name never turns into a file by accident
    when its folder does not exist yet.
    """
    text = os.fspath(dest)
    separators = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)
    path = Path(text)
    return path.is_dir() or text.endswith(separators) or not path.suffix


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DownloadError(f"{os.fspath(folder)!r} exists and is not a folder") from None
    except OSError as exc:
        raise DownloadError(f"could not create the folder {os.fspath(folder)!r}: {exc}") from exc


def _destination(dest: str | os.PathLike[str], task_id: str | None, video: Video) -> Path:
    path = Path(dest)
    if is_folder_destination(dest):
        _make_folder(path)
        stem = task_id
        if stem is None:
            stem = Path(urlsplit(video.url).path).stem or "video"
        return path / safe_filename(stem, container_of(video))
    _make_folder(path.parent)
    return path


def container_of(video: Video) -> str:
    """The container the video is saved (and checked) as: its type if allowed, else mp4."""
    kind = (video.video_type or "").strip().lower()
    return kind if kind in VIDEO_TYPES else "mp4"


def container_problem(container: str, head: bytes) -> str | None:
    """None when ``head`` (a file's first bytes) starts as a ``container`` file does."""
    if container == "webm":
        if head.startswith(_EBML_MAGIC) and b"webm" in head[:_HEAD_BYTES]:
            return None
        return "its first bytes are not a WebM file's"
    box = head[4:8]
    if box == b"ftyp" or (container == "mov" and box in _MOV_FIRST_BOXES):
        return None
    return f"its first bytes are not {'a QuickTime' if container == 'mov' else 'an MP4'} file's"


# -- where the storage host may be ------------------------------------------------------------

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves a host name and port to its addresses (as text); for tests, a stub."""


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why a download must not connect to ``address``, or None when it may.

    Refused always: link-local, unspecified, multicast and cloud metadata addresses;
    unless ``allow_private``: loopback, private and every other address that is not public.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not the address
    except ValueError:
        return "an address that cannot be read"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if not ip.is_global and not allow_private:
        kind = "loopback" if ip.is_loopback else "private or reserved"
        return f"a {kind} address (the API is not on one)"
    return None


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def is_private_host(host: str, *, resolve: Resolve | None = None) -> bool:
    """True when ``host`` (the API's) is on a loopback or private address: every address it
    resolves to is not public. Then a storage host on such an address is allowed too."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    if name.endswith(".invalid"):  # never resolves (RFC 6761): no lookup to wait for
        return False
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            addresses = list(await (resolve or _system_resolve)(host, 443))
        except OSError:
            return False
    return bool(addresses) and all(
        not ipaddress.ip_address(address.split("%", 1)[0]).is_global for address in addresses
    )


@attrs.frozen
class StorageAddresses:
    """Where a download may connect: see :func:`address_problem`.

    ``allow_private`` is True when the API itself is on a loopback or private address
    (:func:`is_private_host`). ``resolve`` replaces the system's resolver (tests).
    """

    allow_private: bool = False
    resolve: Resolve | None = None

    def check(self, host: str, address: str) -> None:
        """Raise :class:`DownloadError` if a download must not connect to ``address``."""
        problem = address_problem(address, allow_private=self.allow_private)
        if problem is not None:
            raise DownloadError(
                f"the storage host {host!r} is at {address}, {problem}: refused, nothing sent"
            )


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves for the storage session, refusing a host any of whose addresses is refused.

    The session connects only to the addresses this returns: the address checked is the
    address connected to (no second lookup a rebinding DNS could answer otherwise).
    """

    def __init__(self, addresses: StorageAddresses) -> None:
        self._addresses = addresses
        self._system = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        stub = self._addresses.resolve
        if stub is not None:
            found = [_result(host, address, port) for address in await stub(host, port)]
        else:
            found = await self._system.resolve(host, port, family)
        for entry in found:
            self._addresses.check(host, entry["host"])
        return found

    async def close(self) -> None:
        await self._system.close()


def _result(host: str, address: str, port: int) -> aiohttp.abc.ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }


def _literal_address(host: str) -> str | None:
    """The host when it is an address written out (``1.2.3.4``, ``[::1]``), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _temp_name(final_name: str) -> str:
    # Hidden, and ending in a 12-digit hex token: what sweep_partial_downloads looks for.
    return f".{final_name[:180]}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}.part"


def _create_temp(final: Path) -> tuple[Path, IO[bytes]]:
    # Beside the destination, so the rename stays on one file system and is atomic.
    while True:
        temp = final.with_name(_temp_name(final.name))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            # 0o666: the umask decides, as for any file the user saves (mkstemp would give 0o600).
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        return temp, os.fdopen(fd, "wb")


async def copy_video(source: Path, folder: Path) -> Path:
    """Copy a video saved earlier into ``folder``, under its own name: whole, or not at all.

    As a download is saved: into a temporary file beside the copy, fsynced, then renamed.
    Raises DownloadError when it cannot be read or written.
    """
    try:
        return await anyio.to_thread.run_sync(_copy_video, source, folder)
    except OSError as exc:
        raise DownloadError(f"could not copy {os.fspath(source)!r}: {exc}") from exc


def _copy_video(source: Path, folder: Path) -> Path:
    _make_folder(folder)
    final = folder / source.name
    temp, file = _create_temp(final)
    try:
        with file, source.open("rb") as original:
            shutil.copyfileobj(original, file, _WRITE_CHUNK)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, final)
    except BaseException:
        _discard(temp)
        raise
    fsync_directory(folder)
    return final


def _discard(temp: Path) -> None:
    try:
        temp.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        # Best effort: a failed clean-up must not hide the download's own error.
        pass


def fsync_directory(directory: Path) -> None:
    """Make the names of files just created or renamed in ``directory`` durable (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open directories; its renames are durable without this.
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _partial_downloads(directory: Path, task_ids: Iterable[str]) -> list[Path]:
    stems = {safe_filename(task_id).rsplit(".", 1)[0] for task_id in task_ids}
    leftovers = []
    for entry in os.scandir(directory):
        match = _TEMP_FILE.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        stem, _, extension = match["name"].rpartition(".")
        if stem in stems and _EXTENSION.fullmatch(extension):
            leftovers.append(Path(entry.path))
    for path in leftovers:
        _discard(path)
    return leftovers


async def sweep_partial_downloads(
    directory: str | os.PathLike[str], task_ids: Iterable[str]
) -> list[Path]:
    """Remove what killed downloads of these tasks' videos left in ``directory``; return it.

    Only this library's own temporary files go: hidden ``.{name}.{12 hex digits}.part``
    files whose ``name`` is the one a download of one of ``task_ids`` is saved under. Any
    other file, however alike its name, is left alone. A missing directory has nothing to
    sweep.
    """
    task_ids = list(task_ids)
    if not task_ids:
        return []
    try:
        return await anyio.to_thread.run_sync(_partial_downloads, Path(directory), task_ids)
    except FileNotFoundError:
        return []


def mp4_problem(path: Path) -> str | None:
    """None when the file's top-level MP4 boxes exactly fill it and include ``moov``.

    A body cut short (even one whose Content-Length was understated to match) leaves a box
    that claims more bytes than the file has.
    """
    size = path.stat().st_size
    kinds: set[bytes] = set()
    offset = 0
    with path.open("rb") as file:
        while offset < size:
            file.seek(offset)
            header = file.read(16)
            if len(header) < 8:
                return f"the box header at byte {offset} is cut short"
            box_size, kind = struct.unpack(">I4s", header[:8])
            if box_size == 1:
                if len(header) < 16:
                    return f"the box header at byte {offset} is cut short"
                (box_size,) = struct.unpack(">Q", header[8:16])
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                return f"the box at byte {offset} has an impossible size ({box_size})"
            if offset + box_size > size:
                return (
                    f"the {kind.decode('latin-1')!r} box at byte {offset} needs {box_size} bytes;"
                    f" only {size - offset} arrived"
                )
            kinds.add(kind)
            offset += box_size
    if b"moov" not in kinds:
        return "the file has no 'moov' box"
    return None


def _finish(file: IO[bytes], temp: Path, final: Path, *, check_mp4: bool) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()
    if check_mp4:
        problem = mp4_problem(temp)
        if problem is not None:
            raise StorageHiccup(f"the video is incomplete: {problem}")
    os.replace(temp, final)
    fsync_directory(final.parent)


@asynccontextmanager
async def _storage_session(
    addresses: StorageAddresses,
    transport: HTTPTransport,
    *,
    connect_timeout: float | None,
    read_timeout: float | None,
) -> AsyncIterator[aiohttp.ClientSession]:
    # A connector of its own: its resolver is the guard (the API's connector resolves the
    # API host, which may be where storage must not go).
    connector = transport.connector(limit=4, resolver=_GuardedResolver(addresses))
    storage = aiohttp.ClientSession(
        connector=connector,
        connector_owner=True,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        # Bytes on disk are the bytes sent, so Content-Length can be checked against them.
        auto_decompress=False,
        # A large video may take longer than any sane total; a stalled read may not.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        ),
    )
    try:
        yield storage
    finally:
        await storage.close()


async def _open(
    storage: aiohttp.ClientSession, url: str, addresses: StorageAddresses
) -> aiohttp.ClientResponse:
    """GET ``url``, following a few redirects by hand (never to plain http from https).

    Each hop's host is checked before anything is sent (see the module's docstring), and
    the address the answer came from after.
    """
    target = URL(url, encoded=True)  # re-quoting would break the signature
    for _ in range(_MAX_REDIRECTS + 1):
        host = target.host
        if target.scheme not in ("http", "https") or not host:
            raise DownloadError(f"not an http(s) URL: {_redact(str(target))!r}")
        literal = _literal_address(host)
        if literal is not None:  # the session's resolver never sees a literal address
            addresses.check(host, literal)
        response = await storage.get(
            target, allow_redirects=False, headers={"Accept-Encoding": "identity"}
        )
        _check_peer(response, host, addresses)
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or not location:
            return response
        response.release()
        following = target.join(URL(location, encoded=True))
        if target.scheme == "https" and following.scheme != "https":
            raise DownloadError("the storage host redirected from https to plain http")
        target = following
    raise DownloadError(f"more than {_MAX_REDIRECTS} redirects from {_redact(url)!r}")


def _check_peer(response: aiohttp.ClientResponse, host: str, addresses: StorageAddresses) -> None:
    """Check the address the answer came from (the checks before connecting should suffice)."""
    connection = response.connection
    transport = connection.transport if connection is not None else None
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer:
        return
    try:
        addresses.check(host, str(peer[0]))
    except DownloadError:
        response.release()
        raise


async def _report(progress: DownloadProgress | None, done: int, total: int | None) -> None:
    if progress is not None:
        await call_back(progress, done, total)


async def _stream(
    response: aiohttp.ClientResponse,
    file: IO[bytes],
    *,
    max_bytes: int,
    progress: DownloadProgress | None,
    container: str,
) -> None:
    status = response.status
    if status in STORAGE_EXPIRED:
        raise _Expired(status)
    if status in STORAGE_RETRIED:
        raise StorageHiccup(
            f"the storage host answered {status}",
            retry_after=parse_retry_after(response.headers),
        )
    if status != 200:
        raise DownloadError(f"the storage host answered {status}")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(f"the storage host sent an encoded body ({encoding})")
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise DownloadError(f"the video declares {declared} bytes; the limit is {max_bytes}")
    done = 0
    pending = bytearray()
    checked = False
    await _report(progress, 0, declared)
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        done += len(chunk)
        if done > max_bytes:
            raise DownloadError(f"the video is larger than the limit of {max_bytes} bytes")
        pending += chunk
        if not checked and done >= _HEAD_BYTES:
            _check_container(container, bytes(pending[:_HEAD_BYTES]))
            checked = True
        if len(pending) >= _WRITE_CHUNK:
            await anyio.to_thread.run_sync(file.write, bytes(pending))
            pending.clear()
            await _report(progress, done, declared)
    if declared is not None and done != declared:
        raise StorageHiccup(f"the body ended after {done} of {declared} bytes")
    if not checked:
        _check_container(container, bytes(pending))
    if pending:
        await anyio.to_thread.run_sync(file.write, bytes(pending))
    await _report(progress, done, declared)


def _check_container(container: str, head: bytes) -> None:
    problem = container_problem(container, head)
    if problem is not None:
        # Not retried: the storage host serves something else under this URL.
        raise DownloadError(f"the storage host sent something other than a video: {problem}")


async def _attempt(
    storage: aiohttp.ClientSession,
    video: Video,
    final: Path,
    *,
    max_bytes: int,
    progress: DownloadProgress | None,
    check_mp4: bool,
    limiter: RequestLimits | None,
    addresses: StorageAddresses,
) -> None:
    temp, file = _create_temp(final)
    try:
        try:
            async with limiter.slot("download") if limiter else nullcontext():
                response = await _open(storage, video.url, addresses)
                try:
                    await _stream(
                        response,
                        file,
                        max_bytes=max_bytes,
                        progress=progress,
                        container=container_of(video),
                    )
                finally:
                    response.release()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise StorageHiccup(f"the transfer failed ({_describe(exc)})") from exc
        await anyio.to_thread.run_sync(lambda: _finish(file, temp, final, check_mp4=check_mp4))
    except BaseException:
        file.close()
        _discard(temp)
        raise


def _pick(source: TaskResult | Video, task_id: str | None) -> tuple[Video, str | None]:
    if isinstance(source, TaskResult):
        if source.video is None:
            raise DownloadError(f"task {source.task_id} has no video ({source.status.value})")
        return source.video, task_id or source.task_id
    if isinstance(source, Video):
        return source, task_id
    raise TypeError(f"download takes a TaskResult or a Video, not {type(source).__name__}")


@attrs.define
class _Budget:
    """The download's current URL, and how many fresh ones it got (its retries are
    :func:`call_with_retries`'s)."""

    video: Video
    task_id: str | None
    refresh: RefreshResult | None
    policy: RetryPolicy
    refreshes: int = 0
    attempts: int = 0

    async def refresh_if_expired(self) -> None:
        """Swap a URL that is known to have expired before it is tried (when possible)."""
        if (
            self.video.is_expired(margin=_EXPIRY_MARGIN)
            and self.refresh is not None
            and self.task_id is not None
            and self.refreshes < self.policy.max_refreshes
        ):
            await self._refresh(self.refresh, self.task_id)

    async def after_expired(self, exc: Exception) -> bool:
        """Get a fresh URL after the storage host refused this one, or give up; False for
        another failure (the policy decides)."""
        if not isinstance(exc, _Expired):
            return False
        if self.refresh is None or self.task_id is None:
            raise DownloadError(
                f"{exc}: the video URL has expired, and no way to refresh it was given",
                url=_redact(self.video.url),
            ) from exc
        if self.refreshes >= self.policy.max_refreshes:
            raise DownloadError(
                f"{exc} even after {self.refreshes} fresh URLs", url=_redact(self.video.url)
            ) from exc
        await self._refresh(self.refresh, self.task_id)
        return True

    async def _refresh(self, refresh: RefreshResult, task_id: str) -> None:
        self.refreshes += 1
        try:
            result = await refresh(task_id)
        except HailuoError as exc:
            raise DownloadError(
                f"could not get a fresh video URL for task {task_id}: {exc}"
            ) from exc
        if result.video is None:
            raise DownloadError(f"task {task_id} has no video any more ({result.status.value})")
        self.video = result.video


async def download_video(
    source: TaskResult | Video,
    dest: str | os.PathLike[str],
    *,
    addresses: StorageAddresses,
    transport: HTTPTransport | None = None,
    task_id: str | None = None,
    refresh: RefreshResult | None = None,
    progress: DownloadProgress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retry_policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    max_refreshes: int | None = None,
    connect_timeout: float | None = 30.0,
    read_timeout: float | None = 60.0,
    verify: bool = True,
    limiter: RequestLimits | None = None,
    deadline: float | None = DEFAULT_DOWNLOAD_DEADLINE,
) -> Path:
    """Download a task's video to ``dest`` and return the file's path.

    ``dest`` is a folder (the file is then named after the task id, made safe) or a file, as
    :func:`is_folder_destination` says: an existing folder, a path ending in a separator or
    a name without a suffix is a folder; a name with a suffix is a file. Missing folders are
    created. Connection errors, 5xx answers and bodies cut short are retried as
    ``retry_policy`` says (:mod:`._retry`). A URL that has expired (by its ``expires_at`` or
    by a 403) is replaced through ``refresh(task_id)``, at most ``max_refreshes`` times.
    ``max_retries`` and ``max_refreshes``, when given, override the policy's. Bodies over
    ``max_bytes`` are refused. Bodies that do not start as the announced container does
    (:func:`container_of`) are refused; with ``verify``, an MP4 must also be complete (its
    boxes fill the file) to count as downloaded. ``progress`` gets ``(bytes_done,
    bytes_total)``; it starts again from 0 on a retry. ``addresses`` says where the storage
    host may be; ``deadline`` bounds the whole download, every
    attempt and refresh included (None: no bound). ``transport`` opens the connections
    (TCP by default).

    Raises :class:`DownloadError` (chained to the cause); no partial file is left behind.
    """
    Number(low=1, whole=True).check("max_bytes", max_bytes)
    Number(whole=True, optional=True).check("max_retries", max_retries)
    Number(whole=True, optional=True).check("max_refreshes", max_refreshes)
    Number(above=True, optional=True).check("deadline", deadline)
    policy = retry_policy or RetryPolicy()
    overrides = {"max_retries": max_retries, "max_refreshes": max_refreshes}
    policy = attrs.evolve(policy, **{k: v for k, v in overrides.items() if v is not None})
    video, task_id = _pick(source, task_id)
    final = _destination(dest, task_id, video)
    budget = _Budget(video=video, task_id=task_id, refresh=refresh, policy=policy)
    check_mp4 = verify and container_of(video) in _MP4_TYPES
    try:
        with anyio.fail_after(deadline):
            return await _download(
                budget,
                final,
                addresses=addresses,
                transport=transport or TCPTransport(),
                max_bytes=max_bytes,
                progress=progress,
                check_mp4=check_mp4,
                limiter=limiter,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
    except TimeoutError:
        if deadline is None:
            raise
        # The attempt under way was cut: its temporary file is gone, nothing at `final`.
        raise DownloadError(
            f"the download did not complete within {deadline:g} s (Timeouts.download)",
            url=_redact(budget.video.url),
        ) from None


async def _download(
    budget: _Budget,
    final: Path,
    *,
    addresses: StorageAddresses,
    transport: HTTPTransport,
    max_bytes: int,
    progress: DownloadProgress | None,
    check_mp4: bool,
    limiter: RequestLimits | None,
    connect_timeout: float | None,
    read_timeout: float | None,
) -> Path:
    async with _storage_session(
        addresses, transport, connect_timeout=connect_timeout, read_timeout=read_timeout
    ) as storage:

        async def attempt(number: int) -> None:
            budget.attempts = number
            await budget.refresh_if_expired()
            await _attempt(
                storage,
                budget.video,
                final,
                max_bytes=max_bytes,
                progress=progress,
                check_mp4=check_mp4,
                limiter=limiter,
                addresses=addresses,
            )

        try:
            await call_with_retries(
                attempt, budget.policy, "download", instead_of_waiting=budget.after_expired
            )
        except StorageHiccup as exc:
            raise DownloadError(
                f"{exc.message} (gave up after {budget.attempts} attempts)",
                url=_redact(budget.video.url),
            ) from exc
        except DownloadError as exc:
            if exc.url is None:
                exc.url = _redact(budget.video.url)
            raise
        except OSError as exc:
            raise DownloadError(
                f"could not write {os.fspath(final)!r}: {exc}", url=_redact(budget.video.url)
            ) from exc
        return final
