"""The batch of ``tests/fixtures/journal-aae7848.sqlite``: what the run that wrote it was given.

Shared by ``tests/fixtures/make_old_journal.py`` (run with release aae7848's code) and
``tests/test_old_journals.py`` (today's code): the same requests, hence the same job keys.
"""

from __future__ import annotations

from hailuo_async import VideoRequest

REQUESTS = [
    ("plain", VideoRequest("a red fox trotting through fresh snow")),
    ("ten seconds", VideoRequest("waves at dusk", duration=10)),
    ("1080P", VideoRequest("a lighthouse in fog", resolution="1080P")),
    ("no expansion", VideoRequest("a paper boat", enable_prompt_expansion=False)),
    ("fast", VideoRequest("a city at night", fast_pretreatment=True)),
    ("image", VideoRequest("the frame comes alive", image="https://example.com/first.png")),
    (
        "frames",
        VideoRequest("a to b", image="https://e.com/a.png", end_image="https://e.com/b.png"),
    ),
    ("twice", VideoRequest("the same job, asked twice")),
    ("twice again", VideoRequest("the same job, asked twice")),
    ("unicode", VideoRequest("日本語の狐 🦊 in the snow")),
    ("keyed", VideoRequest("a job with the caller's own key")),
    ("long", VideoRequest("a slow job", duration=10)),
]
KEYED = {"keyed": "my-own-key"}
