"""``hailuo batch``: run a validated batch file with a live view, writing results.jsonl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._batch import BatchItem, JobStream
from .._exceptions import NotFoundError
from .._models import JobOutcome
from ._display import BatchView, Ticker, format_duration, shown_path, summary_table
from ._inputs import BatchFile, BatchJob
from ._interrupt import run_interruptibly
from ._results import RESULTS_NAME, ResultsFile
from ._service import Service

__all__ = ["BatchReport", "Failure", "run_batch"]

_MAX_FAILURES_SHOWN = 20


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
    journal: Path
    simulated: bool
    succeeded: int = 0
    failed: int = 0
    already_done: int = 0
    interrupted: bool = False
    elapsed: float = 0.0
    failures: list[Failure] = attrs.Factory(list)

    @property
    def results_path(self) -> Path:
        """The results.jsonl of this batch."""
        return self.out / RESULTS_NAME

    @property
    def finished(self) -> int:
        """Jobs that ended in this run."""
        return self.succeeded + self.failed

    @property
    def unfinished(self) -> int:
        """Jobs neither finished now nor earlier: running, or never submitted."""
        return max(0, self.total - self.finished - self.already_done)


def _reason(outcome: JobOutcome, *, simulated: bool) -> str:
    if outcome.ok:
        return ""
    if outcome.result is not None and not outcome.result.ok and outcome.result.reason:
        reason = outcome.result.reason
    elif outcome.error is not None:
        reason = str(outcome.error)
    else:
        reason = "failed"
    if simulated and isinstance(outcome.error, NotFoundError):
        reason += " (a simulated service forgets its tasks when the run ends)"
    return reason


def outcome_record(job: BatchJob, outcome: JobOutcome, *, simulated: bool) -> dict[str, Any]:
    """The results.jsonl line of one finished job."""
    record: dict[str, Any] = {
        "line": job.line,
        "key": outcome.key if outcome.key is not None else job.key,
        "request": dict(job.source),
        "task_id": outcome.task_id,
        "status": "succeeded" if outcome.ok else "failed",
        "reason": _reason(outcome, simulated=simulated) or None,
        "file": outcome.path,
    }
    if simulated:
        record["simulated"] = True
    return record


def _outcome_line(job: BatchJob, outcome: JobOutcome, *, simulated: bool) -> Text:
    task = outcome.task_id or "not submitted"
    if outcome.ok:
        where = shown_path(outcome.path) if outcome.path else "(not downloaded)"
        return Text.assemble(("✓ ", "green"), (f"line {job.line}  ", "dim"), f"{task}  → {where}")
    return Text.assemble(
        ("✗ ", "red"),
        (f"line {job.line}  ", "dim"),
        f"{task}  ",
        (_reason(outcome, simulated=simulated), "red"),
    )


async def run_batch(
    service: Service,
    batch: BatchFile,
    *,
    out: Path,
    journal: Path,
    max_active_jobs: int | None,
    console: Console,
) -> BatchReport:
    """Submit every job, follow them live, record each as it ends; stop cleanly on Ctrl-C.

    ``out`` must exist.
    """
    report = BatchReport(
        total=len(batch.jobs), out=out, journal=journal, simulated=service.simulated
    )
    stream: JobStream | None = None
    title = Text.assemble(
        ("hailuo batch ", "bold"), f"{batch.path} → {out}  ", (service.description, "dim")
    )
    view = BatchView(
        title=title,
        total=len(batch.jobs),
        counts=lambda: stream.counts if stream is not None else None,
    )
    items: list[BatchItem] = [
        (job.key, job.request) if job.key is not None else job.request for job in batch.jobs
    ]
    started = time.monotonic()

    async def body() -> None:
        nonlocal stream
        with ResultsFile(out / RESULTS_NAME) as results:
            stream = service.client.generate_many(
                items,
                max_active_jobs=max_active_jobs,
                on_event=view.on_event,
                journal=journal,
                download_to=out,
            )
            async with stream as outcomes, Ticker(console, view):
                async for outcome in outcomes:
                    job = batch.jobs[outcome.index]
                    results.write(outcome_record(job, outcome, simulated=service.simulated))
                    line = _outcome_line(job, outcome, simulated=service.simulated)
                    console.print(line, soft_wrap=True)
                    if outcome.ok:
                        report.succeeded += 1
                    else:
                        report.failed += 1
                        reason = _reason(outcome, simulated=service.simulated)
                        report.failures.append(Failure(job.line, outcome.task_id, reason))

    try:
        report.interrupted = await run_interruptibly(body)
    finally:
        report.elapsed = time.monotonic() - started
    return report


def summary(report: BatchReport) -> list[Table]:
    """The tables printed when the batch ends."""
    rows = [("jobs in file", str(report.total)), ("succeeded", str(report.succeeded))]
    if report.already_done:
        rows.append(("done in an earlier run", str(report.already_done)))
    rows.append(("failed", str(report.failed)))
    if report.interrupted or report.unfinished:
        rows.append(("not finished", str(report.unfinished)))
    per_minute = report.finished / report.elapsed * 60 if report.elapsed > 0 else 0.0
    rows += [
        ("elapsed", format_duration(report.elapsed)),
        ("throughput", f"{per_minute:.1f} jobs/min"),
        ("videos", shown_path(report.out)),
        ("results", shown_path(report.results_path)),
        ("journal", shown_path(report.journal)),
    ]
    title = "Batch stopped" if report.interrupted else "Batch summary"
    if report.simulated:
        title += " (simulated service)"
    tables = [summary_table(rows, title=title)]
    if report.failures:
        failures = Table(title="Failed jobs", title_justify="left")
        failures.add_column("line", justify="right")
        failures.add_column("task")
        failures.add_column("reason", overflow="fold")
        for failure in report.failures[:_MAX_FAILURES_SHOWN]:
            failures.add_row(str(failure.line), failure.task_id or "-", failure.reason)
        hidden = len(report.failures) - _MAX_FAILURES_SHOWN
        if hidden > 0:
            failures.add_row("", "", f"... and {hidden} more in {RESULTS_NAME}")
        tables.append(failures)
    return tables
