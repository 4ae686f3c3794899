"""What keeps a `hailuo batch` run from spending what another run (or an earlier one) spent.

- **One run per results file and per SQLite journal.** The run holds ``OUT/results.jsonl``
  and its journal (operating-system locks, see :mod:`hailuo_async._lockfile`) for its whole
  length; a second run on either stops at once, exit 2, with one line naming the holder.
  Two runs on one journal would take each other's submissions for interrupted ones, and
  two writers of one results file lose each other's lines.
- **No silent start-over.** A journal that is missing or holds nothing, in an ``OUT`` whose
  results.jsonl lists jobs of an earlier run (of the same kind, real or simulated), means
  the record of what was paid is gone: running on would submit every job again as a new
  paid job. That is refused (exit 2, nothing sent) unless ``--new-run`` says so, or
  ``--journal PATH`` points at the earlier run's journal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .._exceptions import JournalInUseError
from .._lockfile import hold_file
from ..journal import SQLiteJobStore
from ._display import shown_path
from ._errors import InputError
from ._results import RESULTS_NAME, read_results

__all__ = ["check_earlier_results", "held_journal", "results_held"]


def _in_use(exc: JournalInUseError, what: str, fix: str) -> InputError:
    return InputError(
        f"{what} {shown_path(exc.path)} is in use by another run ({exc.holder}); nothing was "
        f"sent: wait for that run to end, or {fix}"
    )


@contextmanager
def results_held(out: Path) -> Iterator[None]:
    """Hold ``OUT/results.jsonl`` for this run; InputError if another run writes it."""
    try:
        hold = hold_file(out / RESULTS_NAME, what="the results file")
    except JournalInUseError as exc:
        raise _in_use(exc, "the results file", "give this run another --out") from None
    try:
        yield
    finally:
        hold.release()


def held_journal(path: Path, *, batch: str) -> SQLiteJobStore:
    """The SQLite journal at ``path``, held for this run (not opened yet)."""
    store = SQLiteJobStore(path, batch=batch)
    try:
        store.hold()
    except JournalInUseError as exc:
        raise _in_use(exc, "the journal", "give this run its own --out (or --journal)") from None
    return store


def _journal_is_empty(path: Path, batch: str) -> bool:
    """True when the journal file is missing, empty, or records no job of ``batch``."""
    try:
        if path.stat().st_size == 0:
            return True
    except FileNotFoundError:
        return True
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False  # opening it for the run will say what is wrong with it
    try:
        row = connection.execute(
            "SELECT 1 FROM hailuo_jobs WHERE batch = ? LIMIT 1", (batch,)
        ).fetchone()
    except sqlite3.Error:
        # No table of jobs: a file the journal never wrote to (or not a journal at all,
        # which opening it for the run reports).
        return _has_no_tables(connection)
    finally:
        connection.close()
    return row is None


def _has_no_tables(connection: sqlite3.Connection) -> bool:
    try:
        row = connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
    except sqlite3.Error:
        return False
    return row is None


def check_earlier_results(
    out: Path, journal: Path, *, batch: str, simulated: bool, new_run: bool
) -> None:
    """Refuse to start over silently where an earlier run's journal is gone (see above).

    With ``new_run`` (and the journal missing or empty), the earlier results.jsonl is moved
    to ``results-<UTC time>.jsonl`` beside it and the run starts over.
    """
    results = out / RESULTS_NAME
    earlier = [
        record
        for record in read_results(results)
        if bool(record.get("simulated")) == simulated and record.get("task_id")
    ]
    empty = _journal_is_empty(journal, batch)
    if new_run and not empty:
        raise InputError(
            f"--new-run starts over only where the journal is gone, and {shown_path(journal)} "
            "still records this batch: run without --new-run to resume it, or use another --out"
        )
    if not earlier or not empty:
        return
    if new_run:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        results.rename(results.with_name(f"results-{stamp}.jsonl"))
        return
    kind, again = ("simulated ", "") if simulated else ("", " as a new paid job")
    raise InputError(
        f"{shown_path(results)} lists {len(earlier)} {kind}job(s) of an earlier run, but the "
        f"journal {shown_path(journal)} is missing or empty: running on would submit every "
        f"job again{again}; nothing was sent. Give the earlier run's journal with "
        "--journal PATH, or add --new-run to start over"
    )
