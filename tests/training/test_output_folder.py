"""training.output_folder: when a run may write, how a finished model is put in place, and what the
folder tells a Hugging Face user (card front matter, model id, no paths of the training machine)."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml  # type: ignore[import-untyped]

from sentiq.errors import ConfigurationError
from tests.conftest import REPO_ROOT, TEST_SAMPLE, TRAIN_SAMPLE
from training.cli import main
from training.output_folder import (
    ExistingModel,
    derive_model_id,
    has_model,
    publish,
    scratch,
    scratch_folder,
    should_train,
    weights_digest,
)


def make_model(folder: Path, marker: str = "old") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text(marker)
    return folder


def test_missing_or_empty_folders_are_trained_into(tmp_path: Path) -> None:
    for mode in ExistingModel:
        assert should_train(tmp_path / "new", mode)
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert should_train(tmp_path / "empty", mode)


def test_an_existing_model_is_refused_kept_or_replaced(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "model")
    assert has_model(folder)
    with pytest.raises(ConfigurationError, match=r"already holds a model; pass --force .* or --if-missing"):
        should_train(folder, ExistingModel.REFUSE)
    assert not should_train(folder, ExistingModel.IF_MISSING)
    assert should_train(folder, ExistingModel.FORCE)


def test_config_without_weights_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert not has_model(tmp_path)


@pytest.mark.parametrize("mode", list(ExistingModel))
def test_other_content_is_never_replaced(tmp_path: Path, mode: ExistingModel) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigurationError, match="not empty and holds no model"):
        should_train(tmp_path, mode)


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("x")
    with pytest.raises(ConfigurationError, match="is a file"):
        should_train(target, ExistingModel.FORCE)


def test_publish_replaces_the_contents_and_keeps_the_folder(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "model")
    (folder / "stale.txt").write_text("from the old model")
    (folder / "sub").mkdir()
    inode = folder.stat().st_ino
    staging = make_model(tmp_path / "staging", marker="new")
    (staging / "model.safetensors").chmod(0o600)
    publish(staging, folder)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_text() == "new"
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_ino == inode  # a mounted volume stays where it is
    assert not any(staging.iterdir())


def test_publish_creates_missing_parents(tmp_path: Path) -> None:
    staging = make_model(tmp_path / "staging", marker="new")
    publish(staging, tmp_path / "a" / "b" / "model")
    assert has_model(tmp_path / "a" / "b" / "model")


def test_scratch_is_a_hidden_sibling_removed_even_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    assert scratch_folder(folder, "checkpoints") == tmp_path / ".model.checkpoints"
    with pytest.raises(RuntimeError), scratch(folder, "checkpoints") as path:
        (path / "checkpoint-1").mkdir()
        raise RuntimeError("training died")
    assert not (tmp_path / ".model.checkpoints").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_base_model_dir: Path) -> Path:
    """A model folder trained by ``python -m training train`` from the tiny BERT (a few seconds)."""
    workspace = tmp_path_factory.mktemp("hf-folder")
    for name, source, rows in (("imdb_train.csv", TRAIN_SAMPLE, 48), ("imdb_test.csv", TEST_SAMPLE, 24)):
        pd.read_csv(source, keep_default_na=False).head(rows).to_csv(workspace / name, index=False)
    output = workspace / "model"
    arguments = [
        "train",
        "--base-model",
        str(tiny_base_model_dir),
        "--data",
        str(workspace / "imdb_train.csv"),
        "--test-data",
        str(workspace / "imdb_test.csv"),
        "--output-dir",
        str(output),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-length",
        "48",
        "--truncation",
        "head_tail",
        "--validation-fraction",
        "0.25",
    ]
    assert main(arguments) == 0
    return output


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    loaded = yaml.safe_load(card.split("---\n", 2)[1])
    assert isinstance(loaded, dict)
    return loaded


def test_card_front_matter_is_what_the_hub_reads(trained: Path, tiny_base_model_dir: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    front = front_matter((trained / "README.md").read_text())
    assert front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-classification"
    assert front["language"] == ["en"]
    assert front["datasets"] == ["stanfordnlp/imdb"]
    assert front["base_model"] == tiny_base_model_dir.name  # a local base: its folder name, not its path
    assert front["license"] == "other"  # the tiny base model's folder states no license
    [entry] = front["model-index"]
    assert entry["name"] == metrics["model_id"]
    splits = {result["dataset"]["split"]: result for result in entry["results"]}
    assert set(splits) == {"validation", "test"}
    test = splits["test"]
    assert test["task"]["type"] == "text-classification"
    assert test["dataset"] == {"name": "imdb_test.csv", "type": "stanfordnlp/imdb", "split": "test"}
    measured = {metric["type"]: metric["value"] for metric in test["metrics"]}
    assert measured["accuracy"] == round(metrics["test"]["accuracy"], 4)
    assert set(measured) == {"accuracy", "f1", "precision", "recall"}
    # huggingface_hub's own parser turns the model-index into one EvalResult per metric.
    from huggingface_hub import ModelCard

    results = ModelCard.load(trained / "README.md").data.eval_results
    assert {(result.dataset_split, result.metric_type) for result in results} >= {
        ("test", "accuracy"),
        ("validation", "accuracy"),
    }


def test_card_says_what_the_model_is_and_how_to_call_it(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    card = (trained / "README.md").read_text()
    parameters = metrics["architecture"]["parameters"]
    assert parameters > 1000
    assert "bert encoder, 2 layers, hidden size 32, 2 attention heads" in card
    assert f"- Parameters: {parameters:,}" in card
    assert "truncation=True" in card and "at most 48 tokens per review, `head_tail` truncation" in card
    assert f"| imdb_test.csv | test | 24 | {metrics['test']['accuracy']:.4f} |" in card


def test_model_id_says_what_the_model_is(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    # A local random BERT: family from model_type, 2 layers, hidden 32, trained on imdb.
    assert re.fullmatch(r"bert-l2-h32-imdb-\d{8}-[0-9a-f]{8}", metrics["model_id"])
    assert metrics["model_id"].endswith(weights_digest(trained)[:8])
    from worker.model import SentimentModel

    assert SentimentModel.load(trained).info.model_id == metrics["model_id"]


def test_no_path_of_the_training_machine_in_the_folder(trained: Path, tiny_base_model_dir: Path) -> None:
    machine_paths = {
        str(trained.parent),
        str(tiny_base_model_dir),
        str(Path(sys.prefix)),
        str(Path(sys.prefix).resolve()),
        str(REPO_ROOT),
    }
    checked = 0
    for path in trained.rglob("*"):
        if path.suffix in (".json", ".md", ".txt", ".onnx"):
            content = path.read_bytes()
            checked += 1
            for machine_path in machine_paths:
                assert machine_path.encode() not in content, f"{path.name} contains {machine_path}"
    assert checked >= 6  # config, tokenizer, metrics, card, and the int8 copy with its check
    assert (trained / "onnx" / "int8.json").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["data"]["train_sources"] == ["imdb_train.csv"]
    assert metrics["data"]["test_source"] == "imdb_test.csv"
    assert metrics["base_model"]["spec"] == tiny_base_model_dir.name


def test_the_folder_loads_with_a_transformers_pipeline(trained: Path) -> None:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(trained))
    long_review = "a truly great film " * 200  # over 512 tokens: needs truncation=True, as the card says
    results = classifier(["A wonderful, moving film.", long_review], truncation=True)
    assert [result["label"] in ("positive", "negative") for result in results] == [True, True]


def test_model_ids_for_known_families(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    minilm = derive_model_id(
        base_names=["bundled", "sentence-transformers/all-MiniLM-L6-v2"],
        architecture={"model_type": "bert", "layers": 6, "hidden_size": 384},
        data_names=["imdb_train_sample.csv.gz", "stanfordnlp/imdb:train"],
        weights_folder=tmp_path,
        when=when,
    )
    assert minilm == "minilm-l6-h384-imdb-20260102-" + weights_digest(tmp_path)[:8]
    tinybert = derive_model_id(
        base_names=["huawei-noah/TinyBERT_General_4L_312D"],
        architecture={"model_type": "bert", "layers": 4, "hidden_size": 312},
        data_names=["imdb", "sst2_train.parquet"],
        weights_folder=tmp_path,
        when=when,
    )
    assert tinybert.startswith("tinybert-l4-h312-imdb-sst2-20260102-")
    split_files = derive_model_id(
        base_names=["bundled"],
        architecture={"model_type": "bert", "layers": 6, "hidden_size": 384},
        data_names=["imdb/train.csv.gz", "train.csv"],
        weights_folder=tmp_path,
        when=when,
    )
    assert split_files.startswith("bert-l6-h384-imdb-data-20260102-")
    with pytest.raises(ConfigurationError, match="no weights file"):
        weights_digest(tmp_path / "empty")
