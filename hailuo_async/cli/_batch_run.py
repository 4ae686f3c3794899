"""``hailuo batch``: run a validated batch file with a live view, writing results.jsonl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._bookkeeping import LeftRunningJob
from .._exceptions import HailuoError, NotFoundError, ServiceUnreachableError
from .._models import JobOutcome
from .._refusals import refuses_the_account, refuses_the_job
from .._stream import BatchItem, JobStream
from ..journal import JobState, SQLiteJobStore
from ..journal._keys import JobKeyer
from ._display import (
    BatchView,
    Ticker,
    format_duration,
    id_column,
    not_downloaded_line,
    shown_path,
    summary_table,
    throughput,
)
from ._errors import describe
from ._inputs import BatchFile, BatchJob
from ._interrupt import run_interruptibly
from ._results import RESULTS_NAME, ResultsFile, outcome_kind
from ._results_page import PAGE_NAME, PageJob
from ._service import Service
from ._work import is_shared, journal_label

__all__ = ["BatchReport", "Failure", "next_steps", "run_batch"]

_MAX_FAILURES_SHOWN = 20
FORGOTTEN = "forgotten by the simulated service"
"""Why a simulated job was failed in the journal: its service, of an earlier run, is gone."""


@attrs.frozen
class Failure:
    """A failed job, for the summary."""

    line: int
    task_id: str | None
    reason: str


@attrs.define
class BatchReport:
    """How a batch went."""

    total: int
    out: Path
    journal: Path | str
    simulated: bool
    succeeded: int = 0
    failed: int = 0
    replayed: int = 0
    """Of the jobs counted, those an earlier run had already finished and recorded."""
    interrupted: bool = False
    elapsed: float = 0.0
    ended_here: int = 0
    """Jobs this run submitted whose task ended (its throughput: re-watched ones left out)."""
    failures: list[Failure] = attrs.Factory(list)
    left_running: list[tuple[int, LeftRunningJob]] = attrs.Factory(list)
    """Jobs left running at the service when the batch stopped, with their line."""
    not_downloaded: int = 0
    """Jobs finished (and paid) at the service whose video could not be saved yet."""
    unsent: int = 0
    """Jobs not sent: refused before any task was made (the account, a 5xx past retries)."""
    refusal: str | None = None
    """Why the submissions stopped, if they did: the account refused, or the service out of
    reach."""
    refused_jobs: int = 0
    """Of the failed jobs, those the service refused at submission: nothing was paid."""

    @property
    def results_path(self) -> Path:
        """The results.jsonl of this batch."""
        return self.out / RESULTS_NAME

    @property
    def finished(self) -> int:
        """Jobs that have ended, in this run or an earlier one."""
        return self.succeeded + self.failed + self.not_downloaded

    @property
    def all_succeeded(self) -> bool:
        """True when every job of the file succeeded and was saved."""
        return not (self.failed or self.not_downloaded or self.unsent)

    @property
    def unfinished(self) -> int:
        """Jobs not ended: running at the service, or never submitted."""
        return max(0, self.total - self.finished)


def _reason(outcome: JobOutcome) -> str:
    if outcome.ok:
        return ""
    if outcome.result is not None and not outcome.result.ok and outcome.result.reason:
        return outcome.result.reason
    if outcome.error is not None:
        return str(outcome.error)
    return "failed"


def outcome_record(job: BatchJob, outcome: JobOutcome, *, simulated: bool) -> dict[str, Any]:
    """The results.jsonl line of one finished job."""
    record: dict[str, Any] = {
        "line": job.line,
        "key": outcome.key if outcome.key is not None else job.key,
        "request": dict(job.source),
        "task_id": outcome.task_id,
        "status": outcome_kind(outcome),
        "reason": _reason(outcome) or None,
        "file": outcome.path,
    }
    if simulated:
        record["simulated"] = True
    return record


def _outcome_line(job: BatchJob, outcome: JobOutcome) -> Text:
    task = outcome.task_id or "not submitted"
    if outcome.ok:
        where = shown_path(outcome.path) if outcome.path else "(not downloaded)"
        return Text.assemble(("✓ ", "green"), (f"line {job.line}  ", "dim"), f"{task}  → {where}")
    if outcome_kind(outcome) == "not_downloaded":
        return not_downloaded_line(f"line {job.line}", task, _reason(outcome))
    return Text.assemble(
        ("✗ ", "red"),
        (f"line {job.line}  ", "dim"),
        f"{task}  ",
        (_reason(outcome), "red"),
    )


async def run_batch(  # noqa: PLR0915 - its passes share one report and view
    service: Service,
    batch: BatchFile,
    *,
    out: Path,
    journal: SQLiteJobStore | str,
    max_active_jobs: int | None,
    retry_failed: bool = False,
    name: str = "default",
    console: Console,
) -> BatchReport:
    """Submit every job, follow them live, record each as it ends; stop cleanly on Ctrl-C.

    ``out`` must exist. ``journal`` is an open SQLite store (held by this run) or a
    ``postgresql://`` URL, which is shared: the file's jobs are added to the batch ``name``
    and this process works on it as one worker among any number.
    """
    report = BatchReport(
        total=len(batch.jobs),
        out=out,
        journal=journal.path if isinstance(journal, SQLiteJobStore) else journal,
        simulated=service.simulated,
    )
    title = Text.assemble(
        ("hailuo batch ", "bold"), f"{batch.path} → {out}  ", (service.description, "dim")
    )
    started = time.monotonic()

    async def run_pass(
        results: ResultsFile, jobs: list[tuple[BatchJob, str | None]], *, retry: bool
    ) -> list[tuple[BatchJob, str | None]]:
        """One generate_many over ``jobs``; returns those a simulated service forgot."""
        stream: JobStream | None = None
        view = BatchView(
            title=title,
            total=len(jobs),
            counts=lambda: stream.counts if stream is not None else None,
        )
        items: list[BatchItem] = [
            (key, job.request) if key is not None else job.request for job, key in jobs
        ]
        forgotten: list[tuple[BatchJob, str | None]] = []
        stream = service.client.generate_many(
            items,
            max_active_jobs=max_active_jobs,
            on_event=view.on_event,
            journal=journal,
            download_to=out,
            retry_failed=retry,
            batch=name,
        )
        try:
            await read_outcomes(stream, view, results, jobs, forgotten)
        finally:
            # Stopped early: these run on at the service, and the summary names them.
            report.left_running += [(jobs[job.index][0].line, job) for job in stream.left_running]
            report.ended_here += stream.counts.ended_here
        return forgotten

    async def read_outcomes(
        stream: JobStream,
        view: BatchView,
        results: ResultsFile,
        jobs: list[tuple[BatchJob, str | None]],
        forgotten: list[tuple[BatchJob, str | None]],
    ) -> None:
        async with stream as outcomes, Ticker(console, view):
            async for outcome in outcomes:
                job = jobs[outcome.index][0]
                if service.simulated and isinstance(outcome.error, NotFoundError):
                    # Submitted to the simulated service of an earlier run, which is gone.
                    forgotten.append((job, outcome.key))
                    continue
                kind = outcome_kind(outcome)
                if kind == "unsent":
                    # Refused before any task was made: nothing to record, a rerun sends it.
                    report.unsent += 1
                    if outcome.error is not None and refuses_the_account(outcome.error):
                        report.refusal = report.refusal or _refusal(outcome.error)
                    continue
                record = outcome_record(job, outcome, simulated=service.simulated)
                earlier = results.recorded(record)
                if earlier is None:
                    results.write(record)
                    console.print(_outcome_line(job, outcome), soft_wrap=True)
                if earlier is not None or outcome.replayed:
                    # An earlier run ended it: no news, and no part of this run's rate.
                    report.replayed += 1
                    view.replayed += 1
                if kind == "succeeded":
                    report.succeeded += 1
                elif kind == "not_downloaded":
                    report.not_downloaded += 1
                else:
                    report.failed += 1
                    if outcome.error is not None and refuses_the_job(outcome.error):
                        report.refused_jobs += 1
                    reason = str((earlier or record).get("reason") or "failed")
                    report.failures.append(Failure(job.line, outcome.task_id, reason))

    page_jobs = [PageJob(job.line, job.request.prompt, job.key) for job in batch.jobs]

    async def body() -> None:
        page_title = f"hailuo batch {batch.path.name}"
        with ResultsFile(out / RESULTS_NAME, title=page_title, jobs=page_jobs) as results:
            jobs: list[tuple[BatchJob, str | None]] = [(job, job.key) for job in batch.jobs]
            lost: list[tuple[BatchJob, str | None]] = []
            if service.simulated and isinstance(journal, SQLiteJobStore):
                jobs, lost = await _split_lost(batch, journal, out)
            forgotten = await run_pass(results, jobs, retry=retry_failed)
            if forgotten and isinstance(journal, SQLiteJobStore):
                # The library keeps a task it could not watch as submitted (it may still be
                # running, and paid for); these are known to be gone, so they may be retried.
                for _, key in forgotten:
                    if key is not None:
                        await journal.mark_failed(key, FORGOTTEN)
            forgotten += lost
            if forgotten:
                console.print(
                    Text(
                        f"{len(forgotten)} job(s) were running on the simulated service of "
                        "an earlier run, which forgot them when it stopped: submitting them "
                        "again (a simulated job costs nothing).",
                        "yellow",
                    ),
                    soft_wrap=True,
                )
                await run_pass(results, forgotten, retry=True)

    try:
        report.interrupted = await run_interruptibly(body)
    finally:
        report.elapsed = time.monotonic() - started
    return report


async def _split_lost(
    batch: BatchFile, store: SQLiteJobStore, out: Path
) -> tuple[list[tuple[BatchJob, str | None]], list[tuple[BatchJob, str | None]]]:
    """The jobs to run, and apart those whose result an earlier run's simulated service kept.

    Each run of --simulate starts a simulated service of its own, and its tasks and videos
    go when it stops. A job it finished whose video is not on disk (Ctrl-C came between the
    two, or the file is gone; a journal of another run, real or simulated, whose videos
    are neither where it saved them nor in ``out``) cannot be downloaded any more, and one
    an earlier run found forgotten may not have been submitted again before that run
    stopped too: both are submitted again. A video that is on disk elsewhere is copied into
    ``out`` by the batch itself. Every job gets the key the journal knows it by, so that
    setting some apart renames none.
    """
    keyer = JobKeyer()
    specs = [keyer.spec(job.request, job.key) for job in batch.jobs]
    kept: list[tuple[BatchJob, str | None]] = []
    lost: list[tuple[BatchJob, str | None]] = []
    records = await store.get_many(spec.key for spec in specs)
    for job, spec in zip(batch.jobs, specs, strict=True):
        record = records.get(spec.key)
        if record is None or record.fingerprint != spec.fingerprint:
            kept.append((job, spec.key))  # new, or a conflict the batch reports
        elif record.state is JobState.FINISHED and not _video_on_disk(record.path, out):
            await store.mark_result_lost(spec.key, FORGOTTEN)
            lost.append((job, spec.key))
        elif record.state is JobState.FAILED and record.error == FORGOTTEN:
            lost.append((job, spec.key))
        else:
            kept.append((job, spec.key))
    return kept, lost


def _video_on_disk(path: str | None, out: Path) -> bool:
    """True when a finished job's video is where it was saved, or in ``out`` by its name."""
    if path is None:
        return False
    saved = Path(path)
    return saved.is_file() or (out / saved.name).is_file()


