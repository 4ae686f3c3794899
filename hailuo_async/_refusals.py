"""What a refused submission means for its job: the one place that decides it.

The service answered a POST with an error: the answer itself proves no task was created, so
nothing was paid (the API layer already took the journal's ``submitting`` back to
``recorded``). What happens next depends on whose fault the refusal is.
"""

from __future__ import annotations

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnreachableError,
)

__all__ = ["created_nothing", "refuses_the_account", "refuses_the_job"]

# A 4xx that says nothing of the request: it may pass on another try.
_REQUEST_TIMEOUT = 408


def refuses_the_account(error: BaseException) -> bool:
    """True for a refusal of the account, not of the job: every other job would meet it too.

    These are: the key refused (401, :class:`AuthenticationError`), the key not allowed the
    model (403, :class:`PermissionDeniedError`), the balance unable to pay
    (:class:`InsufficientBalanceError`, or a 402 Payment Required, as some gateways
    answer). Nothing was created, so the job is left unsent (its journal entry back to
    ``recorded``, not ``failed``), and a batch stops submitting at the first one: the jobs
    not sent yet come out with this error, unsent, and a rerun once the account is put
    right submits them as if new. Sending them would only meet the same refusal, one
    request each. A refused poll counts too: the key that polls is the key that submits.

    A service that never answered this client and whose address takes no connection
    (:class:`ServiceUnreachableError`, with ``RetryPolicy.unreachable_after``) is treated
    alike: nothing reached it, and every other job would meet the same wall.
    """
    if isinstance(
        error,
        (
            AuthenticationError,
            PermissionDeniedError,
            InsufficientBalanceError,
            ServiceUnreachableError,
        ),
    ):
        return True
    # getattr: a failure replayed from a journal may lack what its class's __init__ sets.
    return isinstance(error, APIStatusError) and getattr(error, "status_code", None) == 402


def refuses_the_job(error: BaseException) -> bool:
    """True for a refusal of the job itself: a 400, or another 4xx about this request (413 ...).

    The job fails (journaled ``failed``: a rerun skips it unless ``retry_failed``), but no
    task was created and nothing was paid. Any other answered refusal (5xx, 429, a 404 of
    the endpoint) leaves the job unsent, for a rerun to submit.
    """
    if isinstance(error, BadRequestError):
        return True
    return (
        isinstance(error, APIStatusError)
        and 400 <= error.status_code < 500
        and error.status_code != _REQUEST_TIMEOUT
        and not isinstance(error, (RateLimitError, NotFoundError))
        and not refuses_the_account(error)
    )


def created_nothing(error: BaseException) -> bool:
    """True when a failed submission surely created no task: the service answered it with an
    error status, or the connection never opened (the request never left)."""
    if isinstance(error, APIStatusError):
        return True
    return isinstance(error, APIConnectionError) and not error.request_sent
