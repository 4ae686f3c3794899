"""Errors of the job journal; all are JournalError (a HailuoError): one ``except`` catches them."""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import JournalError, JournalInUseError

__all__ = [
    "InvalidTransitionError",
    "JobConflictError",
    "JournalClosedError",
    "JournalConnectionError",
    "JournalError",
    "JournalInUseError",
    "JournalPermissionError",
    "JournalSchemaError",
    "LeaseLostError",
    "UnknownJobError",
]


class JournalClosedError(JournalError):
    """The store is not open (never opened, or already closed)."""


class JournalConnectionError(JournalError):
    """The journal's database cannot be reached (a wrong address, a refused login, a lost link)."""


class JournalPermissionError(JournalError):
    """The database refused the role something the journal needs (to create or use its tables)."""


class JournalSchemaError(JournalError):
    """The journal's tables were written by another version of the library than this one reads."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class UnknownJobError(JournalError):
    """No job with this key was recorded."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no job with key {key!r} is recorded")
        self.key = key


class InvalidTransitionError(JournalError):
    """A job cannot move from its current state to the one asked for."""

    def __init__(self, key: str, current: str, target: str, *, detail: str = "") -> None:
        message = f"job {key!r} is {current}; it cannot become {target}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.key = key
        self.current = current
        self.target = target


class LeaseLostError(InvalidTransitionError):
    """The worker does not hold a live lease on the job, so it must not submit it."""


class JobConflictError(JournalError):
    """Keys already recorded for a different request: the key no longer names the same job."""

    def __init__(self, keys: Sequence[str]) -> None:
        shown = ", ".join(repr(key) for key in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        super().__init__(f"keys recorded earlier for a different request: {shown}{more}")
        self.keys = tuple(keys)
