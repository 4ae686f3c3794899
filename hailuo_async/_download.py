"""Download a finished video: no credential leaves for the storage host, no partial file stays.

The body streams into a temporary file beside the destination, which is fsynced and then
renamed over it (``os.replace``), so the destination holds either the whole video or nothing
new. Requests go out on a session of their own that shares the client's connection pool but
none of its defaults: no headers but a User-Agent, no cookie jar, no netrc, no proxy auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs
from yarl import URL

from ._callbacks import call_back
from ._exceptions import DownloadError, HailuoError, InvalidRequestError
from ._limits import RequestLimits
from ._models import TaskResult, Video
from ._retry import RetryPolicy, parse_retry_after
from ._transport import USER_AGENT

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_NAME_CHARS",
    "DownloadProgress",
    "RefreshResult",
    "copy_video",
    "download_video",
    "is_folder_destination",
    "mp4_problem",
    "safe_filename",
    "sweep_partial_downloads",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_NAME_CHARS = 128

DownloadProgress = Callable[[int, "int | None"], "Awaitable[None] | None"]
"""Called (or awaited) with bytes received so far and the declared total, if any."""
RefreshResult = Callable[[str], Awaitable[TaskResult]]
"""Fetches a task's result again by its id, for a fresh video URL."""

_READ_CHUNK = 256 * 1024
_WRITE_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Answers that may succeed on a later try; 403/404 mean the URL itself is done for.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
# A URL that expires within this many seconds is refreshed before it is tried.
_EXPIRY_MARGIN = 2.0
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{kind}{n}" for kind in ("COM", "LPT") for n in range(1, 10)}
)
_MP4_TYPES = frozenset({"mp4", "m4v", "mov"})
_TEMP_TOKEN_BYTES = 6
_TEMP_FILE = re.compile(rf"\.(?P<name>.+)\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}\.part")
_QUERY = re.compile(r"\?[^\s'\")>]*")
_MAX_CAUSE_CHARS = 200


