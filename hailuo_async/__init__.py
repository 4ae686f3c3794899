"""An asyncio-native client for the MiniMax Hailuo-02 video-generation API."""

from ._batch import BatchCounts, JobStream
from ._client import DEFAULT_BASE_URL, HailuoClient
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    HailuoError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SubmissionUnknownError,
    TaskFailedError,
    WaitTimeoutError,
    WebhookError,
)
from ._models import JobOutcome, TaskResult, TaskStatus, Video, VideoRequest
from ._polling import PollPolicy
from ._retry import RetryPolicy
from ._transport import Timeouts
from ._version import __version__
from ._watcher import TaskEvent, TaskWatcher

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
    "DownloadError",
    "HailuoClient",
    "HailuoError",
    "InternalServerError",
    "InvalidRequestError",
    "JobOutcome",
    "JobStream",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RetryPolicy",
    "SubmissionUnknownError",
    "TaskEvent",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "TaskWatcher",
    "Timeouts",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "WebhookError",
    "__version__",
]
