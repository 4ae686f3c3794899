"""An asyncio-native client for MiniMax's Hailuo video models, through a gateway or MiniMax."""

from ._api import DEFAULT_BASE_URL, SubmissionRecorder
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
from ._limits import ActiveJobs, Limits, RequestKind, RequestLimits
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
from ._polling import DurationStats, PollPolicy
from ._push import PushRegistry, PushSubscriber
from ._retry import RetryPolicy, UnknownSubmissionPolicy
from ._state import SharedState
from ._stream import BatchItem, JobStream, RequestSource
from ._submitter import SubmitOne
from ._transport import HTTPTransport, TCPTransport, Timeouts
from ._version import __version__
from ._watcher import EventCallback, EventKind, PollOne, TaskEvent, TaskWatcher, WatchOutcome
from ._worker import WorkerSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "ActiveJobs",
    "AuthenticationError",
    "BadRequestError",
    "BatchCounts",
    "BatchItem",
    "ContentPolicyError",
    "Coordination",
    "DownloadError",
    "DownloadProgress",
    "Duration",
    "DurationStats",
    "EventCallback",
    "EventKind",
    "HTTPTransport",
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
    "PollOne",
    "PollPolicy",
    "ProgressCallback",
    "PushRegistry",
    "PushSubscriber",
    "RateLimitError",
    "RequestKind",
    "RequestLimits",
    "RequestSource",
    "Resolution",
    "RetryPolicy",
    "ServiceUnreachableError",
    "SharedState",
    "SubmissionRecorder",
    "SubmissionUnknownError",
    "SubmitOne",
    "TCPTransport",
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
