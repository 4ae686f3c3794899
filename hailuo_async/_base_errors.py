"""The two errors the models raise, at the bottom of the import graph.

They belong to the tree drawn in :mod:`hailuo_async._exceptions` (which re-exports them);
they live here because the models raise them while the other errors carry models: keeping
them apart lets every import point one way.
"""

from __future__ import annotations

__all__ = ["HailuoError", "InvalidRequestError"]


class HailuoError(Exception):
    """Base class of every error raised by hailuo_async."""


class InvalidRequestError(HailuoError, ValueError):
    """A request breaks the API's rules; raised before anything is sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
