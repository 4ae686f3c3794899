"""results.jsonl: one line per job, appended and flushed the moment the job finishes.

A resumed batch appends to the same file. A job already recorded with the same task and
status (a job the journal reports again on resume) is not written twice. A job recorded
again with another outcome (a failed job submitted again with ``--retry-failed``) gets a
new line while the batch runs; when the batch ends, stopped or not, the file is rewritten
atomically with one line per job, its latest, and results.html is written beside it from
those lines (see :mod:`._results_page`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from .._models import JobOutcome
from .._refusals import created_nothing, refuses_the_job
from ._results_page import PAGE_NAME, PageJob, write_results_page

__all__ = ["RESULTS_NAME", "OutcomeKind", "ResultsFile", "compact", "outcome_kind", "read_results"]

RESULTS_NAME = "results.jsonl"

OutcomeKind = Literal["succeeded", "not_downloaded", "unsent", "failed"]
"""How a job came out; the first two and ``failed`` are results.jsonl's ``status`` values."""


def outcome_kind(outcome: JobOutcome) -> OutcomeKind:
    """How a job came out of a batch, for its results line and for what to do next.

    ``not_downloaded``: finished (and paid for) at the service, its video not saved yet;
    a rerun or ``hailuo work`` fetches it. ``unsent``: refused before any task was made, and
    not for its own fault (the account refused, a 5xx past the retries): a rerun submits it.
    ``failed``: everything else that did not succeed.
    """
    if outcome.ok:
        return "succeeded"
    if outcome.result is not None and outcome.result.ok:
        return "not_downloaded"
    error = outcome.error
    if (
        outcome.task_id is None
        and error is not None
        and created_nothing(error)
        and not refuses_the_job(error)
        and not outcome.replayed
    ):
        return "unsent"
    return "failed"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of an existing results file (unreadable lines, say a cut last one, skipped)."""
    records: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _job(record: Mapping[str, Any]) -> str:
    return str(record.get("key") or f"line:{record.get('line')}")


def _identity(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return (_job(record), str(record.get("task_id")), str(record.get("status")))


def compact(path: Path) -> list[dict[str, Any]]:
    """Rewrite ``path`` atomically with one line per job: its latest, in first-seen order.

    Returns those lines' records.
    """
    latest: dict[str, dict[str, Any]] = {}
    for record in read_results(path):
        latest[_job(record)] = record
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as file:
        for record in latest.values():
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return list(latest.values())


class ResultsFile:
    """Appends records to results.jsonl, each flushed and synced as soon as it is written.

    On exit the file is compacted and results.html written beside it, titled ``title``,
    with a card for each of ``jobs`` (the batch file's; those not finished say so).
    """

    def __init__(
        self, path: Path, *, title: str = "hailuo batch", jobs: Sequence[PageJob] = ()
    ) -> None:
        self.path = path
        self.page_path = path.with_name(PAGE_NAME)
        self._title = title
        self._jobs = jobs
        self.previous = read_results(path)
        self._seen: dict[tuple[str, str, str], Mapping[str, Any]] = {
            _identity(record): record for record in self.previous
        }
        self._file: IO[str] | None = None

    def __enter__(self) -> ResultsFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            records = compact(self.path)
            write_results_page(self.page_path, records, title=self._title, jobs=self._jobs)

    def recorded(self, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The line already written for this same outcome, if any."""
        return self._seen.get(_identity(record))

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append one record unless the same outcome is already there; True if written."""
        assert self._file is not None, "use ResultsFile as a context manager"
        identity = _identity(record)
        if identity in self._seen:
            return False
        self._seen[identity] = record
        stamped = {**record, "finished_at": _now()}
        self._file.write(json.dumps(stamped, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
