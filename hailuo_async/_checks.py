"""The one way configuration is checked: a bad value is an :class:`InvalidRequestError`
naming the field (``retry_policy.max_retries``, ``timeouts.total``, ``limits.rate_window``),
raised where the object is made, before anything is sent.

A config object gives a :class:`Number` as a field's attrs validator; the client checks its
plain arguments with :meth:`Number.check` and :func:`check_type`.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ._base_errors import InvalidRequestError

__all__ = ["Number", "check_type", "field_name"]


@attrs.frozen
class Number:
    """A number in range: at least ``low`` (more than it, with ``above``), at most ``high``
    (less than it, with ``below``); ``whole``: an int; ``optional``: None too."""

    low: float = 0.0
    above: bool = False
    high: float | None = None
    below: bool = False
    whole: bool = False
    optional: bool = False

    def check(self, field: str, value: object) -> None:
        """Refuse ``value`` unless it is in range, naming ``field``."""
        if value is None and self.optional:
            return
        or_none = ", or None" if self.optional else ""
        # A bool is an int to Python, never a count or a duration to a caller.
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            kind = "a whole number" if self.whole else "a number"
            raise InvalidRequestError(field, f"must be {kind}{or_none}, not {value!r}")
        low, high = self.low, self.high
        # Written so that NaN fails every test.
        if not (value > low if self.above else value >= low):
            words = "more than" if self.above else "at least"
            raise InvalidRequestError(field, f"must be {words} {low:g}{or_none}")
        if high is not None and not (value < high if self.below else value <= high):
            words = "less than" if self.below else "at most"
            raise InvalidRequestError(field, f"must be {words} {high:g}{or_none}")

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        """As an attrs validator: the field is named after its class and attribute."""
        self.check(field_name(type(instance), attribute.name), value)


def check_type(field: str, value: object, expected: type) -> None:
    """Refuse ``value`` unless it is an ``expected``."""
    if not isinstance(value, expected):
        raise InvalidRequestError(
            field, f"must be a {expected.__name__}, not {type(value).__name__}"
        )


def field_name(owner: type, attribute: str) -> str:
    """``RetryPolicy``'s ``max_retries`` is ``retry_policy.max_retries`` (its argument's name)."""
    return f"{re.sub(r'(?<!^)(?=[A-Z])', '_', owner.__name__).lower()}.{attribute}"
