"""Binary classification metrics for sentiq: accuracy, and precision, recall and F1 of one class.

An ``evaluate`` metric module shipped inside the ``training`` package, so that
``evaluate.load("<path to this folder>")`` works without the Hugging Face hub. It computes the
same numbers as the hub's ``accuracy``, ``precision``, ``recall`` and ``f1`` metrics (binary
average, ``zero_division=0``) in one pass, plus the four confusion counts.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy over all examples; precision, recall and F1 of the positive class (``pos_label``,
default 1); and the confusion counts true/false positives/negatives. Where a ratio has a zero
denominator (no predicted or no actual positives) it is 0.0, as scikit-learn's ``zero_division=0``.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels, 0 or 1.
    references (`list` of `int`): true labels, 0 or 1.
    pos_label (`int`, defaults to 1): the class whose precision, recall and F1 are reported.
Returns:
    accuracy, precision, recall, f1 (`float`), true_positives, false_positives, true_negatives,
    false_negatives and support (`int`).
Examples:
    >>> metric = evaluate.load("training/metrics/binary_classification")
    >>> metric.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])["accuracy"]
    0.75
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BinaryClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, pos_label=1):
        predicted = np.asarray(predictions) == pos_label
        actual = np.asarray(references) == pos_label
        tp = int(np.sum(predicted & actual))
        fp = int(np.sum(predicted & ~actual))
        fn = int(np.sum(~predicted & actual))
        tn = int(np.sum(~predicted & ~actual))
        total = tp + fp + fn + tn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "accuracy": (tp + tn) / total if total else 0.0,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "true_positives": tp,
            "false_positives": fp,
            "true_negatives": tn,
            "false_negatives": fn,
            "support": total,
        }
