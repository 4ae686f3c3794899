"""The fast readers of task results agree with cattrs' detailed hooks on every input."""

from __future__ import annotations

import json
from typing import Any

import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailuo_async._decoding import (
    DecodeError,
    _json_parser,
    _make_converter,
    _objects_only,
    _WireTask,
    _WireTaskResult,
    _WireVideo,
    decode_json,
    decode_task_result,
)


def detailed_converter() -> cattrs.Converter:
    """The project's converter with cattrs' generated hooks only (no fast readers)."""
    converter = _make_converter()
    for cls in (_WireTask, _WireVideo, _WireTaskResult):
        converter.register_structure_hook(
            cls, _objects_only(cattrs.gen.make_dict_structure_fn(cls, converter))
        )
    return converter


FAST = _make_converter()
DETAILED = detailed_converter()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "12", " 3.5 ", "nan", "inf", "x", "TASK_STATUS_SUCCEED"]),
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
results = st.fixed_dictionaries({}, optional={"task": tasks, "videos": videos, "extra": values})


def outcome(converter: cattrs.Converter, payload: dict[str, Any]) -> object:
    """The structured value, or the type and text of the error it raised."""
    try:
        return converter.structure(payload, _WireTaskResult)
    except Exception as exc:  # compared, not handled
        return type(exc), str(exc)


@settings(max_examples=400, deadline=None)
@given(results)
def test_fast_readers_give_what_the_detailed_hooks_give(payload: dict[str, Any]) -> None:
    """Same value, or the same error, for any shape of answer."""
    assert outcome(FAST, payload) == outcome(DETAILED, payload)


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
