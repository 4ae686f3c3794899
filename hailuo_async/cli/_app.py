"""The ``hailuo`` command line: generate, batch, status, watch, download, fake-server."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import anyio
import click
from click.core import ParameterSource
from rich.console import Console

from .._coordination import Coordination
from .._decoding import result_summary
from .._dsn import mask_dsn
from .._exceptions import (
    HailuoError,
    InvalidRequestError,
    NotFoundError,
    TaskFailedError,
)
from .._models import Duration, Resolution, TaskResult, VideoRequest
from .._version import __version__
from .._watcher import TaskEvent
from ..journal import JobConflictError, SQLiteJobStore
from ..testing.__main__ import main as fake_server_main
from ._batch_run import BatchReport, next_steps, run_batch, summary
from ._coordinate import coordination_for, coordination_options
from ._display import (
    JobView,
    Ticker,
    WatchView,
    add_task_row,
    estimate_table,
    say,
    shown_path,
    status_line,
    status_text,
    task_table,
)
from ._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    InputError,
    Interrupted,
    describe,
    error_for,
)
from ._holds import check_earlier_results, held_journal, results_held
from ._inputs import BatchFile, BatchFileError, image_argument, load_batch
from ._interrupt import run_interruptibly
from ._pricing import ESTIMATED_PRICE_PER_JOB_USD, estimate
from ._service import (
    Service,
    Settings,
    check_key,
    common_options,
    connect,
    setting_value,
    settings_from,
)
from ._work import (
    JournalParam,
    check_batch_exists,
    check_journal,
    is_shared,
    run_work,
    show_batch_status,
    work_summary,
)

__all__ = ["cli"]

_MAX_PROBLEMS_SHOWN = 50
_JOURNAL_NAME = "journal.sqlite"
_SIMULATED_JOURNAL_NAME = "journal-simulated.sqlite"

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _stdout() -> Console:
    # Made when a command runs, so test runners that swap sys.stdout are honoured.
    return Console(file=sys.stdout, highlight=False)


def _stderr() -> Console:
    return Console(file=sys.stderr, highlight=False)


def _run(settings: Settings, work: Callable[[], Awaitable[int]]) -> int:
    """Run a command's async part; turn any error into one line (or a traceback with --debug)."""
    if settings.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        return anyio.run(work, backend="asyncio")
    except click.ClickException:
        raise
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
    except Exception as exc:
        if settings.debug:
            raise
        raise error_for(exc) from None


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {path}: {exc.strerror or exc}") from None


def _interactive() -> bool:
    """True when someone can answer a question at a terminal."""
    return sys.stdin.isatty()


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="hailuo")
def cli() -> None:
    """Make Hailuo-02 videos: one job, a whole batch, or follow jobs already started.

    Set your key with `export HAILUO_API_KEY=...`, or add --simulate to any command to run it
    against a local fake service (no key, no cost, real MP4 files).
    """


# -- generate ------------------------------------------------------------------------------


