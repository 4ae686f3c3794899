"""results.html: a batch's jobs as a page to look at, beside results.jsonl.

One card per job of the batch file: its prompt, its status, the video (a ``<video>`` with a
path relative to the page, so the folder can be moved or served as it is) or the error,
and the full task id, selected whole by one click. Written whole (atomically) each time
results.jsonl is compacted, at the end of every run and resume.

Prompts, errors, keys and paths come from the user's file and from the service: every one
is escaped. The page loads nothing from elsewhere: no script, no font, no stylesheet, and
a Content-Security-Policy that forbids any, should a value ever slip through.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

__all__ = ["PAGE_NAME", "PageJob", "write_results_page"]

PAGE_NAME = "results.html"

# Media from the page's own folder only; inline styles; nothing else at all.
_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; media-src 'self' file:; img-src 'self' data:"
)
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f5f5f4; color: #1c1917; }
header { padding: 16px 24px; background: #fff; border-bottom: 1px solid #d6d3d1; }
h1 { font-size: 18px; margin: 0 0 4px; }
.counts span { margin-right: 16px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
       gap: 16px; padding: 16px 24px; }
article { background: #fff; border: 1px solid #d6d3d1; border-radius: 8px; padding: 12px;
          overflow-wrap: anywhere; }
article.failed { border-color: #dc2626; }
article.unfinished { border-style: dashed; }
article.not_downloaded { border-color: #ca8a04; }
.line { color: #78716c; font-size: 13px; }
.status { font-weight: 600; font-size: 13px; text-transform: uppercase; }
.succeeded .status { color: #15803d; } .failed .status { color: #dc2626; }
.unfinished .status, .not_downloaded .status { color: #a16207; }
.prompt { margin: 6px 0 8px; white-space: pre-wrap; }
video { width: 100%; border-radius: 4px; background: #000; }
.error { color: #b91c1c; white-space: pre-wrap; margin: 6px 0; }
code { font: 12px/1.4 ui-monospace, monospace; background: #f5f5f4; padding: 1px 4px; }
code.id { user-select: all; cursor: copy; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 8px 0 0;
     font-size: 13px; }
dt { color: #78716c; }
dd { margin: 0; }
"""


@attrs.frozen
class PageJob:
    """A job of the batch file, for the page: its line, prompt and key (if the file gave one)."""

    line: int
    prompt: str
    key: str | None = None


def write_results_page(
    path: Path,
    records: Iterable[Mapping[str, Any]],
    *,
    title: str,
    jobs: Sequence[PageJob] = (),
) -> Path:
    """Write the page for ``records`` (results.jsonl's, latest per job) to ``path``.

    ``jobs`` are the batch file's: those without a record (the same line and prompt) are
    shown as not finished. Each video's path is made relative to the page's folder.
    Returns ``path``.
    """
    folder = path.parent
    by_job: dict[tuple[object, object], Mapping[str, Any]] = {}
    for record in records:
        by_job[(record.get("line"), _prompt(record))] = record
    cards: list[str] = []
    states: list[str | None] = []  # None: not finished
    for job in jobs:
        found = by_job.pop((job.line, job.prompt), None)
        cards.append(_unfinished(job) if found is None else _card(found, folder, job.key))
        states.append(None if found is None else _status(found))
    # Records of lines no longer in the file (an earlier version of it): shown too, last.
    for record in sorted(by_job.values(), key=lambda record: _number(record.get("line"))):
        cards.append(_card(record, folder, None))
        states.append(_status(record))
    counts = [
        ("succeeded", states.count("succeeded")),
        ("failed", states.count("failed")),
        ("not downloaded", states.count("not_downloaded")),
        ("not finished", states.count(None)),
    ]
    page = _PAGE.format(
        policy=html.escape(_POLICY),
        style=_STYLE,
        title=_text(title),
        counts="".join(f"<span>{name}: <b>{number}</b></span>" for name, number in counts),
        written=_text(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        cards="\n".join(cards),
    )
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, path)
    return path


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<div class="counts">{counts}</div>
<div class="line">written {written}; a click on a task id selects it whole, to copy</div>
</header>
<main>
{cards}
</main>
</body>
</html>
"""


def _card(record: Mapping[str, Any], folder: Path, key: str | None) -> str:
    status = _status(record)
    prompt = _prompt(record)
    parts = [
        f'<article class="{status}">',
        f'<div class="line">line {_text(record.get("line"))}</div>',
        f'<div class="status">{_text(status.replace("_", " "))}</div>',
        f'<div class="prompt">{_text(prompt if prompt is not None else "")}</div>',
    ]
    if status == "succeeded":
        parts.append(_video(record.get("file"), folder))
    elif status == "not_downloaded":
        parts.append(
            '<div class="line">finished (and paid for), its video not saved yet: the same'
            " command run again fetches it</div>"
        )
    else:
        parts.append(f'<div class="error">{_text(record.get("reason") or "failed")}</div>')
    details = [("task", _task_id(record.get("task_id")))]
    if key is not None:
        details.append(("key", f"<code>{_text(key)}</code>"))
    if record.get("finished_at"):
        details.append(("ended", _text(record.get("finished_at"))))
    if record.get("simulated"):
        details.append(("service", "simulated"))
    parts.append(_details(details))
    parts.append("</article>")
    return "\n".join(parts)


def _unfinished(job: PageJob) -> str:
    parts = [
        '<article class="unfinished">',
        f'<div class="line">line {job.line}</div>',
        '<div class="status">not finished</div>',
        f'<div class="prompt">{_text(job.prompt)}</div>',
    ]
    if job.key is not None:
        parts.append(_details([("key", f"<code>{_text(job.key)}</code>")]))
    parts.append("</article>")
    return "\n".join(parts)


def _video(file: object, folder: Path) -> str:
    """A ``<video>`` of the job's file, by a path relative to the page; a note if there is none."""
    if not isinstance(file, str) or not file:
        return '<div class="error">finished, but its video was not downloaded</div>'
    video = Path(file)
    if not video.is_absolute() and not video.exists():
        # A path relative to where an earlier run was started: the video is in the folder.
        video = folder / video.name
    try:
        relative = Path(os.path.relpath(video.resolve(), folder.resolve()))
    except ValueError:  # another drive (Windows): no relative path
        relative = video.resolve()
    source = quote(relative.as_posix())
    missing = "" if video.exists() else '<div class="error">the video file is missing</div>'
    return (
        f'<video controls preload="metadata" src="{_text(source)}"></video>'
        f'<div class="line"><code>{_text(relative.as_posix())}</code></div>{missing}'
    )


def _task_id(task_id: object) -> str:
    if not task_id:
        return "not submitted"
    return f'<code class="id" title="click to select the whole id">{_text(task_id)}</code>'


def _details(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<dt>{_text(name)}</dt><dd>{value}</dd>" for name, value in rows)
    return f"<dl>{cells}</dl>"


def _status(record: Mapping[str, Any]) -> str:
    """The card's status: results.jsonl's ``succeeded`` or ``not_downloaded``, else failed."""
    status = record.get("status")
    return status if status in ("succeeded", "not_downloaded") else "failed"


def _prompt(record: Mapping[str, Any]) -> object:
    request = record.get("request")
    return request.get("prompt") if isinstance(request, Mapping) else None


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0


def _text(value: object) -> str:
    """Any value as HTML text or an attribute value: everything that could be markup escaped."""
    return html.escape(str(value), quote=True)
