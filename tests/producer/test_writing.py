"""producer.writing: predictions as CSV or JSON Lines, to files (gzipped or not) and stdout."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from producer.writing import OUTPUT_COLUMNS, ResultWriter, output_format
from sentiq.contract import Prediction
from sentiq.errors import DataError

PREDICTIONS = [
    Prediction(id="a", label="positive", score=0.75, model="m1"),
    Prediction(id="b", model="m1", error="too long, sadly"),
]


def test_csv_output(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with ResultWriter(path) as writer:
        for prediction in PREDICTIONS:
            writer.write(prediction)
    assert writer.count == 2
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == OUTPUT_COLUMNS
    assert rows == [
        {"id": "a", "label": "positive", "score": "0.75", "model": "m1", "error": ""},
        {"id": "b", "label": "", "score": "", "model": "m1", "error": "too long, sadly"},
    ]


def test_gzipped_jsonl_output(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl.gz"
    with ResultWriter(path) as writer:
        for prediction in PREDICTIONS:
            writer.write(prediction)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert rows == [
        {"id": "a", "label": "positive", "score": 0.75, "model": "m1", "error": None},
        {"id": "b", "label": None, "score": None, "model": "m1", "error": "too long, sadly"},
    ]


def test_stdout_defaults_to_jsonl_and_takes_csv(capsys: pytest.CaptureFixture[str]) -> None:
    with ResultWriter() as writer:
        writer.write(PREDICTIONS[0])
    assert json.loads(capsys.readouterr().out)["id"] == "a"
    with ResultWriter(None, "csv") as writer:
        writer.write(PREDICTIONS[0])
    assert capsys.readouterr().out.splitlines() == ["id,label,score,model,error", "a,positive,0.75,m1,"]


def test_explicit_format_wins_over_extension(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with ResultWriter(path, "jsonl") as writer:
        writer.write(PREDICTIONS[0])
    assert json.loads(path.read_text(encoding="utf-8"))["label"] == "positive"


def test_output_format_by_extension() -> None:
    assert output_format("r.CSV") == "csv"
    assert output_format("r.csv.gz") == "csv"
    assert output_format("r.ndjson") == "jsonl"
    with pytest.raises(DataError, match=r"cannot tell the output format of 'r\.xlsx'"):
        output_format("r.xlsx")


def test_unwritable_path_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot write"):
        ResultWriter(tmp_path / "no" / "such" / "dir.csv")
