"""An asyncio-native client for MiniMax's Hailuo video models, through a gateway or MiniMax.

Here is what a user calls, catches and annotates; the protocols to implement to plug in a part
of your own (a provider, a journal, a transport, shared limits) are in :mod:`hailuo_async.extend`.
"""

from ._api import DEFAULT_BASE_URL
from ._bookkeeping import BatchCounts, LeftRunningJob
from ._client import HailuoClient, ProgressCallback
from ._coordination import Coordination
from ._download import DownloadProgress
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    DownloadError,
    HailuoError,
    InsufficientBalanceError,
    InternalServerError,
    InvalidRequestError,
    JobTimeoutError,
    JournalError,
    JournalInUseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnreachableError,
    SubmissionUnknownError,
    TaskFailedError,
    WaitTimeoutError,
    WebhookError,
)
from ._limits import Limits
from ._models import (
    Duration,
    JobOutcome,
    Model,
    Resolution,
    TaskResult,
    TaskStatus,
    Video,
    VideoRequest,
)
from ._polling import PollPolicy
from ._retry import RetryPolicy, UnknownSubmissionPolicy
from ._stream import BatchItem, JobStream, RequestSource
from ._transport import Timeouts
from ._version import __version__
from ._watcher import EventCallback, EventKind, TaskEvent, TaskWatcher, WatchOutcome
from ._worker import WorkerSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchCounts",
    "BatchItem",
    "ContentPolicyError",
    "Coordination",
    "DownloadError",
    "DownloadProgress",
    "Duration",
    "EventCallback",
    "EventKind",
    "HailuoClient",
    "HailuoError",
    "InsufficientBalanceError",
    "InternalServerError",
    "InvalidRequestError",
    "JobOutcome",
    "JobStream",
    "JobTimeoutError",
    "JournalError",
    "JournalInUseError",
    "LeftRunningJob",
    "Limits",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "ProgressCallback",
    "RateLimitError",
    "RequestSource",
    "Resolution",
    "RetryPolicy",
    "ServiceUnreachableError",
    "SubmissionUnknownError",
    "TaskEvent",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "TaskWatcher",
    "Timeouts",
    "UnknownSubmissionPolicy",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "WatchOutcome",
    "WebhookError",
    "WorkerSettings",
    "__version__",
]
