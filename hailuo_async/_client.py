"""HailuoClient: the façade over the API layer, the shared state, watchers and batches.

Submit, poll, wait, watch, run batches, take webhooks, download: each call is delegated to
the module that does it (:mod:`._api` sends, :mod:`._watcher` polls many, :mod:`._stream`
runs batches, :mod:`._push` confirms webhooks, :mod:`._download` fetches videos).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from yarl import URL

from ._api import (
    DEFAULT_BASE_URL,
    HailuoAPI,
    SubmissionRecorder,
    check_api_key,
    check_base_url,
)
from ._callbacks import guarded_call
from ._checks import Number, check_type
from ._coordination import Coordination, coordination_from
from ._download import (
    DEFAULT_MAX_BYTES,
    DownloadProgress,
    StorageAddresses,
    download_video,
    is_private_host,
)
from ._dsn import NEEDS_PSYCOPG
from ._exceptions import InvalidRequestError, TaskFailedError, WaitTimeoutError
from ._limits import ActiveJobLimit, Limits
from ._models import TaskResult, TaskStatus, Video, VideoRequest
from ._polling import PollPolicy, PollSchedule
from ._push import WebhookConfirmer, WebhookEvent
from ._retry import RetryPolicy, UnknownSubmissionPolicy
from ._state import SharedState
from ._stream import BatchWiring, JobStream, RequestSource, job_stream
from ._task_ids import check_task_id
from ._transport import HTTPTransport, TCPTransport, Timeouts, Transport
from ._watcher import EventCallback, TaskWatcher, change_between
from ._worker import WorkerSettings
from .journal._open import is_shared_journal
from .journal._store import JobStore, SharedJobStore
from .providers import parse_webhook, provider_for
from .providers._protocol import Provider

if TYPE_CHECKING:
    from .postgres._coordinator import PostgresCoordinator

logger = logging.getLogger("hailuo_async.webhooks")

__all__ = [
    "DEFAULT_BASE_URL",
    "HailuoClient",
    "ProgressCallback",
    "SubmissionRecorder",
    "UnknownSubmissionPolicy",
]

ProgressCallback = Callable[[TaskResult], "Awaitable[None] | None"]
"""A caller's callback for a task's progress, sync or async; its errors are logged, not raised."""


class HailuoClient:
    """An asyncio client for the Hailuo video models, through the gateway or MiniMax's own API.

    Use it as an async context manager, or call :meth:`aclose` when done. ``provider`` is the
    service's dialect: ``"gateway"`` (the default), ``"minimax"``, or a
    :class:`~hailuo_async.extend.Provider` object; by default it comes from the
    ``HAILUO_PROVIDER`` variable. The key comes from ``api_key`` or the ``HAILUO_API_KEY``
    variable; the base URL from ``base_url``, the ``HAILUO_BASE_URL`` variable, or the
    provider's public host.

    ``timeout`` (seconds for a whole request, or :class:`Timeouts`), ``limits``
    (:class:`Limits`: in flight, per minute, active jobs), ``retry_policy`` and
    ``poll_policy`` configure it (``max_retries``, when given, sets
    ``retry_policy.max_retries``); a bad value of any is an :class:`InvalidRequestError`
    naming it. ``state`` shares limits, learnt durations and pushed
    results with other clients of this process (by default each client has its own, in
    memory).

    ``coordination`` (a ``postgresql://`` URL or a :class:`Coordination`; needs the
    ``[postgres]`` extra) shares the account's limits and webhooks with every process
    coordinated through the same database: ``limits`` then holds for all of them
    together, and a webhook received by any of them ends the watch of the one watching
    the task. The database connections are opened and closed by ``async with client``,
    which a coordinated client must be used in. Without it, no database is touched.

    ``transport`` (an :class:`HTTPTransport`) is where connections come from: TCP by default;
    ``FakeHailuoServer.transport()`` reaches the fake service in memory, for tests. It
    carries every request, but only the API's requests carry the key, whatever it is.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | Timeouts | None = 60.0,
        limits: Limits | None = None,
        retry_policy: RetryPolicy | None = None,
        poll_policy: PollPolicy | None = None,
        max_retries: int | None = None,
        on_unknown_submission: UnknownSubmissionPolicy = "raise",
        allow_insecure: bool = False,
        max_response_bytes: int = 8 * 1024 * 1024,
        state: SharedState | None = None,
        coordination: str | Coordination | None = None,
        provider: str | Provider | None = None,
        transport: HTTPTransport | None = None,
    ) -> None:
        self.provider = provider_for(provider)
        """The service's dialect (see :mod:`hailuo_async.providers`)."""
        api_key = check_api_key(api_key or os.environ.get("HAILUO_API_KEY"))
        base_url = check_base_url(
            base_url or os.environ.get("HAILUO_BASE_URL") or self.provider.default_base_url,
            allow_insecure=allow_insecure,
        )
        Number(whole=True, optional=True).check("max_retries", max_retries)
        if on_unknown_submission not in ("raise", "resubmit"):
            raise InvalidRequestError("on_unknown_submission", "must be 'raise' or 'resubmit'")
        for field, value, expected in (
            ("limits", limits, Limits),
            ("retry_policy", retry_policy, RetryPolicy),
            ("poll_policy", poll_policy, PollPolicy),
        ):
            if value is not None:
                check_type(field, value, expected)
        if transport is not None and not callable(getattr(transport, "connector", None)):
            raise InvalidRequestError("transport", "must be an HTTPTransport (a connector method)")
        if not isinstance(timeout, Timeouts):
            Number(above=True, optional=True).check("timeout", timeout)
        self.timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(total=timeout)
        self.limits = limits or Limits()
        self.retry_policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            self.retry_policy = attrs.evolve(self.retry_policy, max_retries=max_retries)
        self.poll_policy = poll_policy or PollPolicy()
        self._coordinator: PostgresCoordinator | None = None
        if coordination is not None:
            if state is not None:
                raise InvalidRequestError("coordination", "give either state or coordination")
            self._coordinator = _coordinator(
                coordination_from(coordination),
                api_key=api_key,
                limits=self.limits,
                retry=self.retry_policy,
                confirm=self._confirm_webhook,
                get_task=self.get_task,
            )
            state = self._coordinator.state
        self._state = state or SharedState.in_memory(self.limits, retry=self.retry_policy)
        self.transport: HTTPTransport = transport or TCPTransport()
        """Where the client's connections come from (see :class:`HTTPTransport`)."""
        self._transport = Transport(
            timeouts=self.timeouts,
            max_connections=self.limits.max_in_flight,
            max_response_bytes=max_response_bytes,
            connections=self.transport,
        )
        self._api = HailuoAPI(
            api_key=api_key,
            base_url=base_url,
            provider=self.provider,
            transport=self._transport,
            limiter=self._state.limiter,
            retry_policy=self.retry_policy,
            on_unknown_submission=on_unknown_submission,
        )
        self._webhooks = WebhookConfirmer(self._state.push)
        # Where the storage host may be: found on the first download (see StorageAddresses).
        self._storage_addresses: StorageAddresses | None = None

    def __repr__(self) -> str:
        return f"<HailuoClient provider={self.provider.name!r} base_url={self.base_url!r}>"

    @property
    def coordination(self) -> Coordination | None:
        """Where this client coordinates with other processes; None when it does not."""
        return None if self._coordinator is None else self._coordinator.coordination

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._api.base_url

    @property
    def max_retries(self) -> int:
        """How often a failed request is tried again (``retry_policy.max_retries``)."""
        return self.retry_policy.max_retries

    @property
    def on_unknown_submission(self) -> UnknownSubmissionPolicy:
        """What a submission whose outcome cannot be known does: raise, or resubmit."""
        return self._api.on_unknown_submission

    async def __aenter__(self) -> HailuoClient:
        if self._coordinator is not None and not self._coordinator.is_open:
            await self._coordinator.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. The client can be used again; it then opens a new one.

        A coordinated client also closes its database connections; ``async with`` opens
        them again.
        """
        try:
            await self._api.aclose()
        finally:
            if self._coordinator is not None and self._coordinator.is_open:
                await self._coordinator.__aexit__(None, None, None)

    # -- one job ---------------------------------------------------------------------------

    async def submit(
        self,
        request: VideoRequest,
        *,
        recorder: SubmissionRecorder | None = None,
        retry_rate_limited: bool = True,
    ) -> str:
        """Start a paid generation job and return its task id.

        Retried only where the job certainly did not start. When the request left but no
        readable answer came back, raises :class:`SubmissionUnknownError`, unless the client
        was made with ``on_unknown_submission="resubmit"``. ``recorder`` (a journal) is told
        just before each POST leaves and after each one the service certainly refused.
        ``retry_rate_limited=False`` hands a 429 back at once.
        """
        return await self._api.submit(
            request, recorder=recorder, retry_rate_limited=retry_rate_limited
        )

    async def get_task(self, task_id: str) -> TaskResult:
        """Poll a task once (retrying transient failures) and return what the service says."""
        return await self._api.get_task(task_id)

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TaskResult:
        """Poll until the task ends and return its result.

        Raises :class:`TaskFailedError` if it failed and :class:`WaitTimeoutError` if it has
        not ended after ``timeout`` seconds (the job goes on at the service).
        ``on_progress`` is called (or awaited) with each answer whose status or progress moved;
        an exception it raises is logged with the task id, and the wait goes on.
        """
        return await self._wait(
            task_id, timeout=timeout, on_progress=on_progress, submitted_at=None
        )

    async def generate(
        self,
        request: VideoRequest,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TaskResult:
        """Submit a job and wait for it to end; see :meth:`submit` and :meth:`wait`."""
        task_id = await self.submit(request)
        return await self._wait(
            task_id, timeout=timeout, on_progress=on_progress, submitted_at=time.monotonic()
        )

    async def _wait(
        self,
        task_id: str,
        *,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        submitted_at: float | None,
    ) -> TaskResult:
        check_task_id(task_id)
        latest: list[TaskResult] = []  # the last answer, still there when the timeout strikes
        with anyio.move_on_after(timeout):
            await self._poll_until_done(task_id, on_progress, submitted_at, latest)
        last = latest[0] if latest else None
        # The answer decides, not the deadline: it may fall while on_progress runs.
        if last is None or not last.is_done:
            assert timeout is not None
            raise WaitTimeoutError(task_id, last, timeout)
        if last.status is TaskStatus.FAILED:
            raise TaskFailedError(last)
        return last

    async def _poll_until_done(
        self,
        task_id: str,
        on_progress: ProgressCallback | None,
        submitted_at: float | None,
        latest: list[TaskResult],
    ) -> TaskResult:
        schedule = PollSchedule(
            self.poll_policy, history=self._state.durations, timed=submitted_at is not None
        )
        started = submitted_at if submitted_at is not None else time.monotonic()
        if submitted_at is not None:
            await anyio.sleep(schedule.first_delay())
        previous: TaskResult | None = None
        while True:
            result = await self.get_task(task_id)
            latest[:] = [result]
            if on_progress is not None and change_between(previous, result) is not None:
                await guarded_call(on_progress, result, task_id=task_id)
            previous = result
            if result.is_done:
                schedule.ended(time.monotonic() - started, result)
                return result
            await anyio.sleep(schedule.next_delay(result, elapsed=time.monotonic() - started))

    # -- push ------------------------------------------------------------------------------

    async def handle_webhook(
        self, body: bytes | str | Mapping[str, Any] | WebhookEvent
    ) -> TaskResult | None:
        """Take a webhook event the service pushed; return the result it delivered, if any.

        ``body`` is the request body as received (or already decoded), in the provider's
        dialect. A body that is not an event of the documented shape raises
        :class:`~hailuo_async.webhooks.WebhookError`. Events of other types, events that do
        not claim an end (MiniMax's challenge among them: the receivers answer it), task ids
        no open watcher is watching (unknown, or ended already) and duplicates are ignored:
        None. Otherwise the event is confirmed by polling the task once (the body is never
        trusted: no signature is documented) and the confirmed result goes to every open
        watcher watching the id. A failed confirmation is logged and ignored; the watchers'
        backstop polls catch up.

        A coordinated client first tells the other processes (one ``NOTIFY``): the one
        watching the task confirms it with its own GET, and nobody fetches an id nobody
        watches.
        """
        event = body if isinstance(body, WebhookEvent) else parse_webhook(body, self.provider)
        if self._coordinator is not None:
            await self._coordinator.publish(event)
        return await self._confirm_webhook(event)

    async def _relay_webhook(self, event: WebhookEvent) -> None:
        """Tell the other coordinated processes of ``event``, without confirming it here."""
        if self._coordinator is None:
            return
        try:
            await self._coordinator.publish(event)
        except Exception:  # a background relay must not kill the receiver; backstops catch up
            logger.exception("webhook event for task %s could not be relayed", event.task_id)

    async def _confirm_webhook(self, event: WebhookEvent) -> TaskResult | None:
        return await self._webhooks.handle(
            event, get_task=self.get_task, cool_down=self.poll_policy.min_interval
        )

    # -- many ------------------------------------------------------------------------------

    def watch(
        self,
        task_ids: Iterable[str] = (),
        *,
        on_event: EventCallback | None = None,
        keep_open: bool = False,
        poll_policy: PollPolicy | None = None,
        max_concurrent_polls: int | None = None,
        backstop_interval: float | None = None,
    ) -> TaskWatcher:
        """A watcher over ``task_ids`` (more can be added); use it with ``async with``.

        ``async for result in watcher`` yields each task's TaskResult as it ends.
        ``poll_policy`` overrides the client's; ``max_concurrent_polls`` caps this watcher's
        polls in flight (default: the client's ``limits.max_in_flight``);
        ``backstop_interval`` spaces the backstop polls of tasks whose end comes by webhook.
        See :class:`TaskWatcher`.
        """
        return TaskWatcher(
            self.get_task,
            self._state,
            task_ids,
            poll_policy=poll_policy or self.poll_policy,
            retry_policy=self.retry_policy,
            on_event=on_event,
            keep_open=keep_open,
            max_concurrent_polls=max_concurrent_polls,
            backstop_interval=backstop_interval,
        )

    def generate_many(
        self,
        requests: RequestSource,
        *,
        max_active_jobs: int | None = None,
        on_event: EventCallback | None = None,
        journal: JobStore | str | os.PathLike[str] | None = None,
        download_to: str | os.PathLike[str] | None = None,
        retry_failed: bool = False,
        batch: str = "default",
        worker: WorkerSettings | None = None,
    ) -> JobStream:
        """Run a batch: submit each request, poll the jobs, yield each JobOutcome as it ends.

        ``requests`` (an iterable or async iterable of VideoRequest, or of ``(key,
        VideoRequest)`` pairs) is read lazily. At most ``max_active_jobs`` jobs are submitted
        and unfinished at once; without it, the client's limit (given, or discovered from
        429s) applies. One failed job never stops the others; a refusal of the account (a
        refused key, a model the key may not use, a balance that cannot pay) stops the
        submissions, and the jobs not sent yet come out with that error, unsent (a rerun
        submits them).

        ``journal`` (a SQLite file path, or an open :class:`~hailuo_async.extend.JobStore`)
        makes the batch durable and resumable: run it again and the jobs an earlier run ended
        are yielded from the journal (``outcome.replayed``) without a request, submitted ones
        watched again, none paid twice; ``retry_failed`` submits failed ones again. A SQLite
        journal is this batch's alone while it runs: a second batch on the same file (in
        this process or another) raises :class:`~hailuo_async.JournalInUseError`.
        ``download_to`` downloads each video into that folder as its job ends (always a
        folder, whatever its name; created if missing). Use it as
        ``async with client.generate_many(...) as outcomes``.

        A ``postgresql://`` journal (or an open :class:`~hailuo_async.journal.PostgresJobStore`)
        is shared: ``batch`` names the batch in it, and this call adds the requests (those
        added before are left as they are) and then works the batch as one worker among any
        number (see :meth:`work`, whose ``worker`` settings it takes): processes running the
        same call cooperate, and each yields the outcomes it finished, and (replayed) those
        of its requests that had ended before it started. ``retry_failed`` puts the failed
        ones back for the workers: each failure is submitted again once, however many
        processes ask at the same time.
        """
        if max_active_jobs is not None and (
            isinstance(max_active_jobs, bool)
            or not isinstance(max_active_jobs, int)
            or max_active_jobs < 1
        ):
            raise InvalidRequestError("max_active_jobs", "must be a whole number, 1 or more")
        shared = is_shared_journal(journal)
        if shared and worker is None:
            worker = WorkerSettings()
        if not shared and worker is not None:
            raise InvalidRequestError("worker", "needs a shared (postgresql://) journal")
        return self._job_stream(
            requests,
            max_active_jobs=max_active_jobs,
            on_event=on_event,
            journal=journal,
            download_to=download_to,
            retry_failed=retry_failed,
            batch=batch,
            worker=worker,
        )

    def work(
        self,
        journal: SharedJobStore | str,
        batch: str = "default",
        *,
        download_to: str | os.PathLike[str] | None = None,
        worker_id: str | None = None,
        lease: float = 30.0,
        claim: int = 10,
        idle_poll: float = 1.0,
        max_active_jobs: int | None = None,
        on_event: EventCallback | None = None,
    ) -> JobStream:
        """Work a shared batch as one more worker; yield the outcomes this worker finished.

        ``journal`` is a ``postgresql://`` URL or an open
        :class:`~hailuo_async.journal.PostgresJobStore` (which names its own batch; any
        :class:`~hailuo_async.extend.SharedJobStore` will do);
        ``batch`` names the batch in the URL's database.
        The worker claims jobs under leases of ``lease`` seconds (at most ``claim`` at a time,
        as places among its active jobs free up), keeps them alive with a heartbeat every
        ``lease / 3``, submits the recorded ones (only while it holds the lease: a job whose
        lease ran out is dropped, not sent), watches the submitted ones (a dead worker's jobs
        are taken over once its lease runs out) and downloads into ``download_to`` where it
        runs. The stream ends once no job of the batch has work left, leaving releases the
        worker's leases. ``worker_id`` defaults to the host, process id and a random part.
        Use it as ``async with client.work(url, "run-1") as outcomes``.
        """
        if not is_shared_journal(journal):
            raise InvalidRequestError(
                "journal", "must be a postgresql:// URL or an open PostgresJobStore"
            )
        named = {"worker_id": worker_id} if worker_id is not None else {}
        settings = WorkerSettings(**named, lease=lease, claim=claim, idle_poll=idle_poll)
        return self._job_stream(
            (),
            max_active_jobs=max_active_jobs,
            on_event=on_event,
            journal=journal,
            download_to=download_to,
            retry_failed=False,
            batch=batch,
            worker=settings,
        )

    def _job_stream(
        self,
        requests: RequestSource,
        *,
        max_active_jobs: int | None,
        on_event: EventCallback | None,
        journal: JobStore | str | os.PathLike[str] | None,
        download_to: str | os.PathLike[str] | None,
        retry_failed: bool,
        batch: str,
        worker: WorkerSettings | None,
    ) -> JobStream:
        if max_active_jobs is not None and (
            isinstance(max_active_jobs, bool)
            or not isinstance(max_active_jobs, int)
            or max_active_jobs < 1
        ):
            raise InvalidRequestError("max_active_jobs", "must be a whole number, 1 or more")
        coordination = self.coordination
        if worker is not None and coordination is not None:
            worker = worker.within(coordination.lease)
        if (
            download_to is not None
            and Path(download_to).exists()
            and not Path(download_to).is_dir()
        ):
            raise InvalidRequestError("download_to", "names a file; it must be a folder")
        active_jobs = (
            self._state.active_jobs
            if max_active_jobs is None
            else ActiveJobLimit(known=max_active_jobs)
        )
        wiring = BatchWiring(
            provider=self.provider.name,
            submit=self._api.submit,
            watcher=self.watch(keep_open=True, on_event=on_event),
            active_jobs=active_jobs,
            download=self.download,
            fetch_result=self.get_task,
            max_submitting=self._state.limiter.max_in_flight,
        )
        return job_stream(
            requests,
            wiring,
            journal=journal,
            download_to=download_to,
            retry_failed=retry_failed,
            on_unknown_submission=self.on_unknown_submission,
            batch=batch,
            worker=worker,
        )

    # -- downloads -------------------------------------------------------------------------

    async def download(
        self,
        source: TaskResult | Video,
        dest: str | os.PathLike[str],
        *,
        task_id: str | None = None,
        progress: DownloadProgress | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verify: bool = True,
    ) -> Path:
        """Download a finished task's video to ``dest`` (a file, or a folder to name it in).

        ``dest`` is a folder when it is an existing folder, ends in a separator, or has no
        suffix (``"videos"``, ``"out/clips/"``): the file is then named after the task id.
        A name with a suffix (``"clip.mp4"``) is the file itself, replaced if it exists.
        Missing folders are created. The file appears complete or not at all; the storage
        host never gets the API key; an expired URL is renewed through the service (the
        gateway's task is polled again, MiniMax's file retrieved again).

        The answer is not trusted: the extension comes from an allow-list (mp4, mov, webm),
        bytes that are not the announced container are refused, the storage host may not be
        on a link-local, unspecified or metadata address (nor a private or loopback one,
        unless the API is on one), and the whole download must end within
        ``Timeouts.download`` (600 s by default). ``verify`` also checks the MP4 structure.
        Raises :class:`DownloadError`.
        """
        if self._storage_addresses is None:
            host = URL(self.base_url).host or ""
            self._storage_addresses = StorageAddresses(allow_private=await is_private_host(host))

        async def refresh(task_id: str) -> TaskResult:
            if isinstance(source, TaskResult) and source.task_id == task_id:
                return await self._api.refresh_video(source)
            return await self._api.get_task(task_id)

        return await download_video(
            source,
            dest,
            addresses=self._storage_addresses,
            transport=self.transport,
            task_id=task_id,
            refresh=refresh,
            progress=progress,
            max_bytes=max_bytes,
            retry_policy=self.retry_policy,
            verify=verify,
            connect_timeout=self.timeouts.connect,
            read_timeout=self.timeouts.read,
            limiter=self._state.limiter,
            deadline=self.timeouts.download,
        )


def _coordinator(coordination: Coordination, **wiring: Any) -> PostgresCoordinator:
    # Imported here: a client without coordination never loads the database driver.
    try:
        from .postgres._coordinator import PostgresCoordinator  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidRequestError("coordination", NEEDS_PSYCOPG) from exc
    return PostgresCoordinator(coordination, **wiring)
