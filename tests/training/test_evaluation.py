"""training.evaluation: scoring a model folder through the worker's model, its preprocessing and labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentiq.contract import LABELS
from sentiq.errors import ModelLoadError
from tests.conftest import TEST_SAMPLE
from training.evaluation import evaluate_model, load_model, predict
from training.precision import choose_runtime
from worker.model import SentimentModel


def test_recorded_preprocessing_is_applied(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").write_text(
        json.dumps({"model_id": "tiny@20260101T000000Z", "max_length": 40, "truncation": "head_tail"})
    )
    result = evaluate_model(folder, str(TEST_SAMPLE), max_samples=30, batch_size=8)
    assert (result["model_id"], result["max_length"], result["truncation"]) == (
        "tiny@20260101T000000Z",
        40,
        "head_tail",
    )
    assert result["samples"] == result["support"] == 30
    again = evaluate_model(folder, str(TEST_SAMPLE), max_samples=30, batch_size=30)
    # Batch composition does not change predictions.
    assert again["true_positives"] == result["true_positives"]
    assert again["false_positives"] == result["false_positives"]


def relabelled_copy(model_dir: Path, folder: Path, names: tuple[str, str]) -> Path:
    """A copy of ``model_dir`` whose outputs 0 and 1 are called ``names``."""
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(index): name for index, name in enumerate(names)}
    config["label2id"] = {name: index for index, name in enumerate(names)}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_labels_other_than_negative_and_positive_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = relabelled_copy(tiny_model_dir, tmp_path / "model", ("LABEL_0", "LABEL_1"))
    with pytest.raises(ModelLoadError, match=r"model labels are \['LABEL_0', 'LABEL_1'\]"):
        load_model(folder, choose_runtime("fp32"))


def test_swapped_label_order_is_mapped_by_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = relabelled_copy(tiny_model_dir, tmp_path / "model", ("positive", "negative"))
    loaded = load_model(folder, choose_runtime("fp32"))
    assert loaded.id2label == {0: "positive", 1: "negative"}


def test_evaluate_scores_through_the_workers_model(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, choose_runtime("fp32"), "fp32", batch_size=7)
    assert isinstance(model, SentimentModel)
    texts = ["A wonderful film.", "Dull.", "<br />Not bad at all, really.", "x " * 400]
    served, _ = SentimentModel.load(tiny_model_dir).predict(texts)
    assert predict(model, texts) == [LABELS.index(label) for label, _score in served]


def test_a_folder_without_metrics_needs_a_max_length_as_a_worker_does(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").unlink()
    with pytest.raises(ModelLoadError, match="--max-length"):
        evaluate_model(folder, str(TEST_SAMPLE), max_samples=5, precision="fp32")
    result = evaluate_model(folder, str(TEST_SAMPLE), max_samples=5, precision="fp32", max_length=64)
    assert (result["max_length"], result["weights_precision"]) == (64, "fp32")
