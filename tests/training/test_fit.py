"""End to end: ``train`` on a few dozen sample reviews from the tiny BERT, then load and score the folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import TEST_SAMPLE, TRAIN_SAMPLE
from training.cli import main

MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "metrics.json",
    "training_curves.png",
    "README.md",
    "onnx",  # the CPU int8 copy and its check (worker.int8)
}
METRICS_KEYS = {
    "model_id",
    "architecture",
    "contract_version",
    "created_at",
    "max_length",
    "truncation",
    "labels",
    "base_model",
    "preset",
    "seed",
    "hyperparameters",
    "data",
    "best_epoch",
    "validation",
    "test",
    "history",
    "train_loss_log",
    "train_loss",
    "train_runtime_s",
    "train_samples_per_second",
    "wall_time_s",
    "runtime",
    "versions",
    "git_commit",
    "git_dirty",
}


def sample_file(path: Path, source: Path, rows: int) -> Path:
    pd.read_csv(source, keep_default_na=False).head(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Files named by their split, in a folder named after the data set, as ../shared/data/imdb/ holds them.
    folder = tmp_path_factory.mktemp("train-e2e") / "imdb"
    folder.mkdir()
    sample_file(folder / "train.csv", TRAIN_SAMPLE, 64)
    sample_file(folder / "test.csv", TEST_SAMPLE, 40)
    return folder


@pytest.fixture(scope="module")
def trained(workspace: Path, tiny_base_model_dir: Path) -> Path:
    output = workspace / "models" / "sentiq-tiny"
    status = main(train_args(workspace, tiny_base_model_dir, output))
    assert status == 0
    return output


def train_args(workspace: Path, base: Path, output: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--base-model",
        str(base),
        "--data",
        str(workspace / "train.csv"),
        "--test-data",
        str(workspace / "test.csv"),
        "--output-dir",
        str(output),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "64",
        "--truncation",
        "head_tail",
        "--validation-fraction",
        "0.25",
        *extra,
    ]


def read_metrics(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
    return loaded


def test_the_folder_holds_exactly_what_a_worker_needs(trained: Path) -> None:
    assert {path.name for path in trained.iterdir()} == MODEL_FILES
    # Checkpoints and staging lived beside the folder and are gone.
    assert [path.name for path in trained.parent.iterdir()] == [trained.name]
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in trained.iterdir())
    assert (trained / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (trained / "README.md").read_text()
    assert "## Limitations" in card and read_metrics(trained)["model_id"] in card


def test_metrics_json(trained: Path, workspace: Path, tiny_base_model_dir: Path) -> None:
    metrics = read_metrics(trained)
    assert set(metrics) == METRICS_KEYS
    assert re.fullmatch(r"bert-l2-h32-imdb-\d{8}-[0-9a-f]{8}", metrics["model_id"])
    assert (metrics["max_length"], metrics["truncation"]) == (64, "head_tail")
    assert metrics["labels"] == {"negative": 0, "positive": 1}
    assert metrics["data"]["train_size"] == 48
    assert metrics["data"]["validation_size"] == 16
    assert metrics["data"]["test_size"] == 40
    assert metrics["data"]["train_sources"] == ["imdb/train.csv"]
    assert [row["epoch"] for row in metrics["history"]] == [1.0, 2.0]
    for row in metrics["history"]:
        assert row["train_loss"] > 0
        assert row["validation_loss"] > 0
        assert 0 <= row["validation"]["accuracy"] <= 1
        assert row["validation"]["support"] == 16
    assert metrics["best_epoch"] in (1.0, 2.0)
    assert metrics["validation"]["accuracy"] == max(
        row["validation"]["accuracy"] for row in metrics["history"]
    )
    assert metrics["test"]["support"] == 40
    assert len(metrics["train_loss_log"]) >= 2
    assert metrics["versions"]["torch"] and metrics["versions"]["transformers"]
    assert metrics["runtime"]["device"] in ("cpu", "cuda")
    assert metrics["base_model"]["spec"] == tiny_base_model_dir.name


def test_loads_back_with_a_transformers_pipeline(trained: Path) -> None:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(trained))
    results = classifier(["A wonderful, moving film.", "Dreadful.<br />Avoid it."])
    assert {result["label"] for result in results} <= {"positive", "negative"}


def test_evaluate_json_reproduces_the_trainers_test_numbers(
    trained: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["evaluate", "--model", str(trained), "--data", str(workspace / "test.csv"), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    metrics = read_metrics(trained)
    assert result["model_id"] == metrics["model_id"]
    assert (result["max_length"], result["truncation"]) == (64, "head_tail")
    assert result["samples"] == 40
    # Same preprocessing, same model: the same predictions as the Trainer's final test pass.
    for key in ("accuracy", "true_positives", "false_positives", "true_negatives", "false_negatives"):
        assert result[key] == pytest.approx(metrics["test"][key]), key


def test_the_worker_sees_the_same_input(trained: Path, workspace: Path) -> None:
    from training.encoding import ReviewEncoder
    from training.evaluation import load_model, predict
    from training.precision import choose_runtime
    from worker.model import SentimentModel

    texts = pd.read_csv(workspace / "test.csv", keep_default_na=False)["review"].tolist()
    served = SentimentModel.load(trained)
    assert served.info.model_id == read_metrics(trained)["model_id"]
    # Training's preprocessing (the Trainer's encoder) and the worker's give the same token ids.
    trained_with = ReviewEncoder(served.tokenizer, served.info.max_length, served.info.truncation)
    assert [served.encode(text) for text in texts] == trained_with.encode(texts)
    # evaluate scores through the worker's model: the same labels, whatever its batch size.
    labels, _ = served.predict(texts)
    expected = predict(load_model(trained, choose_runtime("fp32"), batch_size=7), texts)
    assert [("negative", "positive").index(label) for label, _ in labels] == expected


def test_if_missing_keeps_the_model_and_plain_train_refuses(
    trained: Path, workspace: Path, tiny_base_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (trained / "metrics.json").read_text()
    assert main(train_args(workspace, tiny_base_model_dir, trained, "--if-missing")) == 0
    assert "already exists" in capsys.readouterr().out
    assert main(train_args(workspace, tiny_base_model_dir, trained)) == 2
    assert "already holds a model; pass --force" in capsys.readouterr().err
    assert (trained / "metrics.json").read_text() == before


def test_force_replaces_the_model(workspace: Path, tiny_base_model_dir: Path) -> None:
    output = workspace / "forced"
    args = train_args(workspace, tiny_base_model_dir, output, "--epochs", "1", "--max-length", "32")
    assert main(args) == 0
    first = read_metrics(output)
    assert main([*args, "--force", "--truncation", "head"]) == 0
    second = read_metrics(output)
    assert {path.name for path in output.iterdir()} == MODEL_FILES
    assert second["truncation"] == "head" and first["truncation"] == "head_tail"
    assert len(second["history"]) == 1


@pytest.mark.slow
def test_a_few_steps_from_the_bundled_model(workspace: Path) -> None:
    output = workspace / "bundled"
    args = [
        "train",
        "--base-model",
        "bundled",
        "--data",
        str(workspace / "train.csv"),
        "--output-dir",
        str(output),
        "--max-train-samples",
        "32",
        "--max-length",
        "48",
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]
    assert main(args) == 0
    metrics = read_metrics(output)
    assert metrics["base_model"]["spec"] == "bundled"
    assert metrics["data"]["train_size"] == 32
    assert metrics["test"] is None
    assert {path.name for path in output.iterdir()} == MODEL_FILES
    assert len(metrics["history"]) == 1