def summary(report: BatchReport) -> list[Table]:
    """The tables printed when the batch ends."""
    rows = [
        ("jobs in file", str(report.total)),
        ("succeeded", str(report.succeeded)),
        ("failed", str(report.failed)),
    ]
    if report.not_downloaded:
        rows.append(("finished, not downloaded", str(report.not_downloaded)))
    if report.unsent:
        rows.append(("not sent", str(report.unsent)))
    if report.replayed:
        rows.append(("ended in earlier runs", f"{report.replayed} (of the above)"))
    # A shared batch's other jobs are other workers' to finish.
    if report.interrupted or (report.unfinished and not is_shared(report.journal)):
        rows.append(("not finished", str(report.unfinished)))
    per_minute = throughput(report.ended_here, report.elapsed)
    rows += [
        ("elapsed", format_duration(report.elapsed)),
        ("throughput", per_minute),
        ("videos", shown_path(report.out)),
        ("results", shown_path(report.results_path)),
        ("page", shown_path(report.results_path.with_name(PAGE_NAME))),
        ("journal", journal_label(report.journal)),
    ]
    title = "Batch stopped" if report.interrupted else "Batch summary"
    if report.simulated:
        title += " (simulated service)"
    tables = [summary_table(rows, title=title)]
    if report.failures:
        failures = Table(title="Failed jobs", title_justify="left")
        failures.add_column("line", justify="right")
        shown = report.failures[:_MAX_FAILURES_SHOWN]
        id_column(failures, (failure.task_id or "-" for failure in shown))
        failures.add_column("reason", overflow="fold")
        for failure in shown:
            failures.add_row(str(failure.line), failure.task_id or "-", failure.reason)
        hidden = len(report.failures) - _MAX_FAILURES_SHOWN
        if hidden > 0:
            failures.add_row("", "", f"... and {hidden} more in {RESULTS_NAME}")
        tables.append(failures)
    if report.left_running:
        tables.append(_left_running_table(report))
    return tables


