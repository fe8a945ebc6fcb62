"""Classification metrics through Hugging Face ``evaluate``, offline.

``evaluate.load("accuracy")`` fetches its script from the hub, which is not always reachable (and
retries for about half a minute when it is not). sentiq ships its metric as a local ``evaluate``
module instead, ``training/metrics/binary_classification/binary_classification.py``, which
``evaluate.load`` imports from its path with or without the hub (``HF_HUB_OFFLINE`` set or not).
It reports accuracy, precision / recall / F1 of the positive class and the confusion counts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "binary_classification"
#: The keys :func:`score` returns, in reporting order.
METRIC_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "true_positives",
    "false_positives",
    "true_negatives",
    "false_negatives",
    "support",
)
POSITIVE = 1


@functools.cache
def load_metric() -> Any:
    """The shipped ``binary_classification`` metric, loaded once per process by ``evaluate.load``."""
    import evaluate

    # keep_in_memory: no cache files or lock files under ~/.cache for a one-shot computation.
    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


def score(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float | int]:
    """Metrics of predicted against true labels (0 = negative, 1 = positive)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    result = load_metric().compute(
        predictions=[int(p) for p in predictions], references=[int(r) for r in references], pos_label=POSITIVE
    )
    return {key: result[key] for key in METRIC_KEYS}


def trainer_metrics() -> Callable[[Any], dict[str, float | int]]:
    """A ``compute_metrics`` for ``transformers.Trainer``: logits and labels in, :func:`score` out."""

    def compute(prediction: Any) -> dict[str, float | int]:
        logits = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        return score(np.argmax(logits, axis=-1).tolist(), np.asarray(prediction.label_ids).tolist())

    return compute
