"""The ``hailuo`` command (the ``[cli]`` extra: ``pip install -e '.[cli]'`` in a checkout)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``hailuo`` command line (exits the process with the command's status)."""
    try:
        from ._app import cli  # noqa: PLC0415 - a clear message when the extra is missing
    except ImportError as exc:  # click or rich missing
        raise SystemExit(
            "the hailuo command needs the [cli] extra: in a checkout, "
            f"python3.11 -m pip install -e '.[cli]' ({exc})"
        ) from None
    cli.main(args=list(argv) if argv is not None else None, prog_name="hailuo")
