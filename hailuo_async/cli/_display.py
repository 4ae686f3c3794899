"""What the commands show: live views of one job and of a batch, and the tables at the end.

The live views are plain renderables redrawn by :class:`Ticker` from the event loop (never
from a thread, so the state they read is never changed under them). Off a terminal nothing
is redrawn: the commands print one line per event instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._bookkeeping import BatchCounts
from .._exceptions import HailuoError
from .._models import TaskResult, TaskStatus
from .._watcher import TaskEvent
from ._pricing import Estimate

__all__ = [
    "BatchView",
    "JobView",
    "Ticker",
    "WatchView",
    "add_task_row",
    "estimate_table",
    "format_duration",
    "id_column",
    "not_downloaded_line",
    "say",
    "shown_path",
    "status_line",
    "status_text",
    "task_table",
    "throughput",
]

_MAX_TASK_ROWS = 8
_READY_NOTE = (
    "video ready: `hailuo download TASK_ID` saves it, `hailuo status --json` gives its URL"
)
_STATUS_STYLES = {
    TaskStatus.QUEUED: "yellow",
    TaskStatus.PROCESSING: "cyan",
    TaskStatus.SUCCEED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.UNKNOWN: "magenta",
}


def format_duration(seconds: float | None) -> str:
    """0:42, 3:07 or 1:02:03; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def shown_path(path: str | Path) -> str:
    """A path relative to the working directory when it lies under it."""
    resolved = Path(path)
    try:
        return str(resolved.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def status_text(result: TaskResult) -> Text:
    """The status word, coloured: QUEUED, PROCESSING, SUCCEED, FAILED, or the raw unknown one."""
    if result.status is TaskStatus.UNKNOWN:
        word = result.raw_status or "UNKNOWN"
    else:
        word = result.status.name
    return Text(word, style=_STATUS_STYLES[result.status])


def say(console: Console, message: str | Text, *, style: str = "") -> None:
    """Print a message as one line (never wrapped, no markup), as logs and scripts want it."""
    console.print(message, style=style, soft_wrap=True, markup=False, highlight=False)


def not_downloaded_line(label: str, task: str, reason: str) -> Text:
    """One line for a job finished (and paid for) whose video could not be saved yet."""
    return Text.assemble(
        ("… ", "yellow"),
        (f"{label}  ", "dim"),
        f"{task}  ",
        (f"finished, not downloaded: {reason}", "yellow"),
    )


def status_line(result: TaskResult) -> Text:
    """One line for a task: id, status, progress, ETA and reason (for logs off a terminal)."""
    line = Text.assemble(f"{result.task_id}  ", status_text(result))
    if result.progress_percent is not None:
        line.append(f"  {result.progress_percent:.0f}%")
    if result.eta and not result.is_done:
        line.append(f"  ETA {format_duration(result.eta)}")
    if result.reason:
        line.append(f"  {result.reason}", style="red")
    return line


def id_column(table: Table, ids: Iterable[str], header: str = "task") -> None:
    """Add a column for task ids that are never cut: as wide as the longest of ``ids``.

    A task id is copied to follow the job later: one cut with "…" is useless. At a narrow
    width the other columns fold instead.
    """
    table.add_column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=4))


def _fits(table: Table, task_id: str) -> None:
    """Widen the table's id column (its first) to hold ``task_id`` whole."""
    column = table.columns[0]
    column.min_width = max(column.min_width or 0, len(task_id))


def throughput(jobs: int, elapsed: float) -> str:
    """Jobs per minute, of the jobs this run submitted and saw end; "-" when there are none.

    Jobs an earlier run submitted (watched again, or replayed from a journal) are left out:
    counting them would make a resumed run that did no work look very fast.
    """
    return f"{jobs / elapsed * 60:.1f} jobs/min" if jobs and elapsed > 0 else "-"


def task_table(title: str) -> Table:
    """An empty table of tasks, filled by :func:`add_task_row` (task ids never cut)."""
    table = Table(title=title, title_justify="left")
    id_column(table, ())
    table.add_column("status")
    table.add_column("progress", justify="right")
    table.add_column("ETA", justify="right")
    table.add_column("detail", overflow="fold")
    return table


def add_task_row(table: Table, task_id: str, answer: TaskResult | HailuoError | str | None) -> None:
    """One task's row: its last answer, or an error (as a message), or nothing yet."""
    _fits(table, task_id)
    if answer is None:
        table.add_row(task_id, Text("polling", "dim"), "", "", "")
        return
    if isinstance(answer, (HailuoError, str)):
        table.add_row(task_id, Text("error", "red"), "", "", str(answer))
        return
    progress = "" if answer.progress_percent is None else f"{answer.progress_percent:.0f}%"
    eta = "" if answer.is_done or not answer.eta else format_duration(answer.eta)
    if answer.ok and answer.video is not None:
        # A presigned URL cut or folded in a table is a broken link: say, once, under the
        # table, where the whole is (a short cell keeps the row one line at 80 columns).
        detail = "video ready"
        table.caption = _READY_NOTE
        table.caption_justify = "left"
    else:
        detail = answer.reason
    table.add_row(task_id, status_text(answer), progress, eta, detail)


