"""Fixtures every test may use, and how the whole suite is spread over processes.

``python -m pytest`` with no paths (the README's command, and CI's) runs the suite on
``suite_workers`` processes (pyproject.toml) with pytest-xdist: the suite mostly waits
(subprocesses, the fake's scaled jobs, PostgreSQL), so several tests wait at once. A run
naming its tests, ``-n N`` (``-n 0``: one process) or ``-p no:xdist`` decides for itself.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from pgutil import fresh_schema

from hailuo_async.testing import FakeHailuoServer
from hailuo_async.testing.pytest_plugin import FAST_DEFAULTS, FakeHailuoFactory

# The reliability suite's --soak option and its figures, printed at the end of every run.
pytest_plugins = ["reliability.plugin"]

# Tests that share a session's private PostgreSQL cluster run in one process: it is made
# once there (initdb takes seconds), instead of once per process.
PRIVATE_CLUSTER_GROUP = "private-postgresql-cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``suite_workers``: how many processes run the whole suite."""
    parser.addini(
        "suite_workers",
        "processes (pytest-xdist) for a run of the whole suite; 0 runs it in this one",
        default="0",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Spread a run of the whole suite over ``suite_workers`` processes, when nothing says not."""
    workers = int(str(config.getini("suite_workers")))
    if (
        workers > 0
        and config.pluginmanager.hasplugin("xdist")
        and config.option.numprocesses is None
        and config.args_source is pytest.Config.ArgsSource.TESTPATHS
        and not config.option.usepdb
        and not hasattr(config, "workerinput")
    ):
        config.option.numprocesses = workers
        config.option.dist = "loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    """Register ``xdist_group`` for runs without pytest-xdist too (``-p no:xdist``)."""
    config.addinivalue_line("markers", "xdist_group(name): run these tests in one process")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests on the private PostgreSQL cluster in one process (see above)."""
    for item in items:
        if "private_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(PRIVATE_CLUSTER_GROUP))


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only: aiohttp has no other backend."""
    return "asyncio"


@pytest.fixture
def fake_hailuo_factory() -> FakeHailuoFactory:
    """The plugin's factory, serving in-process (no socket) unless a test asks for ports.

    ``fake_hailuo`` and ``fake_minimax`` are made with it. A test whose subject is a socket
    (another process, a port, a client other than aiohttp) asks ``in_process=False``.
    """

    def factory(**knobs: Any) -> FakeHailuoServer:
        return FakeHailuoServer(**{**FAST_DEFAULTS, "in_process": True, **knobs})

    return factory


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped after it (skips if no server answers)."""
    with fresh_schema() as schema:
        yield schema
