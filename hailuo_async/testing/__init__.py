"""A faithful fake of the Hailuo-02 service, over real HTTP, for testing apps offline.

``FakeHailuoServer`` runs the API and a separate storage host on local ports (or, with
``in_process=True``, in memory behind ``server.transport()``: no socket), with seeded job
timing, a time scale, rate limits and injected faults, and counts what its clients did in
``server.stats``. It speaks the gateway's API (API.md) or, with ``provider="minimax"``,
MiniMax's own v1 video API over the same machinery. The pytest fixtures ``fake_hailuo``,
``fake_minimax`` and ``fake_hailuo_factory`` are registered automatically (entry point
``hailuo_async.testing.pytest_plugin``), and ``python -m hailuo_async.testing`` runs the fake
from the command line.
"""

from ._config import (
    FakeHailuoConfig,
    Faults,
    Fixed,
    LogNormal,
    StorageFaults,
    Uniform,
)
from ._in_process import InProcessTransport
from ._server import (
    FakeHailuoServer,
)
from ._stats import Stats
from ._storage import sample_video
from ._tasks import FakeTask

__all__ = [
    "FakeHailuoConfig",
    "FakeHailuoServer",
    "FakeTask",
    "Faults",
    "Fixed",
    "InProcessTransport",
    "LogNormal",
    "Stats",
    "StorageFaults",
    "Uniform",
    "sample_video",
]
