"""What a restarted batch does with each of its jobs, from what the journal holds."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from .._refusals import refuses_the_account
from .._retry import UnknownSubmissionPolicy
from ._failures import error_from_record
from ._records import JobRecord, JobState

__all__ = ["ResumeAction", "ResumeEntry", "ResumePlan", "classify"]


class ResumeAction(str, enum.Enum):
    """The runner's next step for one job of a resumed batch."""

    SUBMIT = "submit"
    """Not sent yet (or a retry the caller asked for): submit it."""
    WATCH = "watch"
    """A task id is known: wait for that task; never submit again."""
    FINISHED = "finished"
    """Done: skip it and use the stored result (download it if ``record.path`` is None)."""
    FAILED = "failed"
    """Failed earlier and retries were not asked for: report the stored error."""
    UNKNOWN = "unknown"
    """A submission whose outcome cannot be known: report SubmissionUnknownError."""
    LEASED = "leased"
    """Another worker holds a live lease on it: leave it alone."""


@attrs.frozen(kw_only=True)
class ResumeEntry:
    """One key of the batch, what to do with it, and its record (None if never recorded)."""

    key: str
    action: ResumeAction
    record: JobRecord | None = None


@attrs.frozen
class ResumePlan:
    """The action for each key of a batch, in the batch's order."""

    entries: Mapping[str, ResumeEntry]

    def __getitem__(self, key: str) -> ResumeEntry:
        return self.entries[key]

    def entry_for(self, key: str) -> ResumeEntry:
        """The key's entry; a key the plan does not hold was never recorded: SUBMIT."""
        entry = self.entries.get(key)
        return entry if entry is not None else ResumeEntry(key=key, action=ResumeAction.SUBMIT)

    def __len__(self) -> int:
        return len(self.entries)

    def keys_for(self, action: ResumeAction) -> list[str]:
        """The keys whose action is ``action``, in the batch's order."""
        return [key for key, entry in self.entries.items() if entry.action is action]

    def counts(self) -> dict[ResumeAction, int]:
        """How many keys each action has (zero counts left out)."""
        counts: dict[ResumeAction, int] = {}
        for entry in self.entries.values():
            counts[entry.action] = counts.get(entry.action, 0) + 1
        return counts


def _action(
    record: JobRecord | None,
    *,
    retry_failed: bool,
    on_unknown_submission: UnknownSubmissionPolicy,
    now: datetime,
) -> ResumeAction:
    if record is None:
        return ResumeAction.SUBMIT
    state = record.state
    live_lease = record.owner is not None and (record.lease_until or now) > now
    if live_lease and not state.is_final:
        return ResumeAction.LEASED
    if state is JobState.RECORDED:
        return ResumeAction.SUBMIT
    if state is JobState.SUBMITTED:
        return ResumeAction.WATCH
    if state is JobState.FINISHED:
        return ResumeAction.FINISHED
    if state is JobState.FAILED:
        return ResumeAction.SUBMIT if retry_failed or _never_sent(record) else ResumeAction.FAILED
    # SUBMITTING here means the process that wrote it is gone: the POST may have reached the
    # service, so sending it again could pay twice.
    return ResumeAction.SUBMIT if on_unknown_submission == "resubmit" else ResumeAction.UNKNOWN


def _never_sent(record: JobRecord) -> bool:
    """A job journaled failed because its account was refused: nothing was ever sent.

    Earlier releases journaled such jobs failed; they are submitted again as if new (this
    release leaves them recorded in the first place).
    """
    return record.task_id is None and refuses_the_account(error_from_record(record))


def classify(
    keys: Sequence[str] | None,
    records: Mapping[str, JobRecord],
    *,
    retry_failed: bool,
    on_unknown_submission: UnknownSubmissionPolicy,
    now: datetime,
) -> ResumePlan:
    """The resume plan of a batch: pure, so every store decides the same way.

    With ``keys`` None the plan covers every record, in the order of ``records``.
    """
    if keys is None:
        keys = list(records)
    return ResumePlan(
        {
            key: ResumeEntry(
                key=key,
                action=_action(
                    records.get(key),
                    retry_failed=retry_failed,
                    on_unknown_submission=on_unknown_submission,
                    now=now,
                ),
                record=records.get(key),
            )
            for key in keys
        }
    )
