"""training.scoring: the shipped evaluate metric module, loaded from its path without the hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from training.scoring import METRIC_KEYS, METRIC_PATH, load_metric, score, trainer_metrics


def test_known_inputs_give_known_numbers() -> None:
    # 3 TP, 1 FP, 2 TN, 2 FN.
    predictions = [1, 1, 1, 1, 0, 0, 0, 0]
    references = [1, 1, 1, 0, 0, 0, 1, 1]
    result = score(predictions, references)
    assert list(result) == list(METRIC_KEYS)
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["precision"] == pytest.approx(3 / 4)
    assert result["recall"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert (
        result["true_positives"],
        result["false_positives"],
        result["true_negatives"],
        result["false_negatives"],
        result["support"],
    ) == (3, 1, 2, 2, 8)


def test_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    references = rng.integers(0, 2, 500).tolist()
    predictions = rng.integers(0, 2, 500).tolist()
    result = score(predictions, references)
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert result["precision"] == pytest.approx(precision_score(references, predictions))
    assert result["recall"] == pytest.approx(recall_score(references, predictions))
    assert result["f1"] == pytest.approx(f1_score(references, predictions))
    tn, fp, fn, tp = confusion_matrix(references, predictions).ravel()
    assert (result["true_negatives"], result["false_positives"]) == (tn, fp)
    assert (result["false_negatives"], result["true_positives"]) == (fn, tp)


def test_no_positive_predictions_give_zero_not_nan() -> None:
    result = score([0, 0, 0], [1, 0, 1])
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["accuracy"] == pytest.approx(1 / 3)


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        score([0, 1], [0, 1, 1])


def test_it_is_a_real_evaluate_module() -> None:
    import evaluate

    metric = load_metric()
    assert isinstance(metric, evaluate.EvaluationModule)
    assert metric.name == "binary_classification"
    assert (METRIC_PATH / "binary_classification.py").is_file()


def test_trainer_metrics_take_logits() -> None:
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [-3.0, 3.0], [1.0, 0.0]])
    prediction = SimpleNamespace(predictions=logits, label_ids=np.array([0, 1, 0, 0]))
    result = trainer_metrics()(prediction)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["false_positives"] == 1


@pytest.mark.parametrize("offline", ["1", pytest.param("0", marks=pytest.mark.slow)])
def test_loads_in_a_fresh_process_with_and_without_hub_offline_mode(tmp_path: Path, offline: str) -> None:
    # A fresh HF_HOME: nothing cached from earlier runs, so the module really is loaded from its path.
    code = "from training.scoring import score; print(score([1, 0, 1, 1], [1, 0, 0, 1])['accuracy'])"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env={"HF_HUB_OFFLINE": offline, "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "0.75"
