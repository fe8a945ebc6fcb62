"""training.report: metrics.json, the curves PNG and the model card from one metrics dict."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.report import plot_curves, read_metrics, write_metrics, write_model_card


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
    assert card.startswith("---\npipeline_tag: text-classification")
    assert "# m@20260101T000000Z" in card
    assert "| validation (best epoch, 1) | 300 | 0.8500 |" in card
    assert "| test: `t.csv` | 300 | 0.8300 |" in card
    assert "first quarter and last three quarters" in card
    for section in ("## Base model", "## Training", "## Results", "## Intended use", "## Limitations"):
        assert section in card