def _refusal(error: HailuoError) -> str:
    """Why every job not sent yet was left unsent, for the end of the batch."""
    if isinstance(error, ServiceUnreachableError):
        return describe(error)  # "cannot reach the service: ...", with the fix
    return f"the service refused the account: {describe(error)}"


def next_steps(report: BatchReport, *, resume: str, note: str = "") -> list[str]:
    """What to do about the jobs that did not succeed, one line per kind, as the batch ends.

    Each says what it costs: fetching a finished video or sending a job never sent pays
    nothing again; only jobs that failed at the service (or whose submission may have
    started one) are new paid jobs with ``--retry-failed``. ``note`` follows each command
    (a word on a masked password).
    """
    results = shown_path(report.results_path)
    steps: list[str] = []
    if report.unsent:
        why = f"{report.refusal}. " if report.refusal else ""
        steps.append(
            f"{report.unsent} job(s) were not sent: {why}Nothing was paid for them; once "
            f"that is put right, run the same command again to submit them: "
            f"{resume}{note}"
        )
    if report.not_downloaded:
        steps.append(
            f"{report.not_downloaded} job(s) finished (and were paid for) but their video "
            "could not be saved yet (see "
            f"{results}). Run the same command again to fetch them; nothing is paid again: "
            f"{resume}{note}"
        )
    refused = report.refused_jobs
    paid = report.failed - refused
    if refused:
        steps.append(
            f"{refused} job(s) were refused by the service when submitted (see {results}); no "
            "task was made and nothing was paid. Fix those lines, or try them again with: "
            f"{resume} --retry-failed{note}"
        )
    if paid:
        steps.append(
            f"{paid} job(s) failed (see {results}). To submit them again as new paid jobs: "
            f"{resume} --retry-failed{note}"
        )
    return steps


def _left_running_table(report: BatchReport) -> Table:
    left = Table(
        title="Left running at the service (paid for; `hailuo watch TASK_ID` follows one,"
        " and running this batch again watches them all)",
        title_justify="left",
    )
    left.add_column("line", justify="right")
    shown = report.left_running[:_MAX_FAILURES_SHOWN]
    id_column(left, (job.task_id for _, job in shown))
    for line, job in shown:
        left.add_row(str(line), job.task_id)
    hidden = len(report.left_running) - _MAX_FAILURES_SHOWN
    if hidden > 0:
        left.add_row("", f"... and {hidden} more in the journal")
    return left
