"""Reading reviews from input files: CSV, JSON Lines or plain text, optionally gzipped.

- CSV: a ``review`` column, optional ``id`` and ``sentiment`` columns (a header row is required).
- JSON Lines: one object per line with ``review`` or ``text``, optional ``id`` and ``sentiment``
  (or ``label``).
- Plain text: one review per line; blank lines are skipped.

The format follows the extension (``.csv``, ``.jsonl``/``.ndjson``, ``.txt``, each optionally
``.gz``) unless given; ``-`` reads standard input, as plain text unless a format is given.
Labels may be ``positive``/``negative`` (any case, or ``pos``/``neg``) or ``1``/``0``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from producer.files import format_suffix, is_gzipped
from sentiq.contract import Label
from sentiq.errors import DataError

InputFormat = Literal["csv", "jsonl", "text"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("csv", "jsonl", "text")
STDIN = "-"

_EXTENSIONS: dict[str, InputFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
}
_LABELS: dict[str, Label] = {
    "positive": "positive",
    "pos": "positive",
    "1": "positive",
    "negative": "negative",
    "neg": "negative",
    "0": "negative",
}
# Reviews longer than csv's default field limit (128 KiB) get the contract's clear length error
# on submit rather than csv's own.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class InputReview:
    """One review read from a file: its text, and its id and label when the file has them."""

    text: str
    id: str | None = None
    label: Label | None = None
    #: Line of the file the review ends on (1-based), for error messages.
    line: int = 0


def detect_format(source: str) -> InputFormat:
    """The format of ``source`` by its extension (``-`` is plain text)."""
    if source == STDIN:
        return "text"
    suffix = format_suffix(source)
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise DataError(
        f"cannot tell the format of {source!r} from its extension: use .csv, .jsonl, .ndjson or .txt "
        "(optionally .gz), or pass --format"
    )


def normalize_label(value: object, where: str) -> Label | None:
    """``positive``/``negative`` from a label cell; ``None`` for an empty one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: label must be positive/negative or 1/0, got {value!r}")
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        raise DataError(f"{where}: label must be positive/negative or 1/0, got {value!r}")
    return label


def read_reviews(
    source: str | Path, fmt: InputFormat | None = None, *, stdin: TextIO | None = None
) -> list[InputReview]:
    """All reviews of ``source`` (a path, or ``-`` for ``stdin``), raising DataError on bad input."""
    name = str(source)
    chosen = fmt or detect_format(name)
    try:
        if name == STDIN:
            reviews = list(_parse(stdin if stdin is not None else _utf8_stdin(), chosen, "<stdin>"))
        else:
            with _open_text(Path(name)) as handle:
                reviews = list(_parse(handle, chosen, name))
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {name}: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(f"cannot read {name}: not UTF-8 text ({error.reason})") from error
    except csv.Error as error:
        raise DataError(f"cannot read {name} as CSV: {error}") from error
    if not reviews:
        raise DataError(f"no reviews in {name}")
    return reviews


def _utf8_stdin() -> TextIO:
    # Input files are UTF-8 whatever the locale says (containers often run with a C locale).
    return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")


def _open_text(path: Path) -> TextIO:
    if is_gzipped(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _parse(handle: TextIO, fmt: InputFormat, name: str) -> Iterator[InputReview]:
    if fmt == "csv":
        return _parse_csv(handle, name)
    if fmt == "jsonl":
        return _parse_jsonl(handle, name)
    return _parse_text(handle)


def _parse_csv(handle: TextIO, name: str) -> Iterator[InputReview]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.DictReader(handle)
    if reader.fieldnames is None:
        return
    columns = {column.strip().lower(): column for column in reader.fieldnames if column}
    if "review" not in columns:
        raise DataError(f"{name}: no 'review' column (columns: {', '.join(reader.fieldnames)})")
    review_column, id_column, label_column = columns["review"], columns.get("id"), columns.get("sentiment")
    for row in reader:
        where = f"{name} line {reader.line_num}"
        text = row.get(review_column)
        if text is None:
            raise DataError(f"{where}: missing 'review' value")
        review_id = (row.get(id_column) or "").strip() if id_column else ""
        label = normalize_label(row.get(label_column), where) if label_column else None
        yield InputReview(text=text, id=review_id or None, label=label, line=reader.line_num)


def _parse_jsonl(handle: TextIO, name: str) -> Iterator[InputReview]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        text = record.get("review", record.get("text"))
        if not isinstance(text, str):
            raise DataError(f"{where}: needs a string 'review' or 'text' field")
        yield InputReview(
            text=text,
            id=_json_id(record.get("id"), where),
            label=normalize_label(record.get("sentiment", record.get("label")), where),
            line=number,
        )


def _json_id(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {value!r}")
    return str(value) if str(value).strip() else None


def _parse_text(handle: TextIO) -> Iterator[InputReview]:
    for number, line in enumerate(handle, start=1):
        text = line.rstrip("\r\n")
        if text.strip():
            yield InputReview(text=text, line=number)