@cli.command(short_help="Make one video, with live status; print its path.")
@click.argument("prompt")
@click.option("--image", metavar="PATH|URL", help="First frame: a local image or a URL.")
@click.option("--end-image", metavar="PATH|URL", help="Last frame: a local image or a URL.")
@click.option("--duration", type=click.Choice(["6", "10"]), default="6", show_default=True)
@click.option(
    "--resolution", type=click.Choice(["768P", "1080P"]), default="768P", show_default=True
)
@click.option(
    "--no-prompt-expansion", is_flag=True, help="Do not let the service rewrite the prompt."
)
@click.option("--fast-pretreatment", is_flag=True, help="Spend less time on prompt optimisation.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("videos"),
    show_default=True,
    help="Folder for the video.",
)
@click.option("--dry-run", is_flag=True, help="Check the request and estimate its price.")
@click.option("--price-per-job", type=click.FloatRange(min=0), metavar="USD")
@common_options
@click.pass_context
def generate(
    ctx: click.Context,
    *,
    prompt: str,
    image: str | None,
    end_image: str | None,
    duration: str,
    resolution: str,
    no_prompt_expansion: bool,
    fast_pretreatment: bool,
    out: Path,
    dry_run: bool,
    price_per_job: float | None,
) -> None:
    """Make one video from PROMPT, with live status, and print the downloaded file's path."""
    settings = settings_from(ctx)
    cwd = Path.cwd()
    try:
        request = VideoRequest(
            prompt=prompt,
            image=None if image is None else image_argument(image, cwd),
            end_image=None if end_image is None else image_argument(end_image, cwd),
            duration=cast("Duration", int(duration)),
            resolution=cast("Resolution", resolution),
            enable_prompt_expansion=not no_prompt_expansion,
            fast_pretreatment=fast_pretreatment,
        )
    except InvalidRequestError as exc:
        raise InputError(f"invalid request: {describe(exc)}") from None
    if dry_run:
        _stdout().print(estimate_table(estimate([request], price_per_job=price_per_job)))
        _print_estimate_note(_stdout(), price_per_job)
        ctx.exit(EXIT_OK)
    check_key(settings)
    _make_dir(out)  # the download names the file inside it
    ctx.exit(_run(settings, lambda: _generate(settings, request, out)))


async def _generate(settings: Settings, request: VideoRequest, out: Path) -> int:
    console = _stderr()
    view = JobView(request.prompt)
    path: Path | None = None

    async with connect(settings) as service:
        client = service.client

        async def body() -> None:
            nonlocal path
            async with Ticker(console, view) as ticker:
                view.task_id = await client.submit(request)
                view.phase = "waiting"
                if not ticker.active:
                    say(console, f"submitted task {view.task_id} ({service.description})")

                def on_progress(result: TaskResult) -> None:
                    previous, view.result = view.result, result
                    if not ticker.active and (previous is None or previous.status != result.status):
                        say(console, status_line(result))

                result = await client.wait(view.task_id, on_progress=on_progress)
                view.phase = "downloading"
                path = await client.download(result, out)
                view.phase = ""

        try:
            interrupted = await run_interruptibly(body)
        except TaskFailedError as exc:
            raise CliError(str(exc)) from None
    if interrupted:
        if view.task_id is None:
            say(console, "stopped before the job was accepted")
        elif view.result is not None and view.result.is_done:
            say(
                console,
                f"stopped; task {view.task_id} has ended: fetch its video with "
                f"`hailuo download {view.task_id} --out {shlex.quote(str(out))}`",
            )
        else:
            say(
                console,
                f"stopped; task {view.task_id} keeps running at the service. Follow it with "
                f"`hailuo watch {view.task_id}` and fetch it with "
                f"`hailuo download {view.task_id} --out {shlex.quote(str(out))}`",
            )
        return EXIT_INTERRUPTED
    assert path is not None
    click.echo(shown_path(path))
    return EXIT_OK


def _print_estimate_note(console: Console, price_per_job: float | None) -> None:
    if price_per_job is None:
        prices = ", ".join(
            f"{d} s {r} ${p:.2f}" for (d, r), p in ESTIMATED_PRICE_PER_JOB_USD.items()
        )
        say(
            console,
            f"This is an estimate from the built-in table ESTIMATED_PRICE_PER_JOB_USD ({prices}); "
            "your provider may charge otherwise: pass --price-per-job to use your own price.",
            style="dim",
        )
    else:
        say(
            console,
            f"This is an estimate at ${price_per_job:.2f} per job (--price-per-job).",
            style="dim",
        )


# -- batch ---------------------------------------------------------------------------------


