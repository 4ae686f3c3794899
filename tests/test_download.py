"""Downloads against the fake service over real sockets: whole files or nothing, no credentials."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web
from yarl import URL

from hailuo_async import (
    DownloadError,
    HailuoClient,
    HailuoError,
    InvalidRequestError,
    NotFoundError,
    PollPolicy,
    RetryPolicy,
    TaskResult,
    TaskStatus,
    Timeouts,
    Video,
    VideoRequest,
)
from hailuo_async._download import (
    MAX_NAME_CHARS,
    StorageAddresses,
    address_problem,
    download_video,
    is_folder_destination,
    is_private_host,
    mp4_problem,
    safe_filename,
)
from hailuo_async.testing import FakeHailuoServer, Fixed, StorageFaults, sample_video

pytestmark = pytest.mark.anyio

FAST_RETRIES = RetryPolicy(initial_delay=0.001, max_delay=0.005)
FAST_POLLS = PollPolicy(first_poll_delay=0.01, min_interval=0.01, max_interval=0.05)
SECRET = "Bearer sk-never-leaves-the-api-host"


@asynccontextmanager
async def _finished(
    **knobs: Any,
) -> AsyncIterator[tuple[FakeHailuoServer, HailuoClient, TaskResult]]:
    """A fake service, a client on it, and one succeeded task."""
    settings: dict[str, Any] = {"time_scale": 0.001, "seed": 7, "job_duration": Fixed(10)}
    async with FakeHailuoServer(**{**settings, **knobs}) as server:
        async with HailuoClient(
            api_key=server.api_key, base_url=server.url, poll_policy=FAST_POLLS
        ) as client:
            result = await client.generate(VideoRequest(prompt="a paper boat"))
            yield server, client, result


# The fake and the test origins serve on loopback, as an API on loopback may.
LOOPBACK = StorageAddresses(allow_private=True)


async def download(source: TaskResult | Video, dest: Path | str, **options: Any) -> Path:
    """``download_video`` with storage on loopback allowed (the API of these tests is too)."""
    return await download_video(source, dest, addresses=LOOPBACK, **options)


def _files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@attrs.define
class Origin:
    """A hand-written storage host for what the fake cannot do (redirects, chunks, stalls)."""

    url: str = ""
    headers: list[dict[str, str]] = attrs.Factory(list)
    flaky_left: int = 0
    redirect_to: str = ""


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A local storage host recording every request's headers."""
    state = Origin()
    video = sample_video()

    async def record(request: web.Request) -> None:
        state.headers.append(dict(request.headers))

    async def plain(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(body=video, content_type="video/mp4")

    async def chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(video), 500):
            await response.write(video[start : start + 500])
        await response.write_eof()
        return response

    async def flaky(request: web.Request) -> web.StreamResponse:
        await record(request)
        if state.flaky_left > 0:
            state.flaky_left -= 1
            return web.Response(status=503, text="<html>busy</html>")
        return web.Response(body=video, content_type="video/mp4")

    async def stall(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(video)
        await response.prepare(request)
        await response.write(video[: len(video) // 2])
        await asyncio.sleep(30)
        return response

    async def understated(request: web.Request) -> web.StreamResponse:
        await record(request)
        declared = len(video) * 3 // 4
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = declared
        response.force_close()
        await response.prepare(request)
        await response.write(video[:declared])
        # aiohttp clips writes to Content-Length: the rest goes to the socket directly.
        if request.transport is not None:
            request.transport.write(video[declared:])
        return response

    async def short(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(body=video[: len(video) * 3 // 4], content_type="video/mp4")

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        raise web.HTTPFound(state.redirect_to)

    async def html(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(text="<html>not a video</html>", content_type="text/html")

    async def script(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(text="#!/bin/sh\necho pwned\n" * 8, content_type="text/x-sh")

    async def trickle(request: web.Request) -> web.StreamResponse:
        # One byte at a time, never silent long enough for a read timeout: only a deadline ends it.
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(video)
        await response.prepare(request)
        for byte in video:
            await response.write(bytes([byte]))
            await asyncio.sleep(0.05)
        return response

    app = web.Application()
    for path, handler in [
        ("/plain.mp4", plain),
        ("/chunked.mp4", chunked),
        ("/flaky.mp4", flaky),
        ("/stall.mp4", stall),
        ("/understated.mp4", understated),
        ("/short.mp4", short),
        ("/redirect.mp4", redirect),
        ("/html.mp4", html),
        ("/script.sh", script),
        ("/trickle.mp4", trickle),
    ]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


# -- success ---------------------------------------------------------------------------------


async def test_download_writes_the_real_mp4(tmp_path: Path) -> None:
    """A finished task's video lands as <task_id>.mp4 with the fake's exact bytes."""
    progress: list[tuple[int, int | None]] = []
    async with _finished() as (server, client, result):
        path = await download(
            result,
            tmp_path,
            refresh=client.get_task,
            progress=lambda d, t: progress.append((d, t)),
        )
        assert server.stats.storage_downloads == 1
    assert path == tmp_path / f"{result.task_id}.mp4"
    assert path.read_bytes() == sample_video()
    assert _files(tmp_path) == [path.name]
    assert progress[0] == (0, len(sample_video()))
    assert progress[-1] == (len(sample_video()), len(sample_video()))


async def test_download_to_a_file_path_replaces_the_old_file(tmp_path: Path) -> None:
    """A file destination is replaced whole, and an async progress callback is awaited."""
    dest = tmp_path / "clip.mp4"
    dest.write_bytes(b"old")
    seen: list[int] = []

    async def progress(done: int, total: int | None) -> None:
        seen.append(done)

    async with _finished() as (_, _client, result):
        path = await download(result, dest, progress=progress)
    assert path == dest
    assert dest.read_bytes() == sample_video()
    assert _files(tmp_path) == ["clip.mp4"]
    assert seen[-1] == len(sample_video())


async def test_a_body_without_length_is_checked_by_its_boxes(
    tmp_path: Path, origin: Origin
) -> None:
    """A chunked body with no Content-Length is accepted once its MP4 boxes are complete."""
    video = Video(url=f"{origin.url}/chunked.mp4", video_type="mp4")
    path = await download(video, tmp_path, task_id="t-1")
    assert path.read_bytes() == sample_video()
    assert _files(tmp_path) == ["t-1.mp4"]


# -- truncation and retries ------------------------------------------------------------------


async def test_truncated_bodies_are_retried(tmp_path: Path) -> None:
    """Bodies cut short are fetched again until whole; the file is never the short one."""
    async with _finished(storage_faults=StorageFaults(truncate=0.5)) as (server, _, result):
        for n in range(6):
            path = await download(result, tmp_path / f"{n}.mp4", retry_policy=FAST_RETRIES)
            assert path.read_bytes() == sample_video()
        faults = server.stats.storage_faults_injected.get("truncate", 0)
        assert faults > 0
        assert server.stats.storage_downloads == 6 + faults
    assert _files(tmp_path) == [f"{n}.mp4" for n in range(6)]


async def test_always_truncated_fails_without_leftovers(tmp_path: Path) -> None:
    """A body that is always cut short gives DownloadError after the retries, and no file."""
    (tmp_path / "keep.mp4").write_bytes(b"previous complete video")
    async with _finished(storage_faults=StorageFaults(truncate=1.0)) as (server, _, result):
        with pytest.raises(DownloadError, match="3 attempts") as caught:
            await download(result, tmp_path / "keep.mp4", retry_policy=FAST_RETRIES, max_retries=2)
        assert server.stats.storage_downloads == 3
    assert caught.value.__cause__ is not None
    assert "?" not in (caught.value.url or "?")
    assert _files(tmp_path) == ["keep.mp4"]
    assert (tmp_path / "keep.mp4").read_bytes() == b"previous complete video"


async def test_a_wrong_content_length_fails_without_leftovers(tmp_path: Path) -> None:
    """A body that never reaches its declared length gives DownloadError after the retries."""
    faults = StorageFaults(wrong_content_length=1.0)
    async with _finished(storage_faults=faults) as (server, _, result):
        with pytest.raises(DownloadError, match="3158 of 3947 bytes"):
            await download(result, tmp_path, retry_policy=FAST_RETRIES, max_retries=1)
        assert server.stats.storage_faults_injected == {"wrong_content_length": 2}
    assert _files(tmp_path) == []


async def test_data_past_content_length_is_refused(tmp_path: Path, origin: Origin) -> None:
    """An understated Content-Length fails, and the error stays short and signature-free."""
    video = Video(url=f"{origin.url}/understated.mp4?X-Signature=secret", video_type="mp4")
    with pytest.raises(DownloadError) as caught:
        await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES, max_retries=1)
    assert len(origin.headers) == 2
    assert len(str(caught.value)) < 400
    assert "secret" not in str(caught.value)
    assert caught.value.url == f"{origin.url}/understated.mp4"
    assert _files(tmp_path) == []


async def test_a_short_file_with_a_matching_length_is_caught(
    tmp_path: Path, origin: Origin
) -> None:
    """A cut file served with its own (short) Content-Length fails on its MP4 boxes."""
    video = Video(url=f"{origin.url}/short.mp4", video_type="mp4")
    with pytest.raises(DownloadError, match=r"incomplete.*'mdat' box"):
        await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES, max_retries=1)
    assert len(origin.headers) == 2
    assert _files(tmp_path) == []


async def test_a_wrong_content_length_recovers(tmp_path: Path) -> None:
    """With some good answers among the bad ones, every download ends whole."""
    faults = StorageFaults(wrong_content_length=0.5)
    async with _finished(storage_faults=faults) as (server, _, result):
        for n in range(4):
            path = await download(result, tmp_path / f"{n}.mp4", retry_policy=FAST_RETRIES)
            assert path.read_bytes() == sample_video()
        assert server.stats.storage_faults_injected.get("wrong_content_length", 0) > 0
    assert len(_files(tmp_path)) == 4


async def test_server_errors_are_retried(tmp_path: Path, origin: Origin) -> None:
    """503s are retried; the third attempt's body is the one saved."""
    origin.flaky_left = 2
    video = Video(url=f"{origin.url}/flaky.mp4")
    path = await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES)
    assert len(origin.headers) == 3
    assert path.read_bytes() == sample_video()


async def test_persistent_server_errors_give_up(tmp_path: Path, origin: Origin) -> None:
    """A storage host that keeps failing gets max_retries + 1 requests, then DownloadError."""
    origin.flaky_left = 100
    video = Video(url=f"{origin.url}/flaky.mp4")
    with pytest.raises(DownloadError, match="503"):
        await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES, max_retries=3)
    assert len(origin.headers) == 4
    assert _files(tmp_path) == []


async def test_a_body_that_is_not_a_video_is_refused(tmp_path: Path, origin: Origin) -> None:
    """A 200 with an HTML page is not saved as the video, nor asked for again."""
    video = Video(url=f"{origin.url}/html.mp4", video_type="mp4")
    with pytest.raises(DownloadError, match="something other than a video"):
        await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES, max_retries=1)
    assert _files(tmp_path) == []
    assert len(origin.headers) == 1


async def test_a_stalled_body_times_out(tmp_path: Path, origin: Origin) -> None:
    """A body that stops arriving fails on the read timeout, leaving nothing behind."""
    video = Video(url=f"{origin.url}/stall.mp4")
    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        await download(
            video,
            tmp_path,
            task_id="t",
            read_timeout=0.2,
            retry_policy=FAST_RETRIES,
            max_retries=1,
        )
    assert _files(tmp_path) == []


async def test_cancelling_mid_body_leaves_nothing(tmp_path: Path, origin: Origin) -> None:
    """A download cancelled half way removes its temporary file."""
    video = Video(url=f"{origin.url}/stall.mp4")
    with anyio.move_on_after(0.3) as scope:
        await download(video, tmp_path, task_id="t")
    assert scope.cancelled_caught
    assert _files(tmp_path) == []


# -- expiry ------------------------------------------------------------------------------------


async def test_a_url_past_its_expiry_is_refreshed_first(tmp_path: Path) -> None:
    """A URL known to have expired is swapped for a fresh one before any request."""
    refreshed: list[str] = []
    async with _finished(time_scale=0.01, video_url_ttl=30) as (server, client, result):

        async def refresh(task_id: str) -> TaskResult:
            refreshed.append(task_id)
            return await client.get_task(task_id)

        await anyio.sleep(0.4)
        assert result.video is not None
        assert result.video.is_expired()
        path = await download(result, tmp_path, refresh=refresh)
        assert server.stats.storage_denied == 0
    assert refreshed == [result.task_id]
    assert path.read_bytes() == sample_video()


async def test_a_403_from_storage_fetches_a_fresh_url(tmp_path: Path) -> None:
    """An expired URL whose expiry was not known is refreshed after the storage host's 403."""
    async with _finished(time_scale=0.01, video_url_ttl=30) as (server, client, result):
        await anyio.sleep(0.4)
        assert result.video is not None
        stale = Video(url=result.video.url, video_type="mp4")
        path = await download(stale, tmp_path, task_id=result.task_id, refresh=client.get_task)
        assert server.stats.storage_denied == 1
        assert server.stats.storage_downloads == 1
    assert path.read_bytes() == sample_video()
    assert _files(tmp_path) == [f"{result.task_id}.mp4"]


async def test_an_expired_url_without_refresh_fails(tmp_path: Path) -> None:
    """Without a way to refresh, an expired URL is a DownloadError naming the cause."""
    async with _finished(time_scale=0.01, video_url_ttl=30) as (server, _, result):
        await anyio.sleep(0.4)
        with pytest.raises(DownloadError, match="expired, and no way to refresh"):
            await download(result, tmp_path)
        assert server.stats.storage_denied == 1
    assert _files(tmp_path) == []


async def test_a_failing_refresh_is_a_download_error(tmp_path: Path) -> None:
    """An API error while refreshing the URL surfaces as DownloadError chained to it."""

    async def refresh(task_id: str) -> TaskResult:
        raise NotFoundError("404 from GET /v3/async/task-result", status_code=404)

    async with _finished(time_scale=0.01, video_url_ttl=30) as (_, _client, result):
        await anyio.sleep(0.4)
        with pytest.raises(DownloadError, match="fresh video URL") as caught:
            await download(result, tmp_path, refresh=refresh)
    assert isinstance(caught.value.__cause__, NotFoundError)
    assert _files(tmp_path) == []


# -- credentials -----------------------------------------------------------------------------


async def test_no_credentials_reach_a_strict_storage_host(tmp_path: Path) -> None:
    """The storage host that 403s on an Authorization header gets none: the video downloads."""
    faults = StorageFaults(reject_authorization=True)
    async with _finished(storage_faults=faults) as (server, client, result):
        path = await download(result, tmp_path, refresh=client.get_task)
        assert server.stats.storage_authorization_headers == []
        assert server.stats.storage_denied == 0
    assert path.read_bytes() == sample_video()


async def test_no_cookie_or_auth_header_even_across_redirects(
    tmp_path: Path, origin: Origin
) -> None:
    """A redirect to another host is followed; neither hop sees Authorization or Cookie."""
    async with _finished(storage_faults=StorageFaults(reject_authorization=True)) as (
        server,
        _,
        result,
    ):
        assert result.video is not None
        origin.redirect_to = result.video.url
        video = Video(url=f"{origin.url}/redirect.mp4", video_type="mp4")
        path = await download(video, tmp_path, task_id=result.task_id)
        assert server.stats.storage_authorization_headers == []
        assert server.stats.storage_downloads == 1
    assert path.read_bytes() == sample_video()
    (first,) = origin.headers
    assert {name.lower() for name in first} & {"authorization", "cookie"} == set()
    assert first["Accept-Encoding"] == "identity"


# -- limits and destinations -------------------------------------------------------------------


async def test_a_declared_size_over_the_limit_is_refused(tmp_path: Path) -> None:
    """A Content-Length over max_bytes fails at once, without retrying or writing."""
    async with _finished() as (server, _, result):
        with pytest.raises(DownloadError, match="declares 3158 bytes"):
            await download(result, tmp_path, max_bytes=1000)
        assert server.stats.storage_downloads == 1
    assert _files(tmp_path) == []


async def test_a_streamed_size_over_the_limit_is_refused(tmp_path: Path, origin: Origin) -> None:
    """A body without Content-Length is cut off once it passes max_bytes."""
    video = Video(url=f"{origin.url}/chunked.mp4")
    with pytest.raises(DownloadError, match="larger than the limit of 1000"):
        await download(video, tmp_path, task_id="t", max_bytes=1000)
    assert len(origin.headers) == 1
    assert _files(tmp_path) == []


async def test_a_hostile_task_id_stays_in_the_directory(tmp_path: Path, origin: Origin) -> None:
    """A task id with separators and dots cannot put the file outside the destination."""
    video = Video(url=f"{origin.url}/plain.mp4", video_type="mp4")
    target = tmp_path / "videos"
    target.mkdir()
    path = await download(video, target, task_id="../../etc/passwd")
    assert path.parent == target
    assert _files(target) == [path.name]
    assert _files(tmp_path) == ["videos"]


async def test_bad_destinations_and_sources_are_refused(tmp_path: Path) -> None:
    """A file where a folder is meant, or a task without a video, fails before any request."""
    video = Video(url="http://127.0.0.1:9/never.mp4")
    failed = TaskResult(task_id="t", status=TaskStatus.FAILED, reason="moderation")
    (tmp_path / "videos").write_bytes(b"not a folder")
    for dest in (tmp_path / "videos", f"{tmp_path}/videos/", tmp_path / "videos" / "x.mp4"):
        with pytest.raises(DownloadError, match="exists and is not a folder"):
            await download(video, dest, task_id="t")
    with pytest.raises(DownloadError, match="has no video"):
        await download(failed, tmp_path / "new")
    assert _files(tmp_path) == ["videos"]
    assert (tmp_path / "videos").read_bytes() == b"not a folder"


@pytest.mark.parametrize(
    ("dest", "folder"),
    [
        ("videos", True),
        ("out/clips", True),
        ("videos/", True),
        ("out.v2/", True),
        (".cache", True),
        ("clip.mp4", False),
        ("out/clip.mov", False),
        ("existing.v2", True),
        ("existing.v2/clip.mp4", False),
    ],
)
def test_a_destination_is_a_folder_by_kind_or_by_form(
    tmp_path: Path, dest: str, folder: bool
) -> None:
    """An existing folder, a trailing separator or a name without suffix is a folder."""
    (tmp_path / "existing.v2").mkdir()
    assert is_folder_destination(f"{tmp_path}/{dest}") is folder


async def test_client_download_creates_the_folder_a_name_means(tmp_path: Path) -> None:
    """download(result, "videos") saves videos/<task>.mp4, making the folder; clip.mp4 is a file."""
    async with _finished() as (server, client, result):
        into_new = await client.download(result, tmp_path / "videos")
        into_nested = await client.download(result, f"{tmp_path}/out/clips/")
        as_file = await client.download(result, tmp_path / "new" / "clip.mp4")
        assert server.stats.storage_downloads == 3
    assert into_new == tmp_path / "videos" / f"{result.task_id}.mp4"
    assert into_nested == tmp_path / "out" / "clips" / f"{result.task_id}.mp4"
    assert as_file == tmp_path / "new" / "clip.mp4"
    for path in (into_new, into_nested, as_file):
        assert path.read_bytes() == sample_video()
        assert _files(path.parent) == [path.name]


async def test_batch_download_to_is_a_folder_whatever_its_name(tmp_path: Path) -> None:
    """generate_many saves into download_to as a folder (made if missing), never onto a file."""
    async with _finished() as (_, client, _result):
        async with client.generate_many(
            [VideoRequest(prompt="a kite")], download_to=tmp_path / "out.v2"
        ) as outcomes:
            [outcome] = [outcome async for outcome in outcomes]
        (tmp_path / "taken").write_bytes(b"a file")
        with pytest.raises(InvalidRequestError, match="download_to"):
            client.generate_many([VideoRequest(prompt="a kite")], download_to=tmp_path / "taken")
    assert outcome.ok
    assert outcome.path == str(tmp_path / "out.v2" / f"{outcome.task_id}.mp4")
    assert Path(outcome.path).read_bytes() == sample_video()
    assert (tmp_path / "taken").read_bytes() == b"a file"


@pytest.mark.parametrize(
    "task_id",
    ["../../etc/passwd", "a/b\\c", "..hidden", "-rf", "", "CON", "x" * 500, "é空\x00\n"],
)
def test_safe_filename_is_one_plain_name(task_id: str) -> None:
    """Made names have no separators, no leading dot or dash, and a bounded length."""
    name = safe_filename(task_id)
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith((".", "-"))
    assert len(name) <= MAX_NAME_CHARS + 4
    assert name.endswith(".mp4")
    assert name.split(".")[0].upper() != "CON"


def test_safe_filename_keeps_plain_ids_and_distinct_ids_apart() -> None:
    """A plain id is kept as is; ids that clean to the same text still get different names."""
    assert safe_filename("4c566b1c-11a1-425c-a807-88c7e46a1006") == (
        "4c566b1c-11a1-425c-a807-88c7e46a1006.mp4"
    )
    assert safe_filename("a/b") != safe_filename("a\\b")
    assert safe_filename("t", "../x") == "t.mp4"


def test_mp4_check_spots_cut_files(tmp_path: Path) -> None:
    """The box walk accepts the sample and rejects cut, moov-less and bogus files."""
    video = sample_video()
    path = tmp_path / "v.mp4"
    path.write_bytes(video)
    assert mp4_problem(path) is None
    path.write_bytes(video[:2000])
    assert "only" in (mp4_problem(path) or "")
    path.write_bytes(struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00")
    assert "moov" in (mp4_problem(path) or "")
    path.write_bytes(struct.pack(">I4sQ", 1, b"moov", 24) + b"12345678")
    assert mp4_problem(path) is None
    path.write_bytes(b"<html></html>")
    assert mp4_problem(path) is not None


# -- what the answer says is not trusted ------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection a download opens, by address; one that is not loopback fails the test
    before it is opened, so no test here sends anything elsewhere even if the guard broke."""
    opened: list[str] = []
    original = aiohttp.TCPConnector._wrap_create_connection

    async def wrapped(self: aiohttp.TCPConnector, *args: Any, **kwargs: Any) -> Any:
        for info in kwargs["addr_infos"]:
            address = str(info[4][0])
            opened.append(address)
            assert ipaddress.ip_address(address).is_loopback, f"tried to connect to {address}"
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.TCPConnector, "_wrap_create_connection", wrapped)
    return opened


def _stub(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("video_type", "path", "saved"),
    [("sh", "plain.mp4", "t.mp4"), ("MOV", "plain.mp4", "t.mov"), (None, "plain.mp4", "t.mp4")],
)
async def test_the_extension_comes_from_an_allow_list(
    tmp_path: Path, origin: Origin, video_type: str | None, path: str, saved: str
) -> None:
    """video_type "sh" saves a real video as .mp4, never .sh; "MOV" as .mov."""
    video = Video(url=f"{origin.url}/{path}", video_type=video_type)
    result = await download(video, tmp_path, task_id="t")
    assert result.name == saved
    assert _files(tmp_path) == [saved]


@pytest.mark.parametrize(("video_type", "path"), [("sh", "script.sh"), ("webm", "plain.mp4")])
async def test_bytes_that_are_not_the_announced_container_are_refused(
    tmp_path: Path, origin: Origin, video_type: str, path: str
) -> None:
    """A shell script announced as "sh", or an MP4 announced as WebM: refused, nothing saved."""
    video = Video(url=f"{origin.url}/{path}", video_type=video_type)
    with pytest.raises(DownloadError, match="something other than a video"):
        await download(video, tmp_path, task_id="t", retry_policy=FAST_RETRIES)
    assert _files(tmp_path) == []
    assert len(origin.headers) == 1  # not asked for again


@pytest.mark.parametrize(
    ("address", "allowed_with_private_api"),
    [
        ("169.254.169.254", False),
        ("169.254.170.2", False),
        ("fe80::1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not one bound
        ("::", False),
        ("224.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("fd00:ec2::254", False),
        ("100.100.100.200", False),
        ("168.63.129.16", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("192.168.0.10", True),
        ("fd12::1", True),
    ],
)
def test_which_addresses_a_download_may_connect_to(
    address: str, allowed_with_private_api: bool
) -> None:
    """Link-local, unspecified, multicast, metadata: never; private and loopback: with the API."""
    assert address_problem(address, allow_private=False) is not None
    allowed = address_problem(address, allow_private=True) is None
    assert allowed == allowed_with_private_api
    assert address_problem("93.184.216.34", allow_private=False) is None


async def test_every_address_a_host_resolves_to_is_checked_before_connecting(
    tmp_path: Path, origin: Origin, loopback_only: list[str]
) -> None:
    """A host resolving to a refused address among good ones: refused, no connection opened."""
    port = URL(origin.url).port
    url = f"http://storage.test:{port}/plain.mp4"
    stub = _stub({"storage.test": ["127.0.0.1", "169.254.169.254"]})
    with pytest.raises(DownloadError, match=r"169\.254\.169\.254, a cloud metadata address"):
        await download_video(
            Video(url=url), tmp_path, addresses=StorageAddresses(allow_private=True, resolve=stub)
        )
    # Loopback, when the API is not on a private address: refused the same way.
    loopback = _stub({"storage.test": ["127.0.0.1"]})
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1, a loopback address"):
        await download_video(Video(url=url), tmp_path, addresses=StorageAddresses(resolve=loopback))
    assert loopback_only == []
    assert origin.headers == []
    assert _files(tmp_path) == []
    # The addresses checked are the ones connected to: with loopback allowed, the stub's
    # 127.0.0.1 is where the video comes from ("storage.test" resolves nowhere else).
    path = await download_video(
        Video(url=url), tmp_path, addresses=StorageAddresses(allow_private=True, resolve=loopback)
    )
    assert path.read_bytes() == sample_video()
    assert loopback_only == ["127.0.0.1"]


@pytest.mark.parametrize("host", ["169.254.169.254", "[fe80::1]", "0.0.0.0", "[::ffff:a9fe:a9fe]"])  # noqa: S104
async def test_a_literal_address_is_refused_before_any_connection(
    tmp_path: Path, host: str, loopback_only: list[str]
) -> None:
    """A URL naming a refused address outright: refused before a connection is opened."""
    video = Video(url=f"http://{host}/latest/meta-data/iam?X-Signature=secret")
    with pytest.raises(DownloadError, match="refused, nothing sent") as refused:
        await download(video, tmp_path, task_id="t")
    assert "secret" not in str(refused.value)
    assert loopback_only == []
    assert _files(tmp_path) == []


async def test_a_redirect_to_a_refused_address_is_not_followed(
    tmp_path: Path, origin: Origin, loopback_only: list[str]
) -> None:
    """Each redirect hop is checked: a hop to the metadata address ends the download there."""
    origin.redirect_to = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(DownloadError, match="metadata"):
        await download(Video(url=f"{origin.url}/redirect.mp4"), tmp_path, task_id="t")
    assert len(origin.headers) == 1
    assert set(loopback_only) == {"127.0.0.1"}


async def test_whether_the_api_is_on_a_private_address() -> None:
    """Loopback, localhost and a host resolving only to private addresses are; public ones not."""
    assert await is_private_host("127.0.0.1")
    assert await is_private_host("localhost")
    assert await is_private_host("[::1]")
    assert await is_private_host("gw.internal", resolve=_stub({"gw.internal": ["10.0.0.5"]}))
    assert not await is_private_host("api.example", resolve=_stub({"api.example": ["8.8.8.8"]}))
    mixed = _stub({"mixed.example": ["10.0.0.5", "8.8.8.8"]})
    assert not await is_private_host("mixed.example", resolve=mixed)
    # A name that never resolves is not looked up: the stub would say private.
    assert not await is_private_host("a.invalid", resolve=_stub({"a.invalid": ["10.0.0.5"]}))


async def test_a_download_that_trickles_ends_at_its_deadline(
    tmp_path: Path, origin: Origin
) -> None:
    """A storage host sending a byte at a time, never silent: DownloadError at the deadline."""
    video = Video(url=f"{origin.url}/trickle.mp4", video_type="mp4")
    with pytest.raises(DownloadError, match=r"did not complete within 0\.5 s"):
        await download(video, tmp_path, task_id="t", deadline=0.5)
    assert _files(tmp_path) == []


async def test_the_client_s_download_deadline_is_timeouts_download(
    tmp_path: Path, origin: Origin
) -> None:
    """HailuoClient(timeout=Timeouts(download=...)) bounds client.download (the default 600 s)."""
    assert Timeouts().download == 600.0
    async with FakeHailuoServer(time_scale=0.001) as server:
        timeouts = Timeouts(download=0.5)
        async with HailuoClient(server.api_key, base_url=server.url, timeout=timeouts) as client:
            with pytest.raises(DownloadError, match=r"within 0\.5 s"):
                await client.download(Video(url=f"{origin.url}/trickle.mp4"), tmp_path)
    assert _files(tmp_path) == []


async def test_download_refuses_bad_options_with_a_typed_error() -> None:
    """A bad download option raises the library's typed error, not a bare ValueError."""
    done = TaskResult(task_id="t-1", status=TaskStatus.SUCCEED, raw_status="TASK_STATUS_SUCCEED")
    async with HailuoClient("test-key", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(HailuoError):
            await client.download(done, "out.mp4", max_bytes=0)