class _Retryable(Exception):
    """A failure another attempt may not meet (connection trouble, 5xx, a short body)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


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
        return path / safe_filename(stem, video.video_type or "mp4")
    _make_folder(path.parent)
    return path


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
            raise _Retryable(f"the video is incomplete: {problem}")
    os.replace(temp, final)
    fsync_directory(final.parent)


@asynccontextmanager
async def _storage_session(
    session: aiohttp.ClientSession, *, connect_timeout: float | None, read_timeout: float | None
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = session.connector
    if session.closed or connector is None:
        raise DownloadError("the HTTP session is closed")
    storage = aiohttp.ClientSession(
        connector=connector,
        connector_owner=False,
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


async def _open(storage: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """GET ``url``, following a few redirects by hand (never to plain http from https)."""
    target = URL(url, encoded=True)  # re-quoting would break the signature
    for _ in range(_MAX_REDIRECTS + 1):
        if target.scheme not in ("http", "https") or not target.host:
            raise DownloadError(f"not an http(s) URL: {_redact(str(target))!r}")
        response = await storage.get(
            target, allow_redirects=False, headers={"Accept-Encoding": "identity"}
        )
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or not location:
            return response
        response.release()
        following = target.join(URL(location, encoded=True))
        if target.scheme == "https" and following.scheme != "https":
            raise DownloadError("the storage host redirected from https to plain http")
        target = following
    raise DownloadError(f"more than {_MAX_REDIRECTS} redirects from {_redact(url)!r}")


async def _report(progress: DownloadProgress | None, done: int, total: int | None) -> None:
    if progress is not None:
        await call_back(progress, done, total)


async def _stream(
    response: aiohttp.ClientResponse,
    file: IO[bytes],
    *,
    max_bytes: int,
    progress: DownloadProgress | None,
) -> None:
    status = response.status
    if status in _EXPIRED_STATUSES:
        raise _Expired(status)
    if status in _TRANSIENT_STATUSES:
        raise _Retryable(
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
    await _report(progress, 0, declared)
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        done += len(chunk)
        if done > max_bytes:
            raise DownloadError(f"the video is larger than the limit of {max_bytes} bytes")
        pending += chunk
        if len(pending) >= _WRITE_CHUNK:
            await anyio.to_thread.run_sync(file.write, bytes(pending))
            pending.clear()
            await _report(progress, done, declared)
    if pending:
        await anyio.to_thread.run_sync(file.write, bytes(pending))
    if declared is not None and done != declared:
        raise _Retryable(f"the body ended after {done} of {declared} bytes")
    await _report(progress, done, declared)


async def _attempt(
    storage: aiohttp.ClientSession,
    video: Video,
    final: Path,
    *,
    max_bytes: int,
    progress: DownloadProgress | None,
    check_mp4: bool,
    limiter: RequestLimits | None,
) -> None:
    temp, file = _create_temp(final)
    try:
        try:
            async with limiter.slot("download") if limiter else nullcontext():
                response = await _open(storage, video.url)
                try:
                    await _stream(response, file, max_bytes=max_bytes, progress=progress)
                finally:
                    response.release()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise _Retryable(f"the transfer failed ({_describe(exc)})") from exc
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
    """What is left of a download's retries and URL refreshes, and the current URL."""

    video: Video
    task_id: str | None
    refresh: RefreshResult | None
    policy: RetryPolicy
    max_retries: int
    max_refreshes: int
    failures: int = 0
    refreshes: int = 0

    async def refresh_if_expired(self) -> None:
        """Swap a URL that is known to have expired before it is tried (when possible)."""
        if (
            self.video.is_expired(margin=_EXPIRY_MARGIN)
            and self.refresh is not None
            and self.task_id is not None
            and self.refreshes < self.max_refreshes
        ):
            await self._refresh(self.refresh, self.task_id)

    async def after_expired(self, exc: _Expired) -> None:
        """Get a fresh URL after the storage host refused this one, or give up."""
        if self.refresh is None or self.task_id is None:
            raise DownloadError(
                f"{exc}: the video URL has expired, and no way to refresh it was given",
                url=_redact(self.video.url),
            ) from exc
        if self.refreshes >= self.max_refreshes:
            raise DownloadError(
                f"{exc} even after {self.refreshes} fresh URLs", url=_redact(self.video.url)
            ) from exc
        await self._refresh(self.refresh, self.task_id)

    async def after_failure(self, exc: _Retryable) -> None:
        """Wait before the next attempt, or give up."""
        self.failures += 1
        if self.failures > self.max_retries:
            raise DownloadError(
                f"{exc.message} (gave up after {self.failures} attempts)",
                url=_redact(self.video.url),
            ) from exc
        wait = self.policy.backoff(self.failures)
        if exc.retry_after is not None:
            wait = min(exc.retry_after, self.policy.max_retry_after)
        await anyio.sleep(wait)

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
    session: aiohttp.ClientSession,
    source: TaskResult | Video,
    dest: str | os.PathLike[str],
    *,
    task_id: str | None = None,
    refresh: RefreshResult | None = None,
    progress: DownloadProgress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retry_policy: RetryPolicy | None = None,
    max_retries: int = 5,
    max_refreshes: int = 3,
    connect_timeout: float | None = 30.0,
    read_timeout: float | None = 60.0,
    verify: bool = True,
    limiter: RequestLimits | None = None,
) -> Path:
    """Download a task's video to ``dest`` and return the file's path.

    ``dest`` is a folder (the file is then named after the task id, made safe) or a file, as
    :func:`is_folder_destination` says: an existing folder, a path ending in a separator or
    a name without a suffix is a folder; a name with a suffix is a file. Missing folders are
    created. Connection errors, 5xx answers and bodies cut short are retried up to
    ``max_retries`` times with the policy's capped backoff. A URL that has expired (by its
    ``expires_at`` or by a 403) is replaced through ``refresh(task_id)``, at most
    ``max_refreshes`` times. Bodies over ``max_bytes`` are refused. With ``verify``, an MP4
    must be complete (its boxes fill the file) to count as downloaded. ``progress`` gets
    ``(bytes_done, bytes_total)``; it starts again from 0 on a retry.

    Raises :class:`DownloadError` (chained to the cause); no partial file is left behind.
    """
    if max_bytes < 1 or max_retries < 0 or max_refreshes < 0:
        raise InvalidRequestError(
            "download", "max_bytes must be positive, max_retries and max_refreshes not negative"
        )
    video, task_id = _pick(source, task_id)
    final = _destination(dest, task_id, video)
    budget = _Budget(
        video=video,
        task_id=task_id,
        refresh=refresh,
        policy=retry_policy or RetryPolicy(),
        max_retries=max_retries,
        max_refreshes=max_refreshes,
    )
    check_mp4 = verify and (video.video_type or "mp4").lower() in _MP4_TYPES
    async with _storage_session(
        session, connect_timeout=connect_timeout, read_timeout=read_timeout
    ) as storage:
        while True:
            await budget.refresh_if_expired()
            try:
                await _attempt(
                    storage,
                    budget.video,
                    final,
                    max_bytes=max_bytes,
                    progress=progress,
                    check_mp4=check_mp4,
                    limiter=limiter,
                )
            except _Expired as exc:
                await budget.after_expired(exc)
            except _Retryable as exc:
                await budget.after_failure(exc)
            except DownloadError as exc:
                if exc.url is None:
                    exc.url = _redact(budget.video.url)
                raise
            except OSError as exc:
                raise DownloadError(
                    f"could not write {os.fspath(final)!r}: {exc}", url=_redact(budget.video.url)
                ) from exc
            else:
                return final
