"""A Griffe extension for the docs build: the project's docstrings use reST roles
(``:class:`X```, ``:meth:`X.y```) and ``::`` literal blocks; render them as Markdown."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"::\n\n", re.MULTILINE)


def _markdown(text: str) -> str:
    text = _ROLE.sub(_code, text)
    # "Text::" then an indented block is a reST literal block; in Markdown the indented
    # block already is a code block, so only the second colon goes.
    return _LITERAL.sub(":\n\n", text)


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    # reST's "~" shows only the last component of the dotted name.
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class RstToMarkdown(griffe.Extension):
    """Turn reST roles into inline code and ``::`` into ``:`` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the object's docstring once the tree is complete."""
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)
