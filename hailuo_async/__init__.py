"""An asyncio-native client for the MiniMax Hailuo-02 video-generation API."""

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
)
from ._models import JobOutcome, TaskResult, TaskStatus, Video, VideoRequest
from ._polling import PollPolicy
from ._retry import RetryPolicy
from ._transport import Timeouts
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "HailuoClient",
    "HailuoError",
    "InternalServerError",
    "InvalidRequestError",
    "JobOutcome",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RetryPolicy",
    "SubmissionUnknownError",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "Timeouts",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "__version__",
]
