"""``hailuo work`` joins a shared batch as one more worker; ``hailuo status --journal`` shows it.

A shared batch lives in a PostgreSQL journal (``--journal postgresql://...``) under a name
(``--name``); ``hailuo batch FILE`` adds a file's jobs to it and works on them, ``hailuo
work`` only works. The ``--journal`` option takes a file path or such a URL (a click.Path
would mangle the URL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypeGuard

import anyio
import attrs
import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._coordination import coordination_from
from .._dsn import check_not_a_dsn
from .._exceptions import InvalidRequestError
from .._models import JobOutcome
from ..journal import JobState, JournalError, PostgresJobStore, store_for
from ..journal._open import is_shared_journal
from ._display import (
    format_duration,
    not_downloaded_line,
    shown_path,
    summary_table,
    throughput,
)
from ._errors import InputError
from ._interrupt import run_interruptibly
from ._results import outcome_kind
from ._service import Service, where

__all__ = [
    "JournalParam",
    "WorkReport",
    "check_batch_exists",
    "check_journal",
    "is_shared",
    "journal_label",
    "run_work",
    "show_batch_status",
]

_MAX_BATCHES_LISTED = 20


def is_shared(journal: Path | str | None) -> TypeGuard[str]:
    """True for a journal several workers share: a ``postgresql://`` URL."""
    return isinstance(journal, str) and is_shared_journal(journal)


class JournalParam(click.ParamType[Path | str]):
    """A journal: a ``postgresql://`` URL kept as text, or a file path."""

    name = "journal"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path | str:
        if isinstance(value, Path) or (isinstance(value, str) and is_shared(value)):
            return value
        text = str(value)
        if not text:
            self.fail("must be a file path or a postgresql:// URL", param, ctx)
        try:
            check_not_a_dsn(text, field="--journal")
        except InvalidRequestError as exc:
            # One line, exit 2, nothing made; the value itself is not shown (a password?).
            raise InputError(f"--journal: {exc.message}") from None
        if Path(text).is_dir():
            self.fail(f"{text!r} is a directory, not a journal file", param, ctx)
        return Path(text)


async def check_journal(journal: Path | str, name: str) -> None:
    """Make sure the journal can be used, before anything is sent; else exit 2 (one line).

    A file's folder is made if missing (a file in its way is refused); a ``postgresql://``
    journal is opened once, so that a wrong address, role or database is named now, with
    coordination or without, instead of failing the run.
    """
    if isinstance(journal, Path):
        folder = journal.parent
        try:
            await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            raise InputError(
                f"--journal {journal}: cannot make its folder {folder}: {reason or exc}"
            ) from None
        return
    try:
        async with store_for(journal, batch=name):
            pass
    except JournalError as exc:
        raise InputError(f"{exc} (nothing was sent; check --journal)") from None


def journal_label(journal: Path | str) -> str:
    """Where the journal is, for people: the path, or the URL without its password."""
    if isinstance(journal, Path):
        return shown_path(journal)
    store = store_for(journal)
    assert isinstance(store, PostgresJobStore)
    return store.target


async def check_batch_exists(journal: str, name: str) -> None:
    """InputError (exit 2, nothing sent) when the journal holds no batch ``name``.

    The message lists the batches it does hold, so a misspelt ``--name`` is one glance away.
    """
    async with store_for(journal, batch=name) as store:
        assert isinstance(store, PostgresJobStore)
        if await store.has_jobs():
            return
        names = await store.batches()
    where = journal_label(journal)
    if names:
        listed = ", ".join(repr(batch) for batch in names[:_MAX_BATCHES_LISTED])
        more = len(names) - _MAX_BATCHES_LISTED
        listed += f" and {more} more" if more > 0 else ""
        raise InputError(f"no batch {name!r} in {where}; the batches there: {listed}")
    raise InputError(
        f"no batch {name!r} in {where}, which holds none yet: add one with "
        f"`hailuo batch FILE --journal URL --name {name}`"
    )


@attrs.define
class WorkReport:
    """What one worker did."""

    worker_id: str
    succeeded: int = 0
    failed: int = 0
    not_downloaded: int = 0
    """Finished (and paid for), their video not saved: the next worker or rerun fetches it."""
    interrupted: bool = False
    elapsed: float = 0.0
    ended_here: int = 0
    """Jobs this worker submitted whose task ended (its throughput)."""


def _outcome_line(outcome: JobOutcome) -> Text:
    task = outcome.task_id or "not submitted"
    if outcome.ok:
        where = shown_path(outcome.path) if outcome.path else "(not downloaded)"
        return Text.assemble(("✓ ", "green"), (f"{outcome.key}  ", "dim"), f"{task}  → {where}")
    reason = str(outcome.error) if outcome.error is not None else "failed"
    if outcome_kind(outcome) == "not_downloaded":
        return not_downloaded_line(f"{outcome.key}", task, reason)
    return Text.assemble(("✗ ", "red"), (f"{outcome.key}  ", "dim"), f"{task}  ", (reason, "red"))


