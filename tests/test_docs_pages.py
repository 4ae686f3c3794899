"""The documentation pages: code that fits the page, every client option documented, and
no page pointing at a private module."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

from hailuo_async import HailuoClient

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
# What a code block shows without scrolling in the content column at a 1280 px window.
VISIBLE_CODE_CHARS = 76
# A dotted name with a private part: hailuo_async._models, hailuo_async.testing._server ...
PRIVATE_MODULE = re.compile(r"\bhailuo_async(\.\w+)*\._[a-z]\w*")


def test_quick_start_code_fits_the_page() -> None:
    """No quick-start code line is wider than the page shows at 1280 px."""
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    for block in FENCE.finditer(text):
        for line in textwrap.dedent(block["body"]).splitlines():
            assert len(line) <= VISIBLE_CODE_CHARS, line


def test_every_client_option_is_documented() -> None:
    """Each HailuoClient parameter has its entry in the client reference's list of options."""
    text = (DOCS / "reference" / "client.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^`(\w+)`, default ", text, flags=re.M))
    parameters = set(inspect.signature(HailuoClient).parameters)
    assert parameters == entries


def test_no_page_names_a_private_module() -> None:
    """Pages render and link public names only (hailuo_async.X, never hailuo_async._x)."""
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        found = PRIVATE_MODULE.search(text)
        assert found is None, f"{page.relative_to(DOCS)}: {found.group()}"
