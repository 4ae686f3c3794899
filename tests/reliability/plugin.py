"""The ``--soak`` option, and the figures every reliability test reports.

Loaded for every run (``pytest_plugins`` in tests/conftest.py), so the figures are printed
by the process that prints the report: with pytest-xdist, each worker hands its figures to
the main process when it ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .support import Figures, knobs

RESULTS = Path(__file__).parent / "results"
FIGURES = pytest.StashKey[Figures]()
_HANDED_OVER = "reliability_figures"


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
    config.stash[FIGURES] = Figures()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker, hand the figures over to the main process."""
    handover: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if handover is not None:
        handover[_HANDED_OVER] = _jsonable(session.config.stash[FIGURES].sections)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the main process, take the figures a pytest-xdist worker handed over."""
    sections = getattr(node, "workeroutput", {}).get(_HANDED_OVER, {})
    figures = node.config.stash[FIGURES]
    for section, values in sections.items():
        figures.record(section, values, quiet=True)


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
    figures = config.stash.get(FIGURES, None)
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
