"""Loading a model folder and batched inference, on the tiny random BERT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentiq.errors import ModelLoadError
from worker.model import SentimentModel, read_model_info


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir, device="cpu", dtype="float32", max_batch_size=4)


def test_predicts_a_label_and_its_probability_in_input_order(model: SentimentModel) -> None:
    texts = ["a wonderful film", "dull<br />and long " * 30, "bad", "great acting, great story"]
    results, stats = model.predict(texts)
    assert len(results) == len(texts)
    for label, score in results:
        assert label in {"positive", "negative"}
        assert 0.5 <= score <= 1.0
    # Same text alone or in a batch gives the same answer: padding must not leak into results.
    alone, _ = model.predict([texts[1]])
    assert alone[0][0] == results[1][0]
    assert alone[0][1] == pytest.approx(results[1][1], abs=1e-4)
    assert stats.rows == 4


def test_batches_are_sorted_and_bounded(model: SentimentModel) -> None:
    lengths = [5, 300, 40, 41, 7, 120, 9, 300, 2]
    batches = model.plan_batches(lengths)
    assert sorted(row for batch in batches for row in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= model.max_batch_size
        padded = max(lengths[row] for row in batch)
        assert len(batch) * padded <= max(model.max_batch_tokens, padded)
    # Longest first: each pass only pads up to rows of similar length.
    firsts = [lengths[batch[0]] for batch in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_token_budget_splits_passes(tiny_model_dir: Path) -> None:
    tight = SentimentModel.load(tiny_model_dir, max_batch_size=64, max_batch_tokens=100)
    batches = tight.plan_batches([50, 50, 50, 10, 10])
    # A pass is padded to its longest row: two 50s fill 100 tokens, then a 50 with a 10, then a 10.
    assert [len(batch) for batch in batches] == [2, 2, 1]


def test_encode_applies_training_max_length_and_cleaning(model: SentimentModel) -> None:
    ids = model.encode("great " * 2000)
    assert len(ids) == model.info.max_length
    assert model.encode("good<br /><br />film") == model.encode("good film")


def test_model_info_comes_from_metrics_json(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").write_text(
        json.dumps({"model_id": "m@20260101T000000Z", "max_length": 64, "truncation": "head_tail"})
    )
    info = read_model_info(folder)
    assert (info.model_id, info.max_length, info.truncation) == ("m@20260101T000000Z", 64, "head_tail")
    assert read_model_info(folder, max_length_override=32).max_length == 32
    loaded = SentimentModel.load(folder)
    ids = loaded.encode("first " + "middle " * 200 + "last")
    assert len(ids) == 64
    tokens = loaded.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[1] == "first" and tokens[-2] == "last"


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a model folder"):
        SentimentModel.load(tmp_path / "nowhere")


def test_folder_without_sentiment_labels_is_refused(tmp_path: Path, tiny_base_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="expected \\['negative', 'positive'\\]"):
        SentimentModel.load(tiny_base_model_dir)


def test_corrupt_metrics_json_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"unreadable metrics\.json"):
        SentimentModel.load(folder)
