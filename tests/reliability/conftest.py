"""The reliability suite's fixtures (its option and figures: plugin.py)."""

from __future__ import annotations

import pytest

from .plugin import FIGURES
from .support import Figures, knobs


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    """The session's figures; each test records its own section."""
    return pytestconfig.stash[FIGURES]


@pytest.fixture
def soak() -> bool:
    """True under ``--soak``."""
    return knobs["soak"]
