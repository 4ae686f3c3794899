"""Errors as one clear line, and the exit codes of every command."""

from __future__ import annotations

from typing import IO, Any

import click

from .._dsn import mask_dsn
from .._exceptions import (
    APIConnectionError,
    AuthenticationError,
    HailuoError,
    InvalidRequestError,
    PermissionDeniedError,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "InputError",
    "Interrupted",
    "describe",
    "error_for",
]

EXIT_OK = 0
"""Everything asked for succeeded."""
EXIT_FAILED = 1
"""Some job failed, or the service could not be used."""
EXIT_USAGE = 2
"""A usage error or an invalid input file: nothing was sent."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT), as shells report it."""


class CliError(click.ClickException):
    """An error shown as one line on stderr; the command exits 1."""

    exit_code = EXIT_FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``error: message`` to stderr, on one line (a driver's message may span more)."""
        message = " ".join(self.format_message().split())
        click.echo(f"error: {message}", file=file, err=file is None)


class InputError(CliError):
    """A usage error or invalid input, found before anything was sent; exits 2."""

    exit_code = EXIT_USAGE


class Interrupted(CliError):
    """Stopped by Ctrl-C; exits 130."""

    exit_code = EXIT_INTERRUPTED


def _leaf(exc: BaseException) -> BaseException:
    """The single error inside (possibly nested) exception groups, if there is just one."""
    # Duck-typed: BaseExceptionGroup is a builtin only from Python 3.11.
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return exc
        if not isinstance(inner[0], BaseException):
            return exc
        exc = inner[0]


# The library's errors name Python arguments; on the command line these are the fixes.
_CLI_NAMES = {
    "base_url": "--base-url (or HAILUO_BASE_URL)",
    "api_key": "--api-key (or HAILUO_API_KEY)",
    "task_id": "TASK_ID",
    "schema": "the URL's ?schema=",
}
_CLI_FIXES = {
    "pass allow_insecure=True": "add --allow-insecure",
    "pass api_key=... or set the HAILUO_API_KEY variable": "set HAILUO_API_KEY or pass --api-key",
    "for a local file, pass a pathlib.Path, not a string": "or the path of a local image",
}


def _cli_wording(exc: InvalidRequestError) -> str:
    """The error with the command line's names for the Python arguments it mentions."""
    message = exc.message
    for python_fix, cli_fix in _CLI_FIXES.items():
        message = message.replace(python_fix, cli_fix)
    return f"{_CLI_NAMES.get(exc.field, exc.field)}: {message}"


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback (nor a database password)."""
    return mask_dsn(_describe(_leaf(exc)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidRequestError):
        return _cli_wording(exc)
    if isinstance(exc, AuthenticationError):
        return f"{exc} - the service refused the API key: check HAILUO_API_KEY (or try --simulate)"
    if isinstance(exc, PermissionDeniedError):
        return f"{exc} - this API key may not use the Hailuo-02 model"
    if isinstance(exc, APIConnectionError):
        return f"cannot reach the service: {exc} (check --base-url / HAILUO_BASE_URL)"
    if isinstance(exc, HailuoError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc} (run with --debug for details)"
    return f"{type(exc).__name__}: {exc} (run with --debug for details)"


def error_for(exc: BaseException) -> CliError:
    """The one-line error for ``exc``: exit 2 for bad input caught before sending, else 1."""
    if isinstance(_leaf(exc), InvalidRequestError):
        return InputError(describe(exc))
    return CliError(describe(exc))
