"""Per-epoch training history from ``Trainer.state.log_history``.

The Trainer logs the running training loss every ``logging_steps`` (and, with
:class:`LogAtEpochEnd`, at the end of every epoch) and one evaluation entry per epoch. This module
folds them into one row per epoch: the mean training loss of that epoch, the validation loss and
the validation metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from training.scoring import METRIC_KEYS

EVAL_PREFIX = "eval_"


class LogAtEpochEnd(TrainerCallback):  # type: ignore[misc]
    """Log the training loss at each epoch's end, so every epoch's loss is exactly its own steps'."""

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        control.should_log = True
        return control


def loss_log(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The logged training losses: ``step``, ``epoch``, ``loss`` (mean since the previous log)."""
    return [
        {"step": int(entry["step"]), "epoch": float(entry["epoch"]), "loss": float(entry["loss"])}
        for entry in log_history
        if "loss" in entry and "step" in entry and "epoch" in entry
    ]


def epoch_history(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluation: ``epoch``, ``step``, ``train_loss``, ``validation_loss``, ``validation``.

    ``train_loss`` is the step-weighted mean of the training losses logged since the previous
    evaluation; ``validation`` holds the metrics of :mod:`training.scoring`.
    """
    losses = loss_log(log_history)
    rows: list[dict[str, Any]] = []
    previous_step = 0
    for entry in log_history:
        if "eval_loss" not in entry:
            continue
        step = int(entry["step"])
        weighted = 0.0
        steps = 0
        last_step = previous_step
        for logged in losses:
            if previous_step < logged["step"] <= step:
                span = int(logged["step"]) - last_step
                weighted += logged["loss"] * span
                steps += span
                last_step = int(logged["step"])
        rows.append(
            {
                "epoch": round(float(entry["epoch"]), 4),
                "step": step,
                "train_loss": weighted / steps if steps else None,
                "validation_loss": float(entry["eval_loss"]),
                "validation": {
                    key: entry[EVAL_PREFIX + key] for key in METRIC_KEYS if EVAL_PREFIX + key in entry
                },
            }
        )
        previous_step = step
    return rows


def best_row(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the highest validation accuracy (the first of equals, as the Trainer keeps it)."""
    best: dict[str, Any] | None = None
    for row in history:
        if best is None or row["validation"].get("accuracy", 0.0) > best["validation"].get("accuracy", 0.0):
            best = row
    return best


def strip_prefix(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"test_accuracy": 0.9, "test_loss": 0.3}`` -> ``{"accuracy": 0.9, "loss": 0.3}`` for ``test_``."""
    return {key.removeprefix(prefix): value for key, value in metrics.items() if key.startswith(prefix)}
