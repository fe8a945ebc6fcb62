"""training.data: every supported layout and format, and one clear DataError per kind of bad input."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sentiq.errors import DataError
from tests.conftest import TEST_SAMPLE, TRAIN_SAMPLE
from training.data import (
    DEFAULT_TRAIN_DATA,
    LABEL_NAMES,
    label_counts,
    load_labelled,
    load_sources,
    looks_like_hub_name,
    split_validation,
    subsample,
)

ROWS = [
    {"review": "A moving film.<br /><br />Great cast.", "sentiment": "positive"},
    {"review": "Dull and far too long.", "sentiment": "negative"},
    {"review": "NA", "sentiment": "Positive "},
]


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_imdb_csv_becomes_text_and_label() -> None:
    dataset = load_labelled(str(TEST_SAMPLE))
    assert dataset.column_names == ["text", "label"]
    assert dataset.features["label"].names == list(LABEL_NAMES)
    assert len(dataset) == 500
    assert label_counts(dataset) == {"negative": 250, "positive": 250}
    raw = pd.read_csv(TEST_SAMPLE, keep_default_na=False)
    # Text is kept verbatim (cleaning happens at tokenization), labels map negative:0 positive:1.
    assert dataset[0]["text"] == raw["review"][0]
    assert dataset["label"][:20] == [LABEL_NAMES.index(s) for s in raw["sentiment"][:20]]


def test_the_default_training_data_is_the_shipped_sample() -> None:
    assert TRAIN_SAMPLE.resolve() == DEFAULT_TRAIN_DATA
    assert len(load_labelled(str(DEFAULT_TRAIN_DATA))) == 3000


def test_labels_are_case_and_space_insensitive_and_na_stays_text(tmp_path: Path) -> None:
    dataset = load_labelled(str(write_csv(tmp_path / "r.csv", pd.DataFrame(ROWS))))
    assert dataset["label"] == [1, 0, 1]
    assert dataset["text"][2] == "NA"  # not turned into a missing value


def test_sst2_style_sentence_and_integer_label(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"sentence": ["it 's a charming journey . ", "bleak and desperate "], "label": [1, 0]}
    )
    path = tmp_path / "dev.csv.gz"
    frame.to_csv(path, index=False)
    dataset = load_labelled(str(path))
    assert dataset["text"] == ["it 's a charming journey . ", "bleak and desperate "]
    assert dataset["label"] == [1, 0]


def test_jsonl_and_gzipped_jsonl(tmp_path: Path) -> None:
    lines = "".join(json.dumps(row) + "\n" for row in ROWS)
    plain = tmp_path / "reviews.jsonl"
    plain.write_text(lines, encoding="utf-8")
    zipped = tmp_path / "reviews.jsonl.gz"
    zipped.write_bytes(gzip.compress(lines.encode()))
    for path in (plain, zipped):
        dataset = load_labelled(str(path))
        assert dataset["label"] == [1, 0, 1]
        assert dataset["text"][0] == ROWS[0]["review"]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "reviews.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    assert load_labelled(str(path))["label"] == [1, 0, 1]


def test_a_folder_loads_its_data_files_in_name_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "b.csv", pd.DataFrame(ROWS[:1]))
    pd.DataFrame(ROWS[1:]).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "notes.txt").write_text("not data")
    loaded = load_sources([str(tmp_path)])
    assert loaded.sources == [str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")]
    assert loaded.dataset["label"] == [0, 1, 1]


def test_several_sources_are_concatenated(tmp_path: Path) -> None:
    first = write_csv(tmp_path / "1.csv", pd.DataFrame(ROWS[:2]))
    second = write_csv(tmp_path / "2.csv", pd.DataFrame(ROWS[2:]))
    assert len(load_sources([str(first), str(second)]).dataset) == 3


def test_missing_text_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", pd.DataFrame({"body": ["x"], "sentiment": ["positive"]}))
    with pytest.raises(
        DataError, match=r"r\.csv: missing text column.*'review'.*columns found: 'body', 'sentiment'"
    ):
        load_labelled(str(path))


def test_missing_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", pd.DataFrame({"review": ["x"], "stars": [5]}))
    with pytest.raises(DataError, match=r"r\.csv: missing label column.*'sentiment'"):
        load_labelled(str(path))


def test_unknown_labels_are_listed_with_their_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"review": ["a", "b", "c"], "sentiment": ["positive", "neutral", "2"]})
    path = write_csv(tmp_path / "r.csv", frame)
    with pytest.raises(
        DataError,
        match=r"r\.csv: unknown label\(s\) in column 'sentiment': 'neutral' \(row 2\), '2' \(row 3\)",
    ):
        load_labelled(str(path))


def test_integer_labels_other_than_0_and_1(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", pd.DataFrame({"sentence": ["a", "b"], "label": [1, 4]}))
    with pytest.raises(DataError, match=r"unknown label.*4 \(row 2\)"):
        load_labelled(str(path))


def test_empty_review_text(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "r.csv", pd.DataFrame({"review": ["fine", "  "], "sentiment": ["positive"] * 2})
    )
    with pytest.raises(DataError, match=r"r\.csv: empty or missing text in column 'review' at row\(s\) 2"):
        load_labelled(str(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        load_labelled(str(path))


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("review,sentiment\n")
    with pytest.raises(DataError, match=r"header\.csv: file has no rows"):
        load_labelled(str(path))


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=r"broken\.csv\.gz: cannot read as CSV: .*gzip"):
        load_labelled(str(path))


def test_corrupt_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"review": "x", ')
    with pytest.raises(DataError, match=r"broken\.jsonl: cannot read as JSON"):
        load_labelled(str(path))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read as PARQUET"):
        load_labelled(str(path))


def test_unreadable_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "locked.csv", pd.DataFrame(ROWS))
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("this user reads mode-000 files anyway (root)")
    with pytest.raises(DataError, match=r"locked\.csv: cannot read"):
        load_labelled(str(path))


def test_file_in_another_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("review,sentiment\nna\xefve and d\xe9j\xe0 vu,positive\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: cannot read as CSV: .*(UTF8|UnicodeDecodeError)"):
        load_labelled(str(path))


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_labelled(str(tmp_path / "nope.csv"))
    text_file = tmp_path / "reviews.txt"
    text_file.write_text("hello")
    with pytest.raises(DataError, match=r"reviews\.txt: unsupported file type \(expected \.csv"):
        load_labelled(str(text_file))


def test_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("no data here")
    with pytest.raises(DataError, match="folder holds no data files"):
        load_sources([str(tmp_path)])


def test_hub_names_are_told_apart_from_paths(tmp_path: Path) -> None:
    assert looks_like_hub_name("imdb")
    assert looks_like_hub_name("stanfordnlp/imdb")
    assert looks_like_hub_name("imdb:test")
    assert not looks_like_hub_name("data/train.csv")
    assert not looks_like_hub_name("./imdb")
    assert not looks_like_hub_name(str(tmp_path))


def test_unreachable_hub_dataset_says_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode makes datasets fail at once instead of retrying the network.
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        DataError,
        match=r"imdb: not a local file.*Hugging Face hub dataset.*pass a local CSV/JSONL/Parquet file",
    ):
        load_labelled("imdb")


def test_validation_split_is_seeded_and_stratified() -> None:
    dataset = load_labelled(str(TRAIN_SAMPLE)).select(range(400))
    train, validation = split_validation(dataset, 0.1, seed=7)
    again_train, again_validation = split_validation(dataset, 0.1, seed=7)
    assert (len(train), len(validation)) == (360, 40)
    assert validation["text"] == again_validation["text"]
    assert train["text"] == again_train["text"]
    assert not set(train["text"]) & set(validation["text"])
    counts = label_counts(dataset)
    expected_positive = 40 * counts["positive"] / len(dataset)
    assert abs(label_counts(validation)["positive"] - expected_positive) <= 1


def test_split_of_a_tiny_or_one_class_dataset_still_works() -> None:
    dataset = load_labelled(str(TRAIN_SAMPLE)).select(range(3))
    train, validation = split_validation(dataset, 0.1, seed=1)
    assert len(train) + len(validation) == 3
    assert len(validation) >= 1
    with pytest.raises(DataError, match="at least 2 labelled rows"):
        split_validation(dataset.select(range(1)), 0.1, seed=1)


def test_subsample_is_seeded_and_bounded() -> None:
    dataset = load_labelled(str(TEST_SAMPLE))
    assert subsample(dataset, None, 1) is dataset
    assert subsample(dataset, 10_000, 1) is dataset
    first = subsample(dataset, 50, seed=3)
    assert len(first) == 50
    assert first["text"] == subsample(dataset, 50, seed=3)["text"]
    assert first["text"] != subsample(dataset, 50, seed=4)["text"]