def _batch_options(out_help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """--out, --max-active and --rpm, as `batch` and `work` both take them."""

    def add(command: Callable[..., None]) -> Callable[..., None]:
        options = [
            click.option(
                "--out",
                type=click.Path(file_okay=False, path_type=Path),
                default=Path("videos"),
                show_default=True,
                help=out_help,
            ),
            click.option(
                "--max-active",
                type=click.IntRange(min=1),
                metavar="N",
                help="At most N jobs submitted and unfinished at once; with coordination, "
                "for all the account's processes together (default: found from the service).",
            ),
            click.option(
                "--rpm",
                type=click.FloatRange(min=0, min_open=True),
                metavar="N",
                help="Your account's requests per minute, shared by its coordinated processes "
                "(default: found from the service's 429s).",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return add


@cli.command(short_help="Run a file of jobs with a live view; resumable.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_batch_options("Folder for the videos, results.jsonl and the journal.")
@click.option(
    "--journal",
    type=JournalParam(),
    metavar="PATH|URL",
    help=f"Journal that makes the batch resumable (default OUT/{_JOURNAL_NAME}, or "
    f"OUT/{_SIMULATED_JOURNAL_NAME} with --simulate). A postgresql:// URL is shared: "
    "the file's jobs are added to batch --name, and any number of `hailuo work` "
    "processes may join.",
)
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="The batch's name in a postgresql:// journal.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Submit again the jobs that failed in an earlier run (new paid jobs).",
)
@click.option(
    "--new-run",
    is_flag=True,
    help="Start over in an OUT whose journal is missing or empty: its results.jsonl (an "
    "earlier run's) is kept as results-TIME.jsonl, and every job is submitted as a new paid "
    "job. Without it such a run is refused.",
)
@click.option("--dry-run", is_flag=True, help="Validate the file, count and price the jobs.")
@click.option(
    "--price-per-job",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Price of one job for --dry-run (default: a built-in table).",
)
@click.option(
    "--confirm-above",
    type=click.IntRange(min=0),
    metavar="N",
    help="Ask before submitting more than N jobs (when at a terminal).",
)
@coordination_options
@common_options
@click.pass_context
def batch(
    ctx: click.Context,
    *,
    file: Path,
    out: Path,
    max_active: int | None,
    rpm: float | None,
    journal: Path | str | None,
    name: str,
    retry_failed: bool,
    new_run: bool,
    dry_run: bool,
    price_per_job: float | None,
    confirm_above: int | None,
    coordination: str | None,
    no_coordination: bool,
) -> None:
    """Run every job of FILE and download the videos, with a live view; resumable.

    FILE is JSONL (one request object per line: prompt, image, end_image, duration,
    resolution, enable_prompt_expansion, fast_pretreatment, and an optional "key") or plain
    text (one prompt per line; blank lines and lines starting with # are skipped). Every line
    is checked before anything is sent. Results go to OUT/results.jsonl as jobs finish.
    Running the same command again resumes: finished jobs are skipped and submitted ones are
    followed, not submitted twice.

    With a postgresql:// journal (or --coordination URL), --rpm and --max-active are the
    account's, shared with every process coordinated through that database.

    One run at a time per OUT and per journal: a second one stops at once (exit 2) naming
    the run that holds them. Where the journal is missing or empty but OUT/results.jsonl
    lists an earlier run's jobs, the run is refused (exit 2): give that run's --journal, or
    --new-run to start over.

    Exit status: 0 all jobs succeeded, 1 some failed (or were not sent, or not downloaded),
    2 usage error, invalid file, or a refusal before anything was sent, 130 stopped by Ctrl-C.
    """
    settings = settings_from(ctx)
    stdout = _stdout()
    _check_name(ctx, journal)
    loaded = _load_or_exit(file)
    if dry_run:
        requests = [job.request for job in loaded.jobs]
        say(stdout, f"{file}: {len(requests)} valid job(s) ({loaded.format}); nothing was sent.")
        stdout.print(estimate_table(estimate(requests, price_per_job=price_per_job)))
        _print_estimate_note(stdout, price_per_job)
        ctx.exit(EXIT_OK)
    if (
        confirm_above is not None
        and len(loaded.jobs) > confirm_above
        and not settings.simulate
        and _interactive()
    ):
        total = estimate((j.request for j in loaded.jobs), price_per_job=price_per_job).total
        cost = f" (estimated ${total:,.2f})" if total is not None else ""
        if not click.confirm(f"Submit {len(loaded.jobs)} paid jobs{cost}?", err=True):
            raise CliError("cancelled; nothing was sent")
    shared_limits = coordination_for(
        journal, url=coordination, off=no_coordination, simulate=settings.simulate
    )
    check_key(settings)
    _make_dir(out)
    resume, masked = _resume_command(ctx)
    if masked:
        resume_note = " (the database password shows as ***: put it back, or set PGPASSWORD)"
    else:
        resume_note = ""
    if journal is None:
        journal = out / (_SIMULATED_JOURNAL_NAME if settings.simulate else _JOURNAL_NAME)
    journal_path: Path | str = journal

    async def run(journal: SQLiteJobStore | str) -> BatchReport:
        try:
            async with connect(settings, **_limits(rpm, max_active, shared_limits)) as service:
                return await run_batch(
                    service,
                    loaded,
                    out=out,
                    journal=journal,
                    max_active_jobs=None if shared_limits is not None else max_active,
                    retry_failed=retry_failed,
                    name=name,
                    console=stdout,
                )
        except JobConflictError as exc:
            raise InputError(
                f"{exc}: {journal_path} was written for another version of {file}; "
                "give the changed lines new keys, or use another --out or --journal"
            ) from None

    async def work() -> int:
        await check_journal(journal_path, name)
        with results_held(out):
            if isinstance(journal_path, str):
                report = await run(journal_path)
            else:
                check_earlier_results(
                    out, journal_path, batch=name, simulated=settings.simulate, new_run=new_run
                )
                store = held_journal(journal_path, batch=name)
                try:
                    await store.open()
                    report = await run(store)
                finally:
                    await store.aclose()
        return _end_of_batch(
            stdout, report, resume=resume, note=resume_note, retry_failed=retry_failed
        )

    ctx.exit(_run(settings, work))


def _end_of_batch(
    console: Console, report: BatchReport, *, resume: str, note: str, retry_failed: bool
) -> int:
    """Print the summary and what to do next; return the exit status."""
    for table in summary(report):
        console.print(table)
    if report.interrupted:
        resumed = f"{resume} --retry-failed" if retry_failed else resume
        say(
            console,
            f"Stopped. Finished jobs are in {shown_path(report.results_path)}; jobs already "
            f"submitted are kept in the journal. To resume, run: {resumed}{note}",
            style="yellow",
        )
        return EXIT_INTERRUPTED
    for advice in next_steps(report, resume=resume, note=note):
        say(console, advice, style="yellow")
    return EXIT_OK if report.all_succeeded else EXIT_FAILED


def _check_name(ctx: click.Context, journal: Path | str | None) -> None:
    """--name names a batch in a postgresql:// journal: refused (exit 2) with any other."""
    given = ctx.get_parameter_source("name") not in (None, ParameterSource.DEFAULT)
    if given and not is_shared(journal):
        raise InputError(
            "--name names a batch in a postgresql:// journal (--journal URL); a SQLite "
            "journal holds one batch: give each batch its own --out or --journal"
        )


def _limits(
    rpm: float | None, max_active: int | None, coordination: Coordination | None
) -> dict[str, Any]:
    """The client's limits: with coordination, --max-active is the account's cap too.

    Without it, --max-active caps this process's batch alone (as the run's own limit).
    """
    shared: dict[str, Any] = {"requests_per_minute": rpm, "coordination": coordination}
    if coordination is not None:
        shared["max_active_jobs"] = max_active
    return shared


def _load_or_exit(file: Path) -> BatchFile:
    try:
        return load_batch(file)
    except BatchFileError as exc:
        err = _stderr()
        for problem in exc.problems[:_MAX_PROBLEMS_SHOWN]:
            say(err, f"{file}:{problem.line}: {problem.message}")
        hidden = len(exc.problems) - _MAX_PROBLEMS_SHOWN
        if hidden > 0:
            say(err, f"... and {hidden} more problem(s)")
        raise InputError(exc.summary) from None


# Options the printed command leaves out: secrets, and what says what to do rather than where
# and how the batch runs (--retry-failed is added where it is meant).
_NOT_RESUMED = frozenset(
    {"api_key", "dry_run", "price_per_job", "debug", "retry_failed", "new_run"}
)


# Shown even at their default, so the command says where it writes.
_ALWAYS_RESUMED = frozenset({"out"})


def _resume_command(ctx: click.Context) -> tuple[str, bool]:
    """The command that picks the batch up where it stopped, and whether a password was masked.

    Every option given (on the command line or by its variable) that decides where and how
    the batch runs is kept: the service (--base-url, --simulate ...), the journal, the limits,
    the coordination. The API key is never printed (it comes from HAILUO_API_KEY again), nor
    a database password (libpq reads PGPASSWORD).
    """
    command = ctx.command
    words = ["hailuo", ctx.info_name or command.name or "batch"]
    masked = False
    for param in command.params:
        name = param.name
        if name is None or name in _NOT_RESUMED:
            continue
        source = ctx.get_parameter_source(name)
        defaulted = source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        if defaulted and name not in _ALWAYS_RESUMED:
            continue
        value = ctx.params[name] if param.expose_value else setting_value(ctx, name)
        if value is None or value is False:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        assert isinstance(param, click.Option)
        if param.is_flag:
            words.append(param.opts[0])
            continue
        text = repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, str) and mask_dsn(value) != value:
            text, masked = mask_dsn(value), True
        words += [param.opts[0], text]
    return shlex.join(words), masked


# -- status / watch / download -------------------------------------------------------------


@cli.command(short_help="Show tasks' status, progress and ETA, or a shared batch's.")
@click.argument("task_ids", nargs=-1, metavar="TASK_ID...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task.")
@click.option(
    "--journal",
    type=JournalParam(),
    metavar="URL",
    help="Instead of tasks, show the batch --name in this postgresql:// journal.",
)
@click.option(
    "--name", default="default", show_default=True, help="The batch's name in the journal."
)
@common_options
@click.pass_context
def status(
    ctx: click.Context,
    *,
    task_ids: tuple[str, ...],
    as_json: bool,
    journal: Path | str | None,
    name: str,
) -> None:
    """Show each task's status, progress, ETA and video URL (one poll each).

    With --journal postgresql://... --name NAME, show that shared batch instead: its jobs
    by state, the workers holding leases, and the jobs ended in the last minute.
    """
    settings = settings_from(ctx)
    _check_name(ctx, journal)
    if journal is not None:
        if task_ids or not is_shared(journal):
            raise InputError("--journal takes a postgresql:// URL, and no task ids")
        shared_journal = journal

        async def show() -> int:
            await check_journal(shared_journal, name)
            await check_batch_exists(shared_journal, name)
            found = await show_batch_status(shared_journal, name, _stdout())
            return EXIT_OK if found else EXIT_FAILED

        ctx.exit(_run(settings, show))
    if not task_ids:
        raise InputError("give one or more TASK_IDs, or --journal URL --name NAME")
    check_key(settings)

    async def work() -> int:
        async with connect(settings) as service:
            answers = await _poll_all(service, task_ids)
        code = EXIT_OK
        table = task_table("Tasks")
        for task_id, answer in answers:
            shown: TaskResult | str
            if isinstance(answer, HailuoError):
                code = EXIT_FAILED
                shown = _hint(answer, simulated=service.simulated)
            else:
                shown = answer
            if as_json:
                click.echo(_json_line(task_id, shown))
            else:
                add_task_row(table, task_id, shown)
        if not as_json:
            _stdout().print(table)
        return code

    ctx.exit(_run(settings, work))


@cli.command(short_help="Join a shared batch as one more worker.")
@click.option(
    "--journal",
    type=JournalParam(),
    required=True,
    metavar="URL",
    help="The postgresql:// journal that holds the batch.",
)
@click.option(
    "--name", default="default", show_default=True, help="The batch's name in the journal."
)
@_batch_options("Folder for the videos this worker finishes.")
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a dead worker's jobs stay its own before others take them over.",
)
@click.option("--worker-id", metavar="ID", help="This worker's name (default: host-pid-random).")
@coordination_options
@common_options
@click.pass_context
def work(
    ctx: click.Context,
    *,
    journal: Path | str,
    name: str,
    out: Path,
    max_active: int | None,
    rpm: float | None,
    lease: float,
    worker_id: str | None,
    coordination: str | None,
    no_coordination: bool,
) -> None:
    """Work the batch NAME of a shared journal until no job of it has work left.

    Claims jobs under leases, submits the ones not sent yet, follows the submitted ones
    (taking over those of workers that died), and downloads the videos into OUT. Its
    --rpm and --max-active are the account's, shared with every worker coordinated through
    the journal's database (or --coordination URL; --no-coordination keeps them to this
    process). Add jobs
    with `hailuo batch FILE --journal URL --name NAME`; see them with `hailuo status
    --journal URL --name NAME`.

    Exit status: 0 the batch is done and this worker's jobs succeeded, 1 some failed,
    2 usage error (or no batch NAME in the journal: the batches it holds are listed),
    130 stopped by Ctrl-C.
    """
    settings = settings_from(ctx)
    if not is_shared(journal):
        raise InputError("--journal must be a postgresql:// URL (a shared journal)")
    shared_journal = journal
    shared_limits = coordination_for(
        journal, url=coordination, off=no_coordination, simulate=settings.simulate, lease=lease
    )
    check_key(settings)
    _make_dir(out)
    stdout = _stdout()

    async def run() -> int:
        await check_journal(shared_journal, name)
        async with connect(settings, **_limits(rpm, max_active, shared_limits)) as service:
            await check_batch_exists(shared_journal, name)  # before any request
            report = await run_work(
                service,
                journal=shared_journal,
                name=name,
                out=out,
                worker_id=worker_id,
                lease=lease,
                max_active_jobs=None if shared_limits is not None else max_active,
                console=stdout,
            )
        stdout.print(work_summary(report))
        if report.interrupted:
            return EXIT_INTERRUPTED
        if report.not_downloaded:
            say(
                stdout,
                f"{report.not_downloaded} job(s) finished (and were paid for) but their video "
                "could not be saved: run `hailuo work` again (or the batch) to fetch them; "
                "nothing is paid again.",
                style="yellow",
            )
        return EXIT_FAILED if report.failed or report.not_downloaded else EXIT_OK

    ctx.exit(_run(settings, run))


@cli.command(short_help="Follow tasks live until they end.")
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK_ID...")
@common_options
@click.pass_context
def watch(ctx: click.Context, *, task_ids: tuple[str, ...]) -> None:
    """Follow tasks live until each one ends; exit 0 only if all succeeded."""
    settings = settings_from(ctx)
    check_key(settings)

    async def work() -> int:
        console = _stderr()
        view = WatchView(task_ids)
        # The live view goes away at the end: the final table is printed once, on stdout.
        async with connect(settings) as service, Ticker(console, view, transient=True) as ticker:

            def on_event(event: TaskEvent) -> None:
                if view.on_event(event) and event.result is not None and not ticker.active:
                    say(console, status_line(event.result))

            async def body() -> None:
                async with service.client.watch(view.task_ids, on_event=on_event) as watcher:
                    while True:
                        try:
                            task_id, outcome = await watcher.next_outcome()
                        except StopAsyncIteration:
                            return
                        if isinstance(outcome, HailuoError):
                            view.errors[task_id] = _hint(outcome, simulated=service.simulated)
                            if not ticker.active:
                                say(console, f"{task_id}  {view.errors[task_id]}", style="red")
                        else:
                            view.latest[task_id] = outcome

            interrupted = await run_interruptibly(body)
        if interrupted:
            say(console, "stopped; the tasks keep running at the service")
            return EXIT_INTERRUPTED
        _stdout().print(view)
        return EXIT_OK if view.all_succeeded else EXIT_FAILED

    ctx.exit(_run(settings, work))


@cli.command(short_help="Download finished tasks' videos.")
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK_ID...")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("videos"),
    show_default=True,
    help="Folder for the videos.",
)
@common_options
@click.pass_context
def download(ctx: click.Context, *, task_ids: tuple[str, ...], out: Path) -> None:
    """Download the videos of finished tasks (fresh URLs are fetched for each) and print paths."""
    settings = settings_from(ctx)
    check_key(settings)
    _make_dir(out)  # the download names each file inside it

    async def work() -> int:
        err = _stderr()
        code = EXIT_OK
        async with connect(settings) as service:
            answers = await _poll_all(service, task_ids)
            for task_id, answer in answers:
                if isinstance(answer, HailuoError):
                    say(err, f"{task_id}: {_hint(answer, simulated=service.simulated)}")
                    code = EXIT_FAILED
                    continue
                if not answer.ok:
                    what = status_text(answer).plain
                    if answer.is_done:
                        say(err, f"{task_id}: {what}: {answer.reason or 'no reason given'}")
                    else:
                        say(
                            err,
                            f"{task_id}: not finished yet ({what}); try `hailuo watch {task_id}`",
                        )
                    code = EXIT_FAILED
                    continue
                path = await service.client.download(answer, out)
                click.echo(shown_path(path))
        return code

    ctx.exit(_run(settings, work))


