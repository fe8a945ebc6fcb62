"""producer.reading: input files in every supported format, and clear errors for bad ones."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from producer.reading import InputReview, detect_format, normalize_label, read_reviews
from sentiq.errors import DataError
from tests.conftest import TEST_SAMPLE


def test_csv_with_ids_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(
        'id,review,sentiment\na1,"Great, truly great",positive\n,"multi\nline",NEGATIVE\na3,plain,\n',
        encoding="utf-8",
    )
    assert read_reviews(path) == [
        InputReview(text="Great, truly great", id="a1", label="positive", line=2),
        InputReview(text="multi\nline", id=None, label="negative", line=4),
        InputReview(text="plain", id="a3", label=None, line=5),
    ]


def test_gzipped_csv_sample_reads_with_labels() -> None:
    reviews = read_reviews(TEST_SAMPLE)
    assert len(reviews) == 500
    assert {review.label for review in reviews} == {"positive", "negative"}
    assert all(review.id is None and review.text for review in reviews)


def test_csv_with_bom_and_only_a_review_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffReview\nhello\n".encode())
    assert read_reviews(path) == [InputReview(text="hello", line=2)]


def test_jsonl_with_review_or_text_and_optional_fields(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl.gz"
    lines = [
        {"id": "x", "review": "first", "sentiment": "pos"},
        {"text": "second", "id": 42, "label": 0},
        {"text": "third"},
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    assert read_reviews(path) == [
        InputReview(text="first", id="x", label="positive", line=1),
        InputReview(text="second", id="42", label="negative", line=2),
        InputReview(text="third", line=4),
    ]


def test_plain_text_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "reviews.txt"
    path.write_bytes(b"one review\r\n\n  \nanother, with commas\n")
    assert read_reviews(path) == [
        InputReview(text="one review", line=1),
        InputReview(text="another, with commas", line=4),
    ]


def test_stdin_is_plain_text_unless_a_format_is_given() -> None:
    assert [review.text for review in read_reviews("-", stdin=io.StringIO("a\nb\n"))] == ["a", "b"]
    jsonl = io.StringIO('{"review": "from stdin", "id": "s1"}\n')
    assert read_reviews("-", "jsonl", stdin=jsonl) == [InputReview(text="from stdin", id="s1", line=1)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("x.txt", "text"),
    ],
)
def test_detect_format(name: str, expected: str) -> None:
    assert detect_format(name) == expected


@pytest.mark.parametrize("name", ["reviews.json", "reviews", "reviews.gz", "data.parquet"])
def test_unknown_extensions_ask_for_format(name: str) -> None:
    with pytest.raises(DataError, match="pass --format"):
        detect_format(name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("positive", "positive"),
        (" Neg ", "negative"),
        (1, "positive"),
        ("0", "negative"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_label(value: object, expected: str | None) -> None:
    assert normalize_label(value, "here") == expected


@pytest.mark.parametrize("value", ["meh", 2, True, 0.5])
def test_bad_labels_are_refused(value: object) -> None:
    with pytest.raises(DataError, match="here: label must be positive/negative or 1/0"):
        normalize_label(value, "here")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no_column.csv", "text,id\nhello,1\n", "no 'review' column (columns: text, id)"),
        ("short_row.csv", "id,review\n1\n", "line 2: missing 'review' value"),
        ("bad_label.csv", "review,sentiment\nok,maybe\n", "bad_label.csv line 2: label must be"),
        ("bad.jsonl", '{"review": "ok"}\n{not json\n', "bad.jsonl line 2: not valid JSON"),
        ("list.jsonl", '["review"]\n', "line 1: expected a JSON object, got list"),
        ("no_text.jsonl", '{"id": "a"}\n', "line 1: needs a string 'review' or 'text' field"),
        ("bad_id.jsonl", '{"review": "a", "id": [1]}\n', "line 1: 'id' must be a string or an integer"),
        ("empty.txt", "\n\n", "no reviews in"),
        ("header_only.csv", "review\n", "no reviews in"),
        ("nothing.csv", "", "no reviews in"),
    ],
)
def test_malformed_files_raise_data_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_reviews(path)
    assert message in str(caught.value)


def test_unreadable_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*missing\.csv"):
        read_reviews(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_reviews(latin1)
    not_gzip = tmp_path / "fake.csv.gz"
    not_gzip.write_text("review\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot read .*fake\.csv\.gz"):
        read_reviews(not_gzip)