async def run_work(
    service: Service,
    *,
    journal: str,
    name: str,
    out: Path,
    worker_id: str | None,
    lease: float,
    max_active_jobs: int | None,
    console: Console,
) -> WorkReport:
    """Work the batch until no job has work left; print each job this worker finishes."""
    stream = service.client.work(
        journal,
        name,
        download_to=out,
        worker_id=worker_id,
        lease=lease,
        max_active_jobs=max_active_jobs,
    )
    report = WorkReport(worker_id=stream.worker_id or "")
    coordination = service.client.coordination
    shared = "" if coordination is None else f", limits shared through {where(coordination)}"
    console.print(
        Text.assemble(
            ("hailuo work ", "bold"),
            f"batch {name!r} in {journal_label(journal)} → {shown_path(out)}  ",
            (f"worker {report.worker_id}{shared}", "dim"),
        ),
        soft_wrap=True,
    )
    started = time.monotonic()

    async def body() -> None:
        async with stream as outcomes:
            async for outcome in outcomes:
                console.print(_outcome_line(outcome), soft_wrap=True)
                kind = outcome_kind(outcome)
                if kind == "succeeded":
                    report.succeeded += 1
                elif kind == "not_downloaded":
                    report.not_downloaded += 1
                else:
                    report.failed += 1

    try:
        report.interrupted = await run_interruptibly(body)
    finally:
        report.elapsed = time.monotonic() - started
        report.ended_here = stream.counts.ended_here
    return report


def work_summary(report: WorkReport) -> Table:
    """The table printed when the worker stops."""
    rate = throughput(report.ended_here, report.elapsed)
    title = "Worker stopped" if report.interrupted else "Worker done: the batch has no work left"
    return summary_table(
        [
            ("worker", report.worker_id),
            ("succeeded", str(report.succeeded)),
            ("failed", str(report.failed)),
            *(
                [("finished, not downloaded", str(report.not_downloaded))]
                if report.not_downloaded
                else []
            ),
            ("elapsed", format_duration(report.elapsed)),
            ("throughput", rate),
        ],
        title=title,
    )


_STATE_ORDER = (
    JobState.RECORDED,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.FINISHED,
    JobState.FAILED,
    JobState.UNKNOWN,
)


async def show_batch_status(journal: str, name: str, console: Console) -> bool:
    """Print the batch's counts by state, its workers, its pace and the shared limits.

    False if the batch has no job.
    """
    async with store_for(journal, batch=name) as store:
        assert isinstance(store, PostgresJobStore)
        progress = await store.progress()
    total = sum(progress.counts.values())
    rows = [(state.value, str(progress.counts.get(state, 0))) for state in _STATE_ORDER]
    if progress.not_downloaded:
        # Paid for: `hailuo work --out DIR` (or a rerun of the batch) fetches them.
        rows.insert(
            _STATE_ORDER.index(JobState.FINISHED) + 1,
            ("finished, not downloaded", str(progress.not_downloaded)),
        )
    rows += [
        ("total", str(total)),
        ("ended in the last minute", f"{progress.ended_last_minute} jobs/min"),
    ]
    console.print(summary_table(rows, title=f"Batch {name!r} in {journal_label(journal)}"))
    workers = Table(title="Workers holding leases", title_justify="left")
    workers.add_column("worker")
    workers.add_column("jobs held", justify="right")
    for worker, held in progress.workers.items():
        workers.add_row(worker, str(held))
    if not progress.workers:
        workers.add_row("(none)", "0")
    console.print(workers)
    await _show_accounts(journal, console)
    return total > 0


async def _show_accounts(journal: str, console: Console) -> None:
    """The shared limits of the accounts coordinated in the journal's schema, if any."""
    # Imported here: only a postgresql:// journal's status reads them.
    from ..postgres._report import read_account_states  # noqa: PLC0415

    coordination = coordination_from(journal)
    states = await read_account_states(coordination.dsn, schema=coordination.schema)
    if not states:
        return
    table = Table(title="Shared account limits", title_justify="left")
    table.add_column("account", overflow="fold")
    for column in ("requests/min", "active jobs", "processes", "paused", "429s"):
        table.add_column(column, justify="right")
    for state in states:
        rate = "-" if state.rate is None else f"{state.rate:g}"
        table.add_row(
            state.account,
            rate + (" (learnt)" if state.rate_learnt else ""),
            f"{state.active} of {state.active_cap}" + (" (learnt)" if state.cap_learnt else ""),
            str(state.processes),
            f"{state.paused_for:.1f} s" if state.paused_for > 0 else "no",
            str(state.rate_limited),
        )
    console.print(table)