class WatchView:
    """Watched tasks: the last answer of each, or the error that ended its watch."""

    def __init__(self, task_ids: Sequence[str]) -> None:
        self.task_ids = list(dict.fromkeys(task_ids))
        self.latest: dict[str, TaskResult] = {}
        self.errors: dict[str, str] = {}

    def on_event(self, event: TaskEvent) -> bool:
        """Record an event; True when the task's status changed (worth a log line)."""
        if event.result is None:
            return False
        previous = self.latest.get(event.task_id)
        self.latest[event.task_id] = event.result
        return previous is None or previous.status is not event.result.status

    @property
    def all_succeeded(self) -> bool:
        """True when every task ended well."""
        return all(
            task_id not in self.errors and task_id in self.latest and self.latest[task_id].ok
            for task_id in self.task_ids
        )

    def __rich__(self) -> RenderableType:
        table = task_table(f"Watching {len(self.task_ids)} task(s)")
        for task_id in self.task_ids:
            add_task_row(table, task_id, self.errors.get(task_id) or self.latest.get(task_id))
        return table


class Ticker:
    """Draws a Live view, redrawn a few times a second, while the ``async with`` lasts.

    Only on a terminal: elsewhere it does nothing, and callers print lines instead.
    """

    def __init__(
        self,
        console: Console,
        view: RenderableType,
        *,
        interval: float = 0.1,
        transient: bool = False,
    ) -> None:
        self._console = console
        self._view = view
        self._interval = interval
        self._transient = transient
        self._live: Live | None = None
        self._group: TaskGroup | None = None

    @property
    def active(self) -> bool:
        """True while a live view is drawn (on a terminal)."""
        return self._live is not None

    async def __aenter__(self) -> Ticker:
        if not self._console.is_terminal:
            return self
        self._live = Live(
            self._view,
            console=self._console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=self._transient,
        )
        self._live.start(refresh=True)
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._keep_fresh)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The caller's exception is not handed to the task group (it would come back in an
        # ExceptionGroup): stop the redraws, wait for them, and let it propagate as it is.
        group, self._group = self._group, None
        live, self._live = self._live, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            if live is not None:
                live.refresh()
                live.stop()

    def refresh(self) -> None:
        """Redraw now."""
        if self._live is not None:
            self._live.refresh()

    async def _keep_fresh(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            self.refresh()


class JobView:
    """One job: its task id, status, progress bar, the service's ETA and the time so far."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.task_id: str | None = None
        self.result: TaskResult | None = None
        self.phase = "submitting"
        self.started = time.monotonic()

    def __rich__(self) -> RenderableType:
        head = Text.assemble(("hailuo generate ", "bold"), (_clip(self.prompt, 60), "italic"))
        # The task id on a line of its own: never squeezed (and cut) by the columns beside it.
        task = Text(f"task {self.task_id}" if self.task_id else "task: not submitted yet", "dim")
        row = Table.grid(padding=(0, 1))
        for _ in range(4):
            row.add_column(no_wrap=True)
        result = self.result
        if result is None:
            row.add_row(Text(self.phase, "yellow"), "", "", "")
        else:
            progress = result.progress_percent or 0.0
            row.add_row(
                status_text(result),
                ProgressBar(total=100, completed=progress, width=30),
                Text(f"{progress:3.0f}%"),
                Text("" if result.is_done else f"ETA {format_duration(result.eta)}"),
            )
        foot = Text(f"elapsed {format_duration(time.monotonic() - self.started)}", "dim")
        if result is not None and self.phase not in ("", "waiting"):
            foot.append(f"  {self.phase}...", "yellow")
        return Group(head, task, row, foot)


class BatchView:
    """A batch: overall bar, jobs per minute, ETA, running jobs, and where every job is.

    The four counts add up to the total: ``in progress`` (being submitted, or submitted and
    not ended: the service's QUEUED and PROCESSING), ``waiting`` (not submitted yet),
    ``succeeded`` and ``failed``.
    """

    def __init__(
        self,
        *,
        title: Text,
        total: int,
        counts: Callable[[], BatchCounts | None],
    ) -> None:
        self.title = title
        self.total = total
        self.replayed = 0
        """Outcomes an earlier run had already recorded (left out of the rate and ETA)."""
        self._counts = counts
        self.started = time.monotonic()
        self.tasks: dict[str, TaskResult] = {}

    # -- state -----------------------------------------------------------------------------

    def on_event(self, event: TaskEvent) -> None:
        """Follow a watched task's status and progress; forget it once it has ended."""
        if event.kind in ("done", "error") or (event.result is not None and event.result.is_done):
            self.tasks.pop(event.task_id, None)
        elif event.result is not None:
            self.tasks[event.task_id] = event.result

    @property
    def snapshot(self) -> BatchCounts:
        """The library's counts now (zeros before the batch starts)."""
        counts = self._counts()
        return counts if counts is not None else BatchCounts(0, 0, 0, 0, 0, 0)

    def numbers(self) -> dict[str, float | None]:
        """Everything the view shows, as numbers (also used by tests)."""
        counts = self.snapshot
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = counts.done
        # The jobs this run submitted and saw end: an earlier run's, ended already or
        # watched again, say nothing of this run's pace.
        rate = counts.ended_here / elapsed * 60.0 if counts.ended_here else None
        remaining = max(0, self.total - done)
        eta: float | None
        if remaining == 0:
            eta = 0.0
        elif rate:
            eta = remaining / rate * 60.0
        else:
            eta = None
        in_progress = counts.submitting + counts.running
        return {
            "done": done,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "in_progress": in_progress,
            "waiting": max(0, self.total - in_progress - done),
            "limit": counts.active_limit,
            "per_minute": rate,
            "elapsed": elapsed,
            "eta": eta,
        }

    # -- drawing ---------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        n = self.numbers()
        done = int(n["done"] or 0)
        total = max(self.total, 1)
        parts: list[RenderableType] = [self.title]
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=total, completed=done, width=40),
            Text(f"{done}/{self.total}", style="bold"),
            Text(f"{100 * done / total:3.0f}%"),
        )
        parts.append(bar)
        per_minute = n["per_minute"]
        stats = Text.assemble(
            ("in progress ", "dim"),
            (f"{n['in_progress']:.0f}", "cyan"),
            ("  waiting ", "dim"),
            (f"{n['waiting']:.0f}", "yellow"),
            ("  succeeded ", "dim"),
            (f"{n['succeeded']:.0f}", "green"),
            ("  failed ", "dim"),
            (f"{n['failed']:.0f}", "red" if n["failed"] else ""),
            ("  ", ""),
            (f"{per_minute:.1f}" if per_minute else "-", ""),
            (" jobs/min", "dim"),
            ("  elapsed ", "dim"),
            (format_duration(n["elapsed"]), ""),
            ("  ETA ", "dim"),
            (format_duration(n["eta"]) if n["eta"] is not None else "estimating", "bold"),
        )
        parts.append(stats)
        if self.replayed:
            parts.append(Text(f"{self.replayed} job(s) ended in an earlier run", "dim"))
        if self.tasks or n["in_progress"]:
            parts.append(self._task_table(int(n["in_progress"] or 0)))
        return Group(*parts)

    def _task_table(self, active: int) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        shown = sorted(self.tasks.items(), key=lambda item: -(item[1].progress_percent or 0.0))
        # Whole task ids (each may be followed later with `hailuo watch`), and a bar short
        # enough for a row to fit 80 columns beside one.
        id_column(table, (f"  {task_id}" for task_id, _ in shown[:_MAX_TASK_ROWS]), header="")
        for task_id, result in shown[:_MAX_TASK_ROWS]:
            progress = result.progress_percent or 0.0
            table.add_row(
                Text(f"  {task_id}", "dim"),
                status_text(result),
                ProgressBar(total=100, completed=progress, width=10),
                Text(f"{progress:3.0f}%"),
                Text(f"ETA {format_duration(result.eta)}", "dim"),
            )
        notes: list[str] = []
        hidden = len(shown) - _MAX_TASK_ROWS
        if hidden > 0:
            notes.append(f"  ... and {hidden} more running")
        starting = active - len(self.tasks)
        if starting > 0:
            notes.append(f"  {starting} being submitted or not polled yet")
        return Group(table, *(Text(note, "dim") for note in notes))


def estimate_table(estimate: Estimate) -> Table:
    """Jobs by duration and resolution, with the estimated price of each kind and the total."""
    table = Table(title="Dry run: nothing was sent", title_justify="left")
    table.add_column("duration", justify="right")
    table.add_column("resolution")
    table.add_column("jobs", justify="right")
    table.add_column("est. price/job", justify="right")
    table.add_column("est. subtotal", justify="right")
    for line in estimate.lines:
        table.add_row(
            f"{line.duration} s",
            line.resolution,
            str(line.jobs),
            _money(line.price_per_job),
            _money(line.subtotal),
        )
    table.add_section()
    table.add_row("", "total", str(estimate.jobs), "", _money(estimate.total), style="bold")
    return table


def summary_table(rows: Sequence[tuple[str, str]], *, title: str) -> Table:
    """A two-column table of labels and values."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
