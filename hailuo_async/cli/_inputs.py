"""Batch files and command-line requests: read, validate every line, report with line numbers.

A batch file is JSONL (one request object per line, with an optional ``"key"``), CSV (a
header row naming the same fields, then a request per row; an empty cell leaves its field
out) or plain text (one prompt per line; blank lines and lines starting with ``#`` are
skipped). Every line is checked by building the :class:`VideoRequest` it describes, so the
library's own rules apply, and every problem is collected before anything is sent.

CSV is read by its header, never as one prompt per line: a spreadsheet's header row must
not become a paid job, and its columns say more than a prompt (a key, a duration...).
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from .._decoding import json_type
from .._exceptions import InvalidRequestError
from .._models import VideoRequest
from ._errors import describe

__all__ = [
    "KEY_FIELD",
    "REQUEST_FIELDS",
    "BatchFile",
    "BatchFileError",
    "BatchJob",
    "Problem",
    "image_argument",
    "load_batch",
]

KEY_FIELD = "key"
#: The fields a JSONL line may carry besides ``key``: VideoRequest's own.
REQUEST_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(VideoRequest))
_IMAGE_FIELDS = ("image", "end_image")
_MAX_KEY_CHARS = 512
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_TEXT_SUFFIXES = (".txt", ".text", ".prompts")
_CSV_SUFFIXES = (".csv",)
# CSV cells are text: these fields are read as whole numbers, these as yes/no.
_INTEGER_FIELDS = ("duration",)
_BOOLEAN_FIELDS = ("enable_prompt_expansion", "fast_pretreatment")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

Format = Literal["jsonl", "csv", "text"]


@attrs.frozen
class Problem:
    """One invalid line of a batch file."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class BatchFileError(Exception):
    """The batch file cannot be run: unreadable, empty, or with invalid lines."""

    def __init__(self, path: Path, problems: list[Problem], *, summary: str | None = None) -> None:
        self.path = path
        self.problems = problems
        self.summary = summary or f"{path}: {len(problems)} invalid line(s); nothing was sent"
        super().__init__(self.summary)


@attrs.frozen
class BatchJob:
    """One valid line: where it is, its key (if the file gave one) and its request."""

    line: int
    request: VideoRequest
    source: Mapping[str, Any]
    """The line's fields as written (images as given, not encoded), for results.jsonl."""
    key: str | None = None


@attrs.frozen
class BatchFile:
    """Every job of a valid batch file, in file order."""

    path: Path
    format: Format
    jobs: tuple[BatchJob, ...]


