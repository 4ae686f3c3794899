"""Extension points: the protocols to implement, and the types they speak, to plug your own
part into the client. Everything a user calls is in :mod:`hailuo_async` (and its
``journal``, ``testing``, ``webhooks`` and ``fastapi`` modules); what is here is for
writing a part of your own.

- A service dialect: :class:`Provider` (with :class:`Call` and :class:`Step`), given as
  ``HailuoClient(provider=...)``; the built-in ones are in :mod:`hailuo_async.providers`.
- A journal: :class:`JobStore` (a batch of one process), :class:`SharedJobStore` (a batch
  several workers share: ``generate_many`` and ``work`` run as a worker on one), with the
  records they take and give (:class:`JobSpec`, :func:`job_specs`, :class:`ResumePlan`,
  :class:`ResumeEntry`, :class:`ResumeAction`); given as ``generate_many(journal=...)``.
- Connections: :class:`HTTPTransport` (:class:`TCPTransport` is the default), given as
  ``HailuoClient(transport=...)``.
- What clients share (``HailuoClient(state=...)``): :class:`SharedState`, made of
  :class:`RequestLimits` (per :data:`RequestKind`), :class:`ActiveJobs` and
  :class:`PushRegistry` (whose subscribers are :class:`PushSubscriber`); the ``[postgres]``
  extra's are in :mod:`hailuo_async.postgres`.
- A durable record of one submission's POSTs: :class:`SubmissionRecorder`, given as
  ``client.submit(request, recorder=...)``.
"""

from ._api import SubmissionRecorder
from ._limits import ActiveJobs, RequestKind, RequestLimits
from ._push import PushRegistry, PushSubscriber
from ._state import SharedState
from ._transport import HTTPTransport, TCPTransport
from .journal._keys import JobSpec, job_specs
from .journal._resume import ResumeAction, ResumeEntry, ResumePlan
from .journal._store import JobStore, SharedJobStore
from .providers._protocol import Call, Provider, Step

__all__ = [
    "ActiveJobs",
    "Call",
    "HTTPTransport",
    "JobSpec",
    "JobStore",
    "Provider",
    "PushRegistry",
    "PushSubscriber",
    "RequestKind",
    "RequestLimits",
    "ResumeAction",
    "ResumeEntry",
    "ResumePlan",
    "SharedJobStore",
    "SharedState",
    "Step",
    "SubmissionRecorder",
    "TCPTransport",
    "job_specs",
]