async def _poll_all(
    service: Service, task_ids: tuple[str, ...]
) -> list[tuple[str, TaskResult | HailuoError]]:
    answers: dict[str, TaskResult | HailuoError] = {}

    async def poll(task_id: str) -> None:
        try:
            answers[task_id] = await service.client.get_task(task_id)
        except (NotFoundError, InvalidRequestError) as exc:
            answers[task_id] = exc

    async with anyio.create_task_group() as group:
        for task_id in dict.fromkeys(task_ids):
            group.start_soon(poll, task_id)
    return [(task_id, answers[task_id]) for task_id in dict.fromkeys(task_ids)]


def _hint(error: HailuoError, *, simulated: bool) -> str:
    message = describe(error)
    if simulated and isinstance(error, NotFoundError):
        return (
            f"{message} (the simulated service only knows tasks made in the same run; to keep "
            "tasks between commands, run `hailuo fake-server` and point HAILUO_BASE_URL at it)"
        )
    return message


def _json_line(task_id: str, answer: TaskResult | str) -> str:
    if isinstance(answer, str):
        data: dict[str, Any] = {"task_id": task_id, "error": answer}
    else:
        data = result_summary(answer)
    return json.dumps(data, ensure_ascii=False)


# -- fake-server ---------------------------------------------------------------------------


@cli.command(
    "fake-server",
    short_help="Serve the fake Hailuo service locally (--help for its knobs).",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("knobs", nargs=-1, type=click.UNPROCESSED)
def fake_server(knobs: tuple[str, ...]) -> None:
    """Serve the fake Hailuo API locally until Ctrl-C (--port, knobs: see --help).

    The same flags as `python -m hailuo_async.testing`, whose parser this uses.
    """
    try:
        code = fake_server_main(list(knobs), prog="hailuo fake-server")
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise InputError(
            f"cannot serve on the address asked: {exc.strerror or exc}; choose another "
            "--port (--port 0 takes any free one) or --host"
        ) from None
    sys.exit(code)
