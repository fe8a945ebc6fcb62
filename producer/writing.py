"""Writing predictions to CSV or JSON Lines, to a file (optionally ``.gz``) or standard output.

Both formats carry the same fields: ``id, label, score, model, error`` (CSV leaves absent values
empty; JSON Lines writes ``null``). Rows are written as predictions arrive and flushed (except into
``.gz`` files, where flushing each row would ruin the compression), so a long wait leaves a usable
partial file if it is interrupted.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path
from typing import Literal, TextIO

from producer.closing import Closing
from producer.files import format_suffix, is_gzipped
from sentiq.contract import Prediction
from sentiq.errors import DataError

OutputFormat = Literal["csv", "jsonl"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("csv", "jsonl")
OUTPUT_COLUMNS: tuple[str, ...] = ("id", "label", "score", "model", "error")

_EXTENSIONS: dict[str, OutputFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def output_format(path: str) -> OutputFormat:
    """The output format of ``path`` by its extension (``.csv``, ``.jsonl``/``.ndjson``, + ``.gz``)."""
    suffix = format_suffix(path)
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise DataError(
        f"cannot tell the output format of {path!r}: use .csv, .jsonl or .ndjson (optionally .gz)"
    )


def prediction_row(prediction: Prediction) -> dict[str, object]:
    """The output fields of one prediction."""
    return {column: getattr(prediction, column) for column in OUTPUT_COLUMNS}


class ResultWriter(Closing):
    """Writes predictions one at a time; a context manager that closes the file (not stdout)."""

    def __init__(self, path: str | Path | None = None, fmt: OutputFormat | None = None) -> None:
        """Open ``path`` (``None`` for stdout), in ``fmt`` or the format of its extension.

        Standard output defaults to JSON Lines.
        """
        if path is None:
            self.format: OutputFormat = fmt or "jsonl"
            self._handle: TextIO = sys.stdout
            self._owns_handle = False
            self._flush_rows = True
        else:
            self.format = fmt or output_format(str(path))
            try:
                self._handle = _open_for_writing(Path(path))
            except OSError as error:
                raise DataError(f"cannot write {path}: {error}") from error
            self._owns_handle = True
            self._flush_rows = not is_gzipped(path)
        self.count = 0
        self._csv: csv.DictWriter[str] | None = None
        if self.format == "csv":
            self._csv = csv.DictWriter(self._handle, fieldnames=OUTPUT_COLUMNS, lineterminator="\n")
            self._csv.writeheader()

    def write(self, prediction: Prediction) -> None:
        """Write one prediction's row."""
        row = prediction_row(prediction)
        if self._csv is not None:
            self._csv.writerow({key: "" if value is None else value for key, value in row.items()})
        else:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self._flush_rows:
            self._handle.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file (standard output is only flushed)."""
        if self._owns_handle:
            self._handle.close()
        else:
            self._handle.flush()


def _open_for_writing(path: Path) -> TextIO:
    if is_gzipped(path):
        return gzip.open(path, "wt", encoding="utf-8", newline="")
    return path.open("w", encoding="utf-8", newline="")
