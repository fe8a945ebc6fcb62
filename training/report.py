"""What a training run writes next to the weights: ``metrics.json``, the curves PNG and the model card."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"
CARD_FILE = "README.md"


def write_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """``metrics.json``: indented, keys in insertion order, NaN written as null."""
    path = folder / METRICS_FILE
    path.write_text(json.dumps(_json_safe(metrics), indent=2) + "\n", encoding="utf-8")
    return path


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """A model folder's ``metrics.json``, or None when it has none or it is not a JSON object."""
    path = folder / METRICS_FILE
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def plot_curves(folder: Path, metrics: dict[str, Any]) -> Path:
    """Training loss (every log and per epoch), validation loss and validation accuracy against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    history = metrics["history"]
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    steps = metrics["train_loss_log"]
    if steps:
        loss_axes.plot(
            [entry["epoch"] for entry in steps],
            [entry["loss"] for entry in steps],
            color="tab:blue",
            alpha=0.35,
            label="training loss (logged)",
        )
    train_points = [(row["epoch"], row["train_loss"]) for row in history if row["train_loss"] is not None]
    if train_points:
        loss_axes.plot(
            *zip(*train_points, strict=True), "o-", color="tab:blue", label="training loss (epoch mean)"
        )
    loss_axes.plot(
        epochs, [row["validation_loss"] for row in history], "s-", color="tab:orange", label="validation loss"
    )
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy loss")
    loss_axes.set_title("Loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    accuracy_axes.plot(
        epochs,
        [row["validation"].get("accuracy") for row in history],
        "s-",
        color="tab:green",
        label="accuracy",
    )
    accuracy_axes.plot(
        epochs,
        [row["validation"].get("f1") for row in history],
        "^--",
        color="tab:purple",
        label="F1 (positive)",
    )
    scores = [
        value
        for row in history
        for value in (row["validation"].get("accuracy"), row["validation"].get("f1"))
        if value is not None
    ]
    if scores:
        # Matplotlib would zoom into a 0.001-wide band around a single epoch's points.
        accuracy_axes.set_ylim(max(0.0, min(scores) - 0.05), min(1.0, max(scores) + 0.05))
    if len(epochs) == 1:
        accuracy_axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_title("Validation")
    accuracy_axes.legend()
    accuracy_axes.grid(alpha=0.3)
    figure.suptitle(metrics["model_id"])
    figure.tight_layout()
    path = folder / CURVES_FILE
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_model_card(folder: Path, metrics: dict[str, Any]) -> Path:
    """A short ``README.md``: base model, data, metrics, intended use and limitations."""
    data = metrics["data"]
    validation = metrics.get("validation") or {}
    test = metrics.get("test")
    base = metrics["base_model"]
    hyper = metrics["hyperparameters"]
    lines = [
        "---",
        "pipeline_tag: text-classification",
        "language: en",
        "tags: [sentiment-analysis, sentiq]",
        "---",
        "",
        f"# {metrics['model_id']}",
        "",
        "Binary sentiment classifier (labels `negative` = 0, `positive` = 1) for English movie-review-style "
        "text, fine-tuned by `python -m training train` of sentiq and served by sentiq's RQ workers.",
        "",
        "## Base model",
        "",
        f"- {base['description']} (`--base-model {base['spec']}`), plus a newly initialised "
        "classification head.",
        "",
        "## Training",
        "",
        f"- Data: {', '.join(f'`{source}`' for source in data['train_sources'])}",
        f"- {data['train_size']} training reviews, {data['validation_size']} held-out validation reviews "
        f"({hyper['validation_fraction']:.0%} split, seed {metrics['seed']}).",
        f"- {_epochs(hyper['epochs'])}, learning rate {hyper['learning_rate']:g}, "
        f"batch size {hyper['batch_size']}, {metrics['runtime']['dtype']} on "
        f"{metrics['runtime']['device']}, {metrics['wall_time_s'] / 60:.1f} min wall time.",
        f"- Input: `<br />` tags replaced by spaces, at most {metrics['max_length']} tokens "
        f"({_truncation(metrics['truncation'])}). The worker preprocesses the same way (see `metrics.json`).",
        "",
        "## Results",
        "",
        "| split | reviews | accuracy | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- |",
        _row(f"validation (best epoch, {_number(metrics.get('best_epoch'))})", validation),
    ]
    if test is not None:
        lines.append(_row(f"test: `{data['test_source']}`", test))
    lines += [
        "",
        "Precision, recall and F1 are those of the `positive` class. Per-epoch numbers are in `metrics.json` "
        "and `training_curves.png`.",
        "",
        "## Intended use",
        "",
        "Scoring the overall polarity of English reviews and similar opinionated text, in bulk, where an "
        "occasional wrong label is acceptable (dashboards, triage, trend monitoring).",
        "",
        "## Limitations",
        "",
        "- Two classes only: mixed or neutral text is forced into `positive` or `negative`.",
        "- Trained on long-form movie reviews; accuracy drops on other domains and on short sentences, "
        "and sarcasm, negation over long spans and non-English text are frequent failure cases.",
        f"- Text past {metrics['max_length']} tokens is not seen by the model.",
        "- IMDB reviews reflect their authors' and the platform's biases; do not use the scores "
        "for decisions about individual people.",
        "",
    ]
    path = folder / CARD_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _row(name: str, metrics: dict[str, Any]) -> str:
    cells = [
        f"{metrics[key]:.4f}" if key in metrics else "–" for key in ("accuracy", "precision", "recall", "f1")
    ]
    return f"| {name} | {metrics.get('support', '–')} | " + " | ".join(cells) + " |"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _epochs(epochs: float) -> str:
    return f"{epochs:g} epoch" + ("" if epochs == 1 else "s")


def _truncation(truncation: str) -> str:
    if truncation == "head_tail":
        return "longer reviews keep their first quarter and last three quarters of that budget"
    return "longer reviews keep their beginning"


def _json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, inf) as null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
