"""Every error this library raises.

Catch :class:`HailuoError` to handle them all. The hierarchy::

    HailuoError
    ├── InvalidRequestError          (also a ValueError) bad input, caught before anything is sent
    ├── APIError                     something went wrong talking to the service
    │   ├── APIStatusError           the service answered with an error (status or code)
    │   │   ├── BadRequestError          400 (MiniMax: 2013)
    │   │   │   └── ContentPolicyError       the prompt or image was refused (MiniMax: 1026)
    │   │   ├── AuthenticationError      401 (MiniMax: 1004, 2049)
    │   │   ├── PermissionDeniedError    403
    │   │   ├── NotFoundError            404 (MiniMax: 2013 for a task id)
    │   │   ├── RateLimitError           429 (MiniMax: 1002, 2045, 2056)
    │   │   ├── InsufficientBalanceError the account cannot pay for more jobs (MiniMax: 1008)
    │   │   └── InternalServerError      5xx (MiniMax: 1000, 1001, 1024, 1033)
    │   ├── APIConnectionError       no usable answer: refused, reset, DNS, TLS ...
    │   │   ├── APITimeoutError          ... or no answer in time
    │   │   └── ServiceUnreachableError  ... from a service that never answered this client
    │   └── APIResponseValidationError  an answer that is not what the API documents
    ├── SubmissionUnknownError       a submission may or may not have started a paid job
    ├── TaskFailedError              the job ended failed (TaskStatus.FAILED)
    ├── WaitTimeoutError             the job did not end within the caller's timeout
    ├── JobTimeoutError              a watched job ran past max_job_duration (or stayed UNKNOWN)
    ├── DownloadError                a video could not be downloaded completely
    ├── JournalError                 the journal could not be used (from hailuo_async.journal)
    │   ├── JournalInUseError            another run holds the SQLite journal (or out folder)
    │   ├── JournalClosedError           the store is not open
    │   ├── JournalConnectionError       the journal's database cannot be reached
    │   ├── JournalPermissionError       the database refused the role what the journal needs
    │   ├── JournalSchemaError           tables written by another version of the library
    │   ├── JournalProviderError         the batch was sent through another provider
    │   ├── UnknownJobError              no job with this key was recorded
    │   ├── InvalidTransitionError       a job cannot move from its state to the one asked
    │   │   └── LeaseLostError               the worker's lease on the job is gone
    │   └── JobConflictError             keys recorded earlier for a different request
    ├── CoordinationError            the coordinating PostgreSQL database could not be used
    │                                (from hailuo_async.postgres)
    └── WebhookError                 (also a ValueError) a webhook body of the wrong shape

MiniMax's own API answers most errors with HTTP 200 and a code in its body
(``base_resp.status_code``): those are the same classes, with the code in ``code``.

No message, repr or attribute of these errors ever holds the API key, and a journal error's
message shows no database password (see :func:`hailuo_async._dsn.mask_dsn`).

Which answered refusals of a submission concern the account rather than the job (and stop
a batch's submissions) is decided in one place: :mod:`hailuo_async._refusals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._base_errors import HailuoError, InvalidRequestError
from ._dsn import mask_dsn

if TYPE_CHECKING:
    from ._models import TaskResult, VideoRequest

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ContentPolicyError",
    "DownloadError",
    "HailuoError",
    "InsufficientBalanceError",
    "InternalServerError",
    "InvalidRequestError",
    "JobTimeoutError",
    "JournalError",
    "JournalInUseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnreachableError",
    "SubmissionUnknownError",
    "TaskFailedError",
    "WaitTimeoutError",
    "WebhookError",
]

# Response headers that may carry credentials or session state; never kept on an error.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# Error bodies are untrusted and may be huge HTML pages: keep enough to debug, no more.
_MAX_KEPT_BODY_CHARS = 2_000


class APIError(HailuoError):
    """Talking to the service went wrong."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url


class APIStatusError(APIError):
    """The service answered with an error: an error status, or an error code in its body.

    ``status_code`` is the HTTP status; ``code`` the service's own error code when it sent
    one (MiniMax's ``base_resp.status_code``, in answers whose status is 200), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: object = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status_code = status_code
        self.code = code
        self.body = _truncate_body(body)
        self.headers: dict[str, str] = {
            name: value
            for name, value in (headers or {}).items()
            if name.lower() not in _SECRET_HEADERS
        }


class BadRequestError(APIStatusError):
    """400: the service refused the request's parameters."""


class ContentPolicyError(BadRequestError):
    """The service refused the prompt or an image as sensitive: no task was made."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model (or a presigned URL has expired)."""


class InsufficientBalanceError(APIStatusError):
    """The account's balance cannot pay for the job (MiniMax: 1008): nothing was started.

    A refusal of the account, not of the job: a batch stops submitting at the first one, and
    its jobs not sent yet come out with it, unsent (a rerun submits them once the account
    can pay).
    """


class NotFoundError(APIStatusError):
    """404: the service does not know this task id."""


