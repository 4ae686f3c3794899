"""results.html: every job of a batch with its prompt, status, video or error, and full task
id; everything escaped; nothing loaded from elsewhere. Checked as text by html.parser in
every run, and as rendered by a real headless Chromium where one is installed."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_path, open_page
from test_cli import FAST, _clean_env, invoke  # noqa: F401 (_clean_env: an autouse fixture)

from hailuo_async.cli._results import read_results
from hailuo_async.cli._results_page import PAGE_NAME, PageJob, write_results_page

SAMPLE = Path(__file__).resolve().parent.parent / "hailuo_async" / "testing" / "sample.mp4"
HOSTILE_PROMPT = 'a fox </div><script>window.pwned = 1</script><img src=x onerror="pwned=2"> & "'
HOSTILE_REASON = "refused: <iframe src=https://evil.example/></iframe> & 'quotes'"
HOSTILE_TASK = 'task-"><b>bold</b>-0123456789abcdef0123456789abcdef'


class _Parsed(HTMLParser):
    """The elements, their attributes and the text of a page."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.tags if name == tag]


def _records(folder: Path) -> list[dict[str, Any]]:
    """A finished job with a video in ``folder`` and a failed one, both hostile."""
    shutil.copy(SAMPLE, folder / "ok-task.mp4")
    return [
        {
            "line": 1,
            "request": {"prompt": HOSTILE_PROMPT},
            "task_id": "ok-task-0123456789abcdef0123456789abcdef",
            "status": "succeeded",
            "reason": None,
            "file": str(folder / "ok-task.mp4"),
        },
        {
            "line": 2,
            "request": {"prompt": "an owl"},
            "task_id": HOSTILE_TASK,
            "status": "failed",
            "reason": HOSTILE_REASON,
            "file": None,
        },
    ]


def test_the_page_escapes_everything_and_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    """Hostile prompts, errors and ids come out as text; every src is a relative path."""
    jobs = [PageJob(1, HOSTILE_PROMPT), PageJob(2, "an owl"), PageJob(3, "a wren", key="w-3")]
    jobs.append(PageJob(4, "a kite"))
    paid = {"line": 4, "request": {"prompt": "a kite"}, "task_id": "t4", "status": "not_downloaded"}
    records = [*_records(tmp_path), paid]
    page = write_results_page(
        tmp_path / PAGE_NAME, records, title="batch <x>", jobs=jobs
    ).read_text(encoding="utf-8")
    parsed = _Parsed(page)
    names = {tag for tag, _ in parsed.tags}
    assert not names & {"script", "img", "iframe", "link", "object", "embed"}
    sources = [attributes.get("src") for attributes in parsed.all("video")]
    assert sources == ["ok-task.mp4"]  # relative to the page: the folder can move
    hrefs = [value for _, attrs in parsed.tags for key, value in attrs.items() if key == "href"]
    assert hrefs == []
    text = "".join(parsed.text)
    assert HOSTILE_PROMPT in text  # shown as the user wrote it
    assert HOSTILE_REASON in text
    assert HOSTILE_TASK in text  # the whole id, never cut
    assert "not finished" in text  # line 3 has no result yet
    assert "the same command run again fetches it" in text  # line 4: paid, not saved yet
    assert "w-3" in text
    (policy,) = [
        attrs["content"]
        for attrs in parsed.all("meta")
        if attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert policy is not None
    assert "default-src 'none'" in policy


def test_a_batch_writes_the_page_beside_its_results(tmp_path: Path) -> None:
    """`hailuo batch` writes results.html with each line's card; a rerun writes it again."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na heron <at dawn>\n", encoding="utf-8")
    out = tmp_path / "videos"
    arguments = ["batch", str(prompts), "--simulate", "--time-scale", FAST, "--out", str(out)]
    assert invoke(*arguments).exit_code == 0
    page = out / PAGE_NAME
    first = _Parsed(page.read_text(encoding="utf-8"))
    videos = [str(attributes.get("src")) for attributes in first.all("video")]
    records = read_results(out / "results.jsonl")
    assert sorted(videos) == sorted(Path(record["file"]).name for record in records)
    assert all((out / str(video)).is_file() for video in videos)
    text = "".join(first.text)
    assert "a heron <at dawn>" in text
    assert all(record["task_id"] in text for record in records)
    page.unlink()
    assert invoke(*arguments).exit_code == 0  # the rerun (a resume: nothing left to do)
    assert len(_Parsed(page.read_text(encoding="utf-8")).all("video")) == 2


@pytest.mark.anyio
async def test_the_page_renders_and_plays_in_chromium(tmp_path: Path) -> None:
    """In a real headless Chromium: each video loads, nothing hostile runs, ids are whole."""
    if chromium_path() is None:
        pytest.skip(
            "LOUD SKIP: no Chromium on this machine, results.html not rendered"
            " (apt-get install -y chromium to run this test)"
        )
    records = _records(tmp_path)
    jobs = [PageJob(1, HOSTILE_PROMPT), PageJob(2, "an owl"), PageJob(3, "a wren")]
    page = write_results_page(tmp_path / PAGE_NAME, records, title="batch", jobs=jobs)
    async with open_page(page.as_uri()) as browser:
        state = await browser.evaluate(_STATE)
        await browser.screenshot(tmp_path / "results.png")
        said = browser.messages()
    assert state["cards"] == 3
    assert state["scripts"] == 0
    assert state["pwned"] is None  # the hostile prompt's script and handler never ran
    (video,) = state["videos"]
    assert video["error"] is None
    assert video["readyState"] >= 1  # its metadata loaded: the browser can play it
    assert video["duration"] > 0
    assert state["ids"] == [records[0]["task_id"], HOSTILE_TASK]
    assert state["userSelect"] == "all"  # one click selects the whole id
    assert HOSTILE_PROMPT in state["text"]
    assert not [message for message in said if "Content Security Policy" in message], said
    assert (tmp_path / "results.png").stat().st_size > 0


# Waits for each video's metadata (or error), then reports what the page holds.
_STATE = """
(async () => {
  const videos = [...document.querySelectorAll('video')];
  await Promise.all(videos.map(v => v.readyState >= 1 || v.error ? null : new Promise(done => {
    v.addEventListener('loadedmetadata', done, {once: true});
    v.addEventListener('error', done, {once: true});
    setTimeout(done, 20000);
  })));
  const ids = [...document.querySelectorAll('code.id')];
  return {
    cards: document.querySelectorAll('article').length,
    scripts: document.querySelectorAll('script').length,
    pwned: window.pwned === undefined ? null : window.pwned,
    videos: videos.map(v => ({readyState: v.readyState, duration: v.duration,
                              error: v.error ? v.error.code : null})),
    ids: ids.map(code => code.textContent),
    userSelect: ids.length ? getComputedStyle(ids[0]).userSelect : null,
    text: document.body.innerText,
  };
})()
"""


def test_json_of_the_state_script_is_plain() -> None:
    """The expression the browser test evaluates is one JSON-returning function (a sanity check)."""
    assert json.dumps(_STATE).startswith('"\\n(async () =>')
