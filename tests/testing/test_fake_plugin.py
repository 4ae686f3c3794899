"""The pytest fixtures, registered by the package's pytest11 entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakeutil import open_api

from hailuo_async.testing import FakeHailuoServer, Faults
from hailuo_async.testing.pytest_plugin import FAST_DEFAULTS, FakeHailuoFactory, _backend_name


@pytest.fixture
def fake_hailuo_factory() -> FakeHailuoFactory:
    """The plugin's own factory, as users get it: fakes on ports (the suite's are in-process)."""
    return lambda **knobs: FakeHailuoServer(**{**FAST_DEFAULTS, **knobs})


def test_plugin_is_registered_by_entry_point(pytestconfig: pytest.Config) -> None:
    """The installed package's entry point loaded the plugin; no conftest needed."""
    assert pytestconfig.pluginmanager.has_plugin("hailuo_async")


@pytest.mark.anyio
async def test_fake_hailuo_is_running_with_fast_defaults(fake_hailuo: FakeHailuoServer) -> None:
    """fake_hailuo is a started server with the fast, seeded defaults."""
    assert fake_hailuo.config.time_scale == FAST_DEFAULTS["time_scale"]
    assert fake_hailuo.seed == FAST_DEFAULTS["seed"]
    async with open_api(fake_hailuo) as api:
        data = await api.wait_terminal(await api.create(), timeout=5)
    assert data["task"]["status"] == "TASK_STATUS_SUCCEED"


@pytest.mark.anyio
async def test_factory_starts_servers_with_knobs(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """fake_hailuo_factory builds servers with chosen knobs over the fast defaults."""
    async with fake_hailuo_factory(failure_rate=1.0, faults=Faults()) as server:
        assert server.config.failure_rate == 1.0
        assert server.config.time_scale == FAST_DEFAULTS["time_scale"]
        async with open_api(server) as api:
            data = await api.wait_terminal(await api.create(), timeout=5)
    assert data["task"]["status"] == "TASK_STATUS_FAILED"


@pytest.mark.anyio
async def test_factory_servers_are_independent(fake_hailuo_factory: FakeHailuoFactory) -> None:
    """Two servers from the factory run side by side on their own ports."""
    async with fake_hailuo_factory(api_key="a") as first, fake_hailuo_factory() as second:
        assert first.url != second.url
        assert first.api_key == "a"


USER_TESTS = """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_uses_fixture(fake_hailuo):
    assert fake_hailuo.url.startswith("http://")

def test_plain_sync_test():
    assert True
"""

PLAIN_TESTS = """
def test_nothing_async():
    assert 1 + 1 == 2
"""


def _run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(source)
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_fixture_works_in_a_user_project(tmp_path: Path) -> None:
    """A user's test session gets fake_hailuo without any setup of its own."""
    result = _run_pytest(tmp_path, USER_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_backend_names_are_read_from_both_forms() -> None:
    """anyio_backend may be a name or a (name, options) pair; the fixture skips non-asyncio."""
    assert _backend_name("asyncio") == "asyncio"
    assert _backend_name(("trio", {})) == "trio"


def test_sessions_without_anyio_tests_are_unaffected(tmp_path: Path) -> None:
    """A plain synchronous test session runs as if the plugin were not there."""
    result = _run_pytest(tmp_path, PLAIN_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
