"""The ``--soak`` option, and the figures every reliability test reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import Figures, knobs

RESULTS = Path(__file__).parent / "results"
_FIGURES = pytest.StashKey[Figures]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--soak``: the long version of the reliability suite."""
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long reliability soak (tests/reliability); figures go to its results/",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Size the runs before the test modules are imported, and start collecting figures."""
    knobs["soak"] = bool(config.getoption("soak", default=False))
    config.stash[_FIGURES] = Figures()


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    """The session's figures; each test records its own section."""
    return pytestconfig.stash[_FIGURES]


@pytest.fixture
def soak() -> bool:
    """True under ``--soak``."""
    return knobs["soak"]


def _jsonable(value: object) -> object:
    """Figures as JSON data: mappings keyed by text, everything else a number or its text."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print the figures as a table; under ``--soak`` also write them to results/."""
    figures = config.stash.get(_FIGURES, None)
    if figures is None or not figures.sections:
        return
    mode = "soak" if knobs["soak"] else "fast"
    terminalreporter.section(f"reliability figures ({mode} run)")
    for line in figures.lines():
        terminalreporter.write_line(line)
    if knobs["soak"]:
        RESULTS.mkdir(exist_ok=True)
        target = RESULTS / "soak-figures.json"
        target.write_text(json.dumps(_jsonable(figures.sections), indent=2) + "\n")
        terminalreporter.write_line(f"figures written to {target}")
