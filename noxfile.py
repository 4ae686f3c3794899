"""Developer tasks: tests, lint, typecheck, docs, bench, demo and soak (``nox -s NAME``)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (the fast reliability suite included)."""
    session.install("-e", ".[test,cli,fastapi]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check everything with mypy --strict."""
    session.install("-e", ".[dev,cli,fastapi]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks; ``nox -s bench -- --quick`` for the short run."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the README's main job: a bulk batch against the simulated service."""
    session.install("-e", ".[cli]")
    session.run("hailuo", "batch", "examples/prompts.txt", "--simulate", "--out", "videos/")


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Run the long reliability suite (fault soak and crash trials)."""
    session.install("-e", ".[test,cli]")
    session.run("pytest", "tests/reliability", "--soak", *session.posargs)
