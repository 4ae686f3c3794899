"""What the library asks of a provider: its calls, how to read its answers, its webhooks.

A provider knows one service's dialect and nothing else: it builds each call's path, query
and body, reads each answer into the library's models, says which answers are errors (a
status, or a code inside a 200 body) and reads the webhook bodies the service pushes. It
sends nothing: :class:`~hailuo_async._api.HailuoAPI` sends every call, through the shared
limits and retries, with the key attached and masked out of errors there alone.

A poll may take more than one call (MiniMax asks for a task's state, then for its file's
URL): a :class:`Step` is one call and the reading of its answer, which gives the
:class:`~hailuo_async.TaskResult` or the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from .._exceptions import APIError
from .._limits import RequestKind
from .._models import TaskResult, VideoRequest
from .._push import WebhookEvent
from .._transport import Response

__all__ = ["Call", "Provider", "Step"]


@attrs.define
class Call:
    """One request to the API, as a provider builds it (the key is added when it is sent).

    ``path`` is relative to the base URL; ``query`` the encoded query string (``""`` for
    none); ``body`` the JSON body of a POST. ``kind`` is what the request spends in the
    limits: every call of a poll is a ``"poll"``. ``subject`` names the answer in errors
    ("the task result for 8f0c..."). Not frozen, though nothing changes one (as
    ``Response``): one is made per request, and a frozen one costs a setattr per field.
    """

    method: Literal["GET", "POST"]
    path: str
    kind: RequestKind
    subject: str
    query: str = ""
    body: bytes | None = attrs.field(default=None, repr=False)


@attrs.define
class Step:
    """One call of a poll, and how to read its answer: a result, or the next step."""

    call: Call
    read: Callable[[Response], TaskResult | Step]


@runtime_checkable
class Provider(Protocol):
    """A video service's dialect: its calls, answers, errors and webhooks.

    ``name`` is recorded in journals (a batch is resumed through the provider it was started
    with); ``default_base_url`` is used when no base URL is given. ``caps_active_jobs`` says
    whether the service limits active jobs, so that a refused submission may mean the cap
    rather than the request rate.

    Every ``read_*`` raises :class:`~hailuo_async._decoding.DecodeError` for an answer of
    the wrong shape; :meth:`answer_error` turns error answers into the library's errors.
    """

    @property
    def name(self) -> str:
        """The provider's name, as journals record it ("gateway", "minimax")."""

    @property
    def default_base_url(self) -> str:
        """The API's base URL when none is given."""

    @property
    def caps_active_jobs(self) -> bool:
        """True when the service caps active jobs (a refused submission may mean the cap)."""

    def check(self, request: VideoRequest) -> None:
        """Raise :class:`~hailuo_async.InvalidRequestError` naming the field for a request
        this service would refuse."""

    def submit_call(self, request: VideoRequest) -> Call:
        """The call that starts ``request`` (checked first, see :meth:`check`)."""

    def read_submission(self, answer: Response) -> str:
        """The task id in a submission's good answer."""

    def poll(self, task_id: str) -> Step:
        """The first step of reading a task's state (a valid task id)."""

    def refresh(self, result: TaskResult) -> Step:
        """The first step of renewing a finished task's expired video URL."""

    def answer_error(self, call: Call, answer: Response, *, base_url: str) -> APIError | None:
        """The error an answer to ``call`` carries, or None: an :class:`APIStatusError` for
        an error status or an error code in a good answer, an
        :class:`APIResponseValidationError` for an answer that contradicts itself (an error
        that may yet have started a job). An error shows ``base_url + call.path`` as its URL
        (the query left out).
        """

    def parse_webhook(self, data: Mapping[str, Any]) -> WebhookEvent:
        """What a webhook body (a JSON object) claims; raise WebhookError for a wrong shape."""
