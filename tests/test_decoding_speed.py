"""The common-shape reading of task results agrees with cattrs' detailed hooks on every input;
the hand-written readers of a URL's expiry read as the standard library would."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hailuo_async._decoding as decoding
from hailuo_async import TaskResult, Video
from hailuo_async._decoding import (
    DecodeError,
    _json_parser,
    _read_common,
    _read_detailed,
    decode_json,
    decode_task_result,
    result_from_json,
    result_to_json,
    url_expiry,
)

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


def outcome(read: Any, payload: dict[str, Any]) -> object:
    """The TaskResult with its videos' expiries, or the type and text of the error raised."""
    try:
        result: TaskResult = read(payload, task_id="t", received_at=RECEIVED)
    except Exception as exc:  # compared, not handled
        return type(exc), str(exc)
    return result, [video.expires_at for video in result.videos]


def detailed(payload: object, *, task_id: str, received_at: datetime) -> TaskResult:
    """The reading through cattrs' generated hooks only."""
    return _read_detailed(payload, task_id, received_at)


@settings(max_examples=500, deadline=None)
@given(results)
def test_common_reading_gives_what_the_detailed_hooks_give(payload: dict[str, Any]) -> None:
    """Same TaskResult and expiries, or the same error, for any shape of answer."""
    assert outcome(decode_task_result, payload) == outcome(detailed, payload)


def test_service_answers_take_the_common_reading() -> None:
    """The fake's and the captured real service's shapes are read without the detailed hooks."""
    task = {"task_id": "t", "task_type": "MINIMAX_HAILUO_02_T2V", "reason": "", "eta": 0.249}
    debug = {"request_info": "", "submit_time_ms": "1796102551204"}
    answers: list[dict[str, Any]] = [
        {
            "task": {**task, "status": "TASK_STATUS_PROCESSING", "progress_percent": 3},
            "videos": [],
            "images": [],
            "audios": [],
            "extra": {"seed": "543415040", "debug_info": debug},
        },
        {
            "task": {**task, "status": "TASK_STATUS_SUCCEED", "eta": 0, "progress_percent": 100},
            "videos": [{"video_url": URLS[3], "video_url_ttl": 36.0, "video_type": "mp4"}],
            "extra": {"seed": "543415040", "debug_info": debug},
        },
        {
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
        },
    ]
    for answer in answers:
        assert _read_common(answer, "t", RECEIVED) == _read_detailed(answer, "t", RECEIVED)


def test_decoding_works_out_each_expiry_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_task_result reads each video's URL once, and expires_at holds the earlier bound."""
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
    result = decode_task_result(answer, task_id="t", received_at=RECEIVED)
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
    result = decode_task_result(answer, task_id="t", received_at=RECEIVED)
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
        decode_task_result(payload, task_id="t")


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


def test_the_decoder_refuses_a_model_whose_fields_it_does_not_know() -> None:
    """Making a model without its __init__ fails loudly when a field was added or is checked."""
    import attrs

    from hailuo_async._decoding import slot_setters

    @attrs.frozen(kw_only=True)
    class Grown:
        url: str
        added: int = 0

    @attrs.frozen(kw_only=True)
    class Checked:
        url: str = attrs.field(validator=attrs.validators.instance_of(str))

    with pytest.raises(TypeError, match="has changed"):
        slot_setters(Grown, ("url",))
    with pytest.raises(TypeError, match="has changed"):
        slot_setters(Checked, ("url",))
    made = slot_setters(Grown, ("url", "added"))
    assert len(made) == 2
