"""The one check of a task id, shared by the client, the watcher and the webhook parser."""

from __future__ import annotations

import re

from ._exceptions import InvalidRequestError

__all__ = ["MAX_TASK_ID_CHARS", "check_task_id", "is_plain_task_id", "task_id_problem"]

MAX_TASK_ID_CHARS = 256

is_plain_task_id = re.compile(rf"[A-Za-z0-9._~-]{{1,{MAX_TASK_ID_CHARS}}}").fullmatch
"""A match when the string is a task id of the usual kind: valid, and needing no quoting in a
URL's query. One call where :func:`task_id_problem` makes several (ids are checked per poll)."""


def task_id_problem(task_id: object) -> str | None:
    """What is wrong with ``task_id`` as a task id, or None when nothing is."""
    if not isinstance(task_id, str) or not task_id.strip():
        return "must be a non-empty string"
    if len(task_id) > MAX_TASK_ID_CHARS or not task_id.isprintable():
        return f"must be at most {MAX_TASK_ID_CHARS} printable characters"
    return None


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it can name a task; raise :class:`InvalidRequestError` if not."""
    problem = task_id_problem(task_id)
    if problem is not None:
        raise InvalidRequestError("task_id", problem)
    assert isinstance(task_id, str)
    return task_id