def image_argument(value: str, base: Path) -> str | Path:
    """An image as the library takes it: URLs and data URIs as they are, anything else a path.

    Any other URL (``ftp://...``) is passed on as it is, for the library to refuse by name,
    rather than looked for as a file.
    """
    if value.startswith(("http://", "https://", "data:")) or re.match(
        r"^[A-Za-z][\w+.-]*://", value
    ):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_batch(path: Path) -> BatchFile:
    """Read and validate the whole file; raise BatchFileError listing every problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BatchFileError(path, [], summary=f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise BatchFileError(
            path, [], summary=f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    except OSError as exc:
        raise BatchFileError(path, [], summary=f"{path}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    kind = _detect_format(path, lines)
    if kind == "jsonl":
        jobs, problems = _parse_jsonl(lines, base=path.parent)
    elif kind == "csv":
        jobs, problems = _parse_csv(text, base=path.parent)
    else:
        jobs, problems = _parse_text(lines)
    if problems:
        raise BatchFileError(path, problems)
    if not jobs:
        raise BatchFileError(path, [], summary=f"{path}: holds no jobs")
    return BatchFile(path=path, format=kind, jobs=tuple(jobs))


def _detect_format(path: Path, lines: list[str]) -> Format:
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _TEXT_SUFFIXES:
        return "text"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return "jsonl" if stripped.startswith("{") else "text"
    return "text"


def _parse_text(lines: list[str]) -> tuple[list[BatchJob], list[Problem]]:
    jobs: list[BatchJob] = []
    problems: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        prompt = line.strip()
        if not prompt or prompt.startswith("#"):
            continue
        try:
            request = VideoRequest(prompt=prompt)
        except InvalidRequestError as exc:
            problems.append(Problem(number, describe(exc)))
            continue
        jobs.append(BatchJob(line=number, request=request, source={"prompt": prompt}))
    return jobs, problems


class _Collected:
    """The jobs read so far and the problems found: a key used twice is one."""

    def __init__(self) -> None:
        self.jobs: list[BatchJob] = []
        self.problems: list[Problem] = []
        self._keys: dict[str, int] = {}

    def add(self, number: int, make: Callable[[], BatchJob]) -> None:
        """The job ``make()`` reads from line ``number``, or the problem it raises."""
        try:
            job = make()
        except _LineError as exc:
            self.problems.append(Problem(number, str(exc)))
            return
        if job.key is not None:
            first = self._keys.setdefault(job.key, number)
            if first != number:
                self.problems.append(
                    Problem(number, f"key {job.key!r} is already used on line {first}")
                )
                return
        self.jobs.append(job)


def _parse_jsonl(lines: list[str], *, base: Path) -> tuple[list[BatchJob], list[Problem]]:
    found = _Collected()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            found.add(number, functools.partial(_parse_jsonl_line, number, line, base=base))
    return found.jobs, found.problems


def _parse_csv(text: str, *, base: Path) -> tuple[list[BatchJob], list[Problem]]:
    found = _Collected()
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="")
    try:
        header = list(reader.fieldnames or [])
        columns = [name for name in header if name not in (*REQUEST_FIELDS, KEY_FIELD)]
        if "prompt" not in header or columns:
            wrong = "; ".join(_unknown_field(name) for name in columns)
            return [], [Problem(1, _csv_header_problem(header, wrong))]
        for row in reader:
            if any(value for value in row.values() if isinstance(value, str)):  # not blank
                number = reader.line_num
                found.add(number, functools.partial(_csv_job, number, row, base))
    except csv.Error as exc:
        found.problems.append(Problem(reader.line_num, f"not valid CSV ({exc})"))
    return found.jobs, found.problems


def _csv_job(number: int, row: dict[str, Any], base: Path) -> BatchJob:
    return _job_from_fields(number, _csv_fields(row), base=base)


def _csv_header_problem(header: list[str], wrong: str) -> str:
    if "prompt" not in header:
        found = ", ".join(repr(name) for name in header[:5])
        return (
            "a CSV file starts with a header row naming its columns, 'prompt' among them"
            f" (and any of {', '.join((*REQUEST_FIELDS, KEY_FIELD))}); this one has {found}"
        )
    return f"header: {wrong}"


def _csv_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as a request's fields: empty cells left out, numbers and yes/no read."""
    if "" in row:
        raise _LineError(f"{len(row[''])} cell(s) more than the header names")
    fields: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        if name in _INTEGER_FIELDS:
            try:
                fields[name] = int(value)
            except ValueError:
                raise _LineError(f"{name}: must be a whole number, not {value!r}") from None
        elif name in _BOOLEAN_FIELDS:
            if value.strip().lower() not in _BOOLEANS:
                raise _LineError(f"{name}: must be true or false, not {value!r}")
            fields[name] = _BOOLEANS[value.strip().lower()]
        else:
            fields[name] = value
    return fields


class _LineError(Exception):
    pass


def _parse_jsonl_line(number: int, line: str, *, base: Path) -> BatchJob:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _LineError("not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise _LineError(f"expected a JSON object, got {json_type(data)}")
    return _job_from_fields(number, data, base=base)


def _job_from_fields(number: int, data: dict[str, Any], *, base: Path) -> BatchJob:
    """The job a line's fields describe (a JSONL object, or a CSV row)."""
    fields = dict(data)
    key = fields.pop(KEY_FIELD, None)
    if key is not None:
        key = _check_key(key)
    unknown = [name for name in fields if name not in REQUEST_FIELDS]
    if unknown:
        raise _LineError("; ".join(_unknown_field(name) for name in unknown))
    if "prompt" not in fields:
        raise _LineError("missing field 'prompt'")
    arguments: dict[str, Any] = dict(fields)
    for name in _IMAGE_FIELDS:
        value = arguments.get(name)
        if isinstance(value, str):
            arguments[name] = image_argument(value, base)
    try:
        request = VideoRequest(**arguments)
    except InvalidRequestError as exc:
        raise _LineError(describe(exc)) from None
    return BatchJob(line=number, request=request, source=data, key=key)


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise _LineError(f"key: must be a non-empty string, not {key!r}")
    if len(key) > _MAX_KEY_CHARS or not key.isprintable():
        raise _LineError(f"key: must be at most {_MAX_KEY_CHARS} printable characters")
    return key


def _unknown_field(name: str) -> str:
    message = f"unknown field {name!r}"
    close = difflib.get_close_matches(name, (*REQUEST_FIELDS, KEY_FIELD), n=1)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message} (allowed: {', '.join((*REQUEST_FIELDS, KEY_FIELD))})"
