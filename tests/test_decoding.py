"""The gateway's task results are read by one reader: any answer gives a result or a DecodeError
naming the field; the hand-written readers of a URL's expiry read as the standard library would."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hailuo_async._decoding as decoding
from hailuo_async import TaskStatus, Video
from hailuo_async._decoding import (
    DecodeError,
    _json_parser,
    decode_json,
    result_from_json,
    result_to_json,
    url_expiry,
)
from hailuo_async.providers._gateway import read_task_result

RECEIVED = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
# Video URLs whose query states an expiry in each of the forms read, and one that does not.
URLS = [
    "https://s.example/v.mp4?X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=a",
    "https://s.example/v.mp4?x-goog-date=20260101T000000Z&x-goog-expires=60",
    "https://s.example/v.mp4?q-sign-time=1767225600%3B1767225660&q-signature=b",
    "https://s.example/v.mp4?expires=1767225700",
    "https://s.example/v.mp4?Expires=12",
    "https://s.example/v.mp4?sig=x",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "t", "12", " 3.5 ", "nan", "inf", "x", "TASK_STATUS_SUCCEED", *URLS]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
tasks = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "task_id": values,
            "status": values,
            "reason": values,
            "eta": values,
            "progress_percent": values,
        },
    ),
)
videos = st.one_of(
    values,
    st.lists(
        st.one_of(
            values,
            st.fixed_dictionaries(
                {}, optional={"video_url": values, "video_url_ttl": values, "video_type": values}
            ),
        ),
        max_size=2,
    ),
)
# Answers as the service sends them, where the common reading is the one that answers.
numbers = st.one_of(
    st.none(),
    st.integers(-100, 10**6),
    st.floats(-100, 1e6),
    st.sampled_from(["0", "3600", " 12.5 ", ""]),
)
common_videos = st.lists(
    st.fixed_dictionaries(
        {"video_url": st.sampled_from(["", *URLS])},
        optional={"video_url_ttl": numbers, "video_type": st.sampled_from([None, "", "mp4"])},
    ),
    max_size=2,
)
common_tasks = st.fixed_dictionaries(
    {"status": st.sampled_from(["TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED", "odd"])},
    optional={
        "task_id": st.sampled_from(["t", "", "other"]),
        "reason": st.sampled_from(["", "nsfw"]),
        "eta": numbers,
        "progress_percent": numbers,
    },
)
results = st.one_of(
    st.fixed_dictionaries({}, optional={"task": tasks, "videos": videos, "extra": values}),
    st.fixed_dictionaries(
        {"task": common_tasks},
        optional={"videos": st.one_of(st.none(), common_videos), "extra": st.none()},
    ),
)


@settings(max_examples=500, deadline=None)
@given(results)
def test_any_answer_reads_as_a_result_or_a_named_error(payload: dict[str, Any]) -> None:
    """Whatever its shape, an answer gives a TaskResult that keeps the library's promises, or
    a DecodeError naming a field ($...): never another exception."""
    try:
        result = read_task_result(payload, task_id="t", received_at=RECEIVED)
    except DecodeError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        assert problem.startswith("$")
        return
    assert result.task_id == "t"
    assert result.eta is None or result.eta >= 0
    assert result.progress_percent is None or 0 <= result.progress_percent <= 100
    assert all(video.url for video in result.videos)
    if result.status is TaskStatus.SUCCEED:
        assert result.videos
        assert result.progress_percent == 100


def test_service_answers_read_as_sent() -> None:
    """The fake's and the captured real service's shapes give the fields they hold."""
    task = {"task_id": "t", "task_type": "MINIMAX_HAILUO_02_T2V", "reason": "", "eta": 0.249}
    debug = {"request_info": "", "submit_time_ms": "1796102551204"}
    running = {
        "task": {**task, "status": "TASK_STATUS_PROCESSING", "progress_percent": 3},
        "videos": [],
        "images": [],
        "audios": [],
        "extra": {"seed": "543415040", "debug_info": debug},
    }
    result = read_task_result(running, task_id="t", received_at=RECEIVED)
    assert (result.status, result.raw_status) == (TaskStatus.PROCESSING, "TASK_STATUS_PROCESSING")
    assert (result.eta, result.progress_percent, result.videos) == (0.249, 3.0, ())
    assert result.extra == running["extra"]
    captured = {
        "task": {**task, "status": "TASK_STATUS_SUCCEED", "eta": 0, "progress_percent": 0},
        "videos": [
            {
                "nsfw_detection_result": None,
                "video_type": "mp4",
                "video_url": URLS[2],
                "video_url_ttl": "0",
            }
        ],
        "images": [],
        "audios": [],
        "extra": {},
    }
    result = read_task_result(captured, task_id="t", received_at=RECEIVED)
    assert result.ok
    assert result.progress_percent == 100  # the real service leaves it at 0
    assert result.videos == (
        Video(url=URLS[2], ttl=None, video_type="mp4", expires_at=url_expiry(URLS[2])),
    )


def test_numbers_and_nulls_are_read_leniently() -> None:
    """Numbers as text, nulls for empty text, numbers for text, and null lists read as sent."""
    answer = {
        "task": {"task_id": 7, "status": "TASK_STATUS_PROCESSING", "reason": None, "eta": " 12.5 "},
        "videos": None,
        "extra": None,
    }
    result = read_task_result(answer, task_id="7", received_at=RECEIVED)
    assert (result.reason, result.eta, result.videos, dict(result.extra)) == ("", 12.5, (), {})
    huge = {"task": {"status": "TASK_STATUS_PROCESSING", "eta": 10**400}}
    with pytest.raises(DecodeError, match=r"\$\.task\.eta"):
        read_task_result(huge, task_id="t")


def test_decoding_works_out_each_expiry_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader reads each video's URL once, and expires_at holds the earlier bound."""
    parsed: list[str] = []
    url_expiry = decoding.url_expiry

    def counting(url: str) -> datetime | None:
        parsed.append(url)
        return url_expiry(url)

    monkeypatch.setattr(decoding, "url_expiry", counting)
    answer = {
        "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
        "videos": [
            {"video_url": URLS[0], "video_url_ttl": 7200},
            {"video_url": URLS[3], "video_url_ttl": 60},
        ],
    }
    result = read_task_result(answer, task_id="t", received_at=RECEIVED)
    assert parsed == [URLS[0], URLS[3]]
    first, second = result.videos
    assert first.expires_at == datetime(2026, 1, 1, 1, tzinfo=timezone.utc)  # the URL's
    assert second.expires_at == datetime(2026, 1, 1, 0, 1, 30, tzinfo=timezone.utc)  # the ttl's
    assert parsed == [URLS[0], URLS[3]]  # reading expires_at parses nothing more