class RateLimitError(APIStatusError):
    """429: too many requests or too many active jobs."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InternalServerError(APIStatusError):
    """5xx: the service or a gateway in front of it failed."""


class APIConnectionError(APIError):
    """No usable answer came back: the connection failed, was reset, or was cut short.

    ``request_sent`` is False only when the request certainly never left this machine
    (for example the connection could not be opened), so a paid job cannot have started.
    ``first_contact`` is True when the service had not answered any request of this
    client yet (see ``RetryPolicy.unreachable_after``).
    """

    def __init__(
        self,
        message: str,
        *,
        request_sent: bool = True,
        first_contact: bool = False,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.request_sent = request_sent
        self.first_contact = first_contact


class APITimeoutError(APIConnectionError):
    """No answer came back in time."""


class ServiceUnreachableError(APIConnectionError):
    """The service has never answered this client, and no connection to it would open.

    Raised once ``RetryPolicy.unreachable_after`` seconds of tries have passed (the CLI
    sets 2): the address is wrong, or the service is down. Nothing was sent. A batch or a
    watcher stops at once on it: every other request would meet the same.
    """


class APIResponseValidationError(APIError):
    """The service answered 2xx with something the API does not document (bad JSON, wrong shape)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: object = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status_code = status_code
        self.body = _truncate_body(body)


class SubmissionUnknownError(HailuoError):
    """A submission's outcome cannot be known: the service may have started (and billed) a job.

    Raised when the request left this machine but no answer came back (a reset, a timeout,
    an unreadable answer). The API has no idempotency key, so sending it again might pay twice;
    that only happens when the caller chose ``on_unknown_submission="resubmit"``.
    """

    def __init__(self, request: VideoRequest, *, reason: str, resent: bool = False) -> None:
        aftermath = (
            "it was sent again until the retries ran out, so several jobs may have started"
            if resent
            else "it was not sent again"
        )
        super().__init__(
            f"the submission may or may not have started a paid job ({reason}); {aftermath}"
        )
        self.request = request
        self.reason = reason
        self.resent = resent


class TaskFailedError(HailuoError):
    """The job ended with status FAILED; ``result`` holds the service's answer and reason."""

    def __init__(self, result: TaskResult) -> None:
        reason = result.reason or "no reason given"
        super().__init__(f"task {result.task_id} failed: {reason}")
        self.result = result
        self.task_id = result.task_id


class WaitTimeoutError(HailuoError, TimeoutError):
    """The job did not end within the caller's timeout; the job itself goes on at the service."""

    def __init__(self, task_id: str, last_result: TaskResult | None, timeout: float) -> None:
        super().__init__(f"task {task_id} did not finish within {timeout:g} s; it is still running")
        self.task_id = task_id
        self.last_result = last_result
        self.timeout = timeout


class JobTimeoutError(HailuoError, TimeoutError):
    """A watched job ran longer than any real job takes; its watch ended, the job may go on.

    ``limit`` is the policy's ``max_job_duration``, or its ``max_unknown_duration`` when
    ``unknown_status`` is True (the service kept answering a status this library does not
    know). ``last_result`` is the last answer seen. A journaled batch keeps the job
    ``submitted``, so a rerun watches it again; it is never resubmitted.
    """

    def __init__(
        self,
        task_id: str,
        last_result: TaskResult | None,
        limit: float,
        *,
        unknown_status: bool = False,
    ) -> None:
        if unknown_status:
            status = last_result.raw_status if last_result is not None else "?"
            what = f"kept the unknown status {status!r} for {limit:g} s"
        else:
            what = f"did not end within {limit:g} s of being watched from its submission"
        super().__init__(f"task {task_id} {what}; its watch ended, the job may still run")
        self.task_id = task_id
        self.last_result = last_result
        self.limit = limit
        self.unknown_status = unknown_status


class DownloadError(HailuoError):
    """A video could not be downloaded completely; no partial file was left at the destination."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class JournalError(HailuoError):
    """The journal could not read or write its records.

    Its message never shows a database password: whatever it quotes (an address, a driver's
    error) is masked first.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (mask_dsn(args[0]), *args[1:])
        super().__init__(*args)


class JournalInUseError(JournalError):
    """Another run holds the SQLite journal (or the folder a batch writes its results to).

    A SQLite journal is one run's at a time: two runs on one journal would each take the
    other's jobs for interrupted ones. ``holder`` says who holds it (host, process id, since
    when) as that run wrote it; ``path`` is the journal (or folder). The hold is an
    operating-system lock, released when that process ends however it ends.
    """

    def __init__(self, path: str, holder: str, *, what: str = "the journal") -> None:
        super().__init__(f"{what} {path} is in use by another run ({holder})")
        self.path = path
        self.holder = holder


class WebhookError(HailuoError, ValueError):
    """A webhook body that is not an event of the documented shape; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _truncate_body(body: object) -> object:
    if isinstance(body, str) and len(body) > _MAX_KEPT_BODY_CHARS:
        return body[:_MAX_KEPT_BODY_CHARS] + "…"
    return body
