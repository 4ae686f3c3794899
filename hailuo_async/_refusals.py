"""Which refusals concern the account rather than one job: they stop a batch's submissions.

A refusal of the account (a balance that cannot pay) says nothing about the job it came
with, and every job not sent yet would meet it too: nothing was created, so the job stays
unsent, and so does every job not sent yet; a rerun once the account is put right submits
them as if new.
"""

from __future__ import annotations

from ._exceptions import InsufficientBalanceError

__all__ = ["refuses_the_account"]

# Answered refusals that no job of the account can avoid until the account is put right.
_ACCOUNT_REFUSALS = (InsufficientBalanceError,)


def refuses_the_account(error: BaseException) -> bool:
    """True for an answered refusal of the account (no task made, none will be)."""
    return isinstance(error, _ACCOUNT_REFUSALS)