@pytest.mark.parametrize("url", URLS)
def test_a_decoded_video_is_the_video_made_by_hand(url: str) -> None:
    """A decoded Video equals one made with its expiry, and the journal's JSON keeps it."""
    answer = {
        "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
        "videos": [{"video_url": url, "video_url_ttl": 60, "video_type": "mp4"}],
    }
    result = read_task_result(answer, task_id="t", received_at=RECEIVED)
    lived = RECEIVED + timedelta(seconds=60)
    signed = url_expiry(url)
    expected = lived if signed is None or lived < signed else signed
    assert result.videos == (Video(url=url, ttl=60.0, video_type="mp4", expires_at=expected),)
    # The journal's path: a decoded result to JSON and back.
    again = result_from_json(json.loads(json.dumps(result_to_json(result))))
    assert again == result
    assert again.videos[0].expires_at == expected


def test_a_bad_field_is_still_named() -> None:
    """A wrong type deep in an answer is reported with its path, as before."""
    payload = {"task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED", "eta": [1]}}
    with pytest.raises(DecodeError, match=r"\$\.task\.eta"):
        read_task_result(payload, task_id="t")


def test_both_parsers_read_an_answer_alike() -> None:
    """json.loads and the speed extra's parser give the same object; both reject non-JSON."""
    body = json.dumps(
        {"task": {"task_id": "t", "status": "TASK_STATUS_PROCESSING", "eta": 3}, "extra": {}}
    ).encode()
    assert _json_parser()(body) == json.loads(body)
    for broken in (b"{", b"\xff", b"[" * 5000):
        with pytest.raises(DecodeError):
            decode_json(broken)


def test_without_the_speed_extra_json_loads_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """With json.loads as the parser, answers read the same and non-JSON is a DecodeError."""
    import hailuo_async._decoding as decoding

    monkeypatch.setattr(decoding, "_parse_json", json.loads)
    assert decode_json(b'{"task_id": "t"}') == {"task_id": "t"}
    for broken in (b"{", b"\xff", b"[" * 5000):
        with pytest.raises(DecodeError):
            decode_json(broken)


_QUERY_PART = st.sampled_from(
    [
        "X-Amz-Date",
        "x%2Damz%2Ddate",
        "X-Amz-Expires",
        "X-Goog-Date",
        "x-goog-expires",
        "Expires",
        "q-sign-time",
        "q%2Dsign%2Dtime",
        "q-ak",
        "x",
        "",
        "e+x",
        "%45xpires",
        "Q-Sign-Time",
    ]
)
_QUERY_VALUE = st.sampled_from(
    [
        "20260101T000000Z",
        "3600",
        "1764645400",
        "1764559000%3B1764645400",
        "1764559000;1764645400",
        "1764559000%3b1764645400",
        "1764559000%3B%3B1764645400",
        "1764559000%3B+1764645400",
        "1764559000%3%3B1764645400",
        "",
        "a+b",
        "%zz",
        "bad",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_QUERY_PART, st.one_of(st.none(), _QUERY_VALUE)), max_size=8))
def test_expiry_query_scan_reads_as_parse_qsl(pairs: list[tuple[str, str | None]]) -> None:
    """The hand-written scan of a URL's query keeps what parse_qsl would, for the expiry names."""
    from urllib.parse import parse_qsl, urlsplit

    from hailuo_async._decoding import _EXPIRY_PARAMS, _expiry_params

    query = "&".join(name if value is None else f"{name}={value}" for name, value in pairs)
    url = f"https://store.example/v.mp4?{query}#frag"
    expected: dict[str, str] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name.lower() in _EXPIRY_PARAMS:
            expected.setdefault(name.lower(), value)
    assert _expiry_params(url) == expected


# Signing times as stores write them, and spellings strptime also takes or refuses.
_SIGNING_TIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda moment: moment.strftime("%Y%m%dT%H%M%S") + "Z"
    ),
    st.text(alphabet="0123456789TtZz ", min_size=13, max_size=17),
    st.text(min_size=16, max_size=16),
)


@settings(max_examples=500, deadline=None)
@given(_SIGNING_TIMES)
def test_signing_time_reads_as_strptime(text: str) -> None:
    """The integer reading of X-Amz-Date gives strptime's datetime, or fails where it fails."""
    from hailuo_async._decoding import _SIGNED_DATE, _signed_at

    try:
        expected: object = datetime.strptime(text, _SIGNED_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        expected = ValueError
    try:
        got: object = _signed_at(text)
    except ValueError:
        got = ValueError
    assert got == expected
