"""training.history: per-epoch rows from a Trainer log history."""

from __future__ import annotations

import pytest

from training.history import best_row, epoch_history, loss_log, strip_prefix

LOG_HISTORY = [
    {"loss": 0.70, "step": 2, "epoch": 0.5},
    {"loss": 0.60, "step": 4, "epoch": 1.0},
    {"eval_loss": 0.55, "eval_accuracy": 0.70, "eval_f1": 0.6, "step": 4, "epoch": 1.0},
    {"loss": 0.40, "step": 7, "epoch": 1.75},
    {"loss": 0.30, "step": 8, "epoch": 2.0},
    {"eval_loss": 0.50, "eval_accuracy": 0.80, "eval_f1": 0.7, "step": 8, "epoch": 2.0},
    {"loss": 0.20, "step": 12, "epoch": 3.0},
    {"eval_loss": 0.52, "eval_accuracy": 0.80, "eval_f1": 0.75, "step": 12, "epoch": 3.0},
    {"train_runtime": 10.0, "train_loss": 0.45, "step": 12, "epoch": 3.0},
]


def test_one_row_per_evaluation_with_the_epochs_mean_training_loss() -> None:
    rows = epoch_history(LOG_HISTORY)
    assert [row["epoch"] for row in rows] == [1.0, 2.0, 3.0]
    assert rows[0]["train_loss"] == pytest.approx((0.70 * 2 + 0.60 * 2) / 4)
    # Weighted by the steps each log covers: 3 steps at 0.40, 1 at 0.30.
    assert rows[1]["train_loss"] == pytest.approx((0.40 * 3 + 0.30 * 1) / 4)
    assert rows[2]["train_loss"] == pytest.approx(0.20)
    assert rows[1]["validation_loss"] == 0.50
    assert rows[1]["validation"] == {"accuracy": 0.80, "f1": 0.7}


def test_best_row_is_the_first_with_the_top_accuracy() -> None:
    best = best_row(epoch_history(LOG_HISTORY))
    assert best is not None and best["epoch"] == 2.0
    assert best_row([]) is None


def test_loss_log_skips_summaries_and_evaluations() -> None:
    assert [entry["step"] for entry in loss_log(LOG_HISTORY)] == [2, 4, 7, 8, 12]


def test_strip_prefix() -> None:
    assert strip_prefix({"test_accuracy": 0.9, "test_loss": 0.3, "epoch": 2}, "test_") == {
        "accuracy": 0.9,
        "loss": 0.3,
    }
