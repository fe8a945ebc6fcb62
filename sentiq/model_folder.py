"""What a sentiq model folder is: the one definition training writes and workers, demo and CLIs read.

A model folder is a Hugging Face sequence-classification folder:

- ``config.json`` whose ``id2label`` / ``label2id`` map exactly the labels of
  :data:`sentiq.contract.LABELS`, in that order (:func:`id2label`, :func:`label2id`);
- weights (one of :data:`WEIGHT_FILES`; training writes ``model.safetensors``);
- tokenizer files (one of :data:`TOKENIZER_FILES` at least);
- ``metrics.json``, of which a worker reads four keys (:class:`ModelInfo`): ``model_id`` (the
  ``model`` field of every prediction), ``max_length`` (token truncation), ``truncation``
  (``head`` or ``head_tail``), so that serving cuts reviews exactly as training did, and
  ``contract_version`` (the wire contract the folder was made for; absent means 1). A worker
  refuses a folder made for a contract it does not speak. Training records much more there
  (per-epoch metrics, data, versions); nothing else is read back.

Torch-free: reading the folder's JSON needs no model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentiq.contract import CONTRACT_VERSION, LABELS, Label
from sentiq.errors import ModelLoadError, one_line
from sentiq.text import TRUNCATION_MODES

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
#: What ``tokenizer.save_pretrained`` writes; without either, transformers quietly builds an
#: empty-vocabulary tokenizer that maps every word to [UNK].
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
#: The ``metrics.json`` keys a worker reads.
MODEL_ID_KEY, MAX_LENGTH_KEY, TRUNCATION_KEY = "model_id", "max_length", "truncation"
CONTRACT_VERSION_KEY = "contract_version"


def label2id() -> dict[str, int]:
    """``config.json``'s ``label2id`` of every sentiq model: ``{"negative": 0, "positive": 1}``."""
    return {label: index for index, label in enumerate(LABELS)}


def id2label() -> dict[int, Label]:
    """``config.json``'s ``id2label`` of every sentiq model: ``{0: "negative", 1: "positive"}``."""
    return dict(enumerate(LABELS))


def has_model(folder: Path) -> bool:
    """True when ``folder`` holds a config and weights."""
    return (folder / CONFIG_FILE).is_file() and any((folder / name).is_file() for name in WEIGHT_FILES)


@dataclass(frozen=True)
class ModelInfo:
    """What the training run recorded about a model folder, and what a worker serves it with."""

    model_id: str
    max_length: int
    truncation: str
    contract_version: int = CONTRACT_VERSION

    def as_metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` keys that carry this info."""
        return asdict(self)


def write_model_info(folder: Path, info: ModelInfo) -> Path:
    """A ``metrics.json`` holding only what a worker reads (for folders not written by training)."""
    path = folder / METRICS_FILE
    path.write_text(json.dumps(info.as_metrics()), encoding="utf-8")
    return path


def read_model_info(folder: Path, max_length_override: int = 0) -> ModelInfo:
    """Model id, max length and truncation the folder's ``metrics.json`` recorded at training.

    ``max_length_override`` (``SENTIQ_WORKER_MAX_LENGTH``, ``--max-length``) replaces the recorded
    max length. Raises :class:`ModelLoadError` when ``metrics.json`` is unreadable or implausible,
    and when the folder has none and no override is given: serving with another length than the
    model was trained with would quietly change its answers.
    """
    metrics_file = folder / METRICS_FILE
    if not metrics_file.is_file():
        if not max_length_override:
            raise ModelLoadError(
                f"{folder}: no {METRICS_FILE}, so the max length and truncation this model was trained "
                "with are unknown; pass --max-length N (SENTIQ_WORKER_MAX_LENGTH) to serve it anyway"
            )
        log.warning(
            "%s has no %s: serving with max length %d as given and head truncation assumed; "
            "answers differ from training if it used another length or head+tail truncation",
            folder,
            METRICS_FILE,
            max_length_override,
        )
        return ModelInfo(model_id=folder.resolve().name, max_length=max_length_override, truncation="head")
    metrics = read_json_object(metrics_file)
    contract_version = metrics.get(CONTRACT_VERSION_KEY, CONTRACT_VERSION)
    if contract_version != CONTRACT_VERSION:
        raise ModelLoadError(
            f"{metrics_file}: made for sentiq wire contract v{contract_version!r}; this worker speaks "
            f"v{CONTRACT_VERSION}: serve it with a sentiq release that speaks that contract"
        )
    model_id = metrics.get(MODEL_ID_KEY) or folder.resolve().name
    recorded_length = metrics.get(MAX_LENGTH_KEY)
    truncation = metrics.get(TRUNCATION_KEY) or "head"
    if not isinstance(model_id, str):
        raise ModelLoadError(f"{metrics_file}: model_id must be a string, got {model_id!r}")
    if truncation not in TRUNCATION_MODES:
        raise ModelLoadError(
            f"{metrics_file}: unknown truncation {truncation!r}, expected one of {list(TRUNCATION_MODES)}"
        )
    if max_length_override:
        return ModelInfo(model_id=model_id, max_length=max_length_override, truncation=truncation)
    if recorded_length is None:
        raise ModelLoadError(
            f"{metrics_file}: no max_length recorded, so the length this model was trained with is "
            "unknown; pass --max-length N (SENTIQ_WORKER_MAX_LENGTH) to serve it anyway"
        )
    if isinstance(recorded_length, bool) or not isinstance(recorded_length, int) or recorded_length <= 0:
        raise ModelLoadError(
            f"{metrics_file}: max_length must be a positive integer, got {recorded_length!r}"
        )
    return ModelInfo(model_id=model_id, max_length=recorded_length, truncation=truncation)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object, or a :class:`ModelLoadError` saying why it does not."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: not valid JSON: {one_line(error)}") from error
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path}: holds a JSON {type(loaded).__name__}, expected an object")
    return loaded


def check_config(folder: Path) -> None:
    """Raise a :class:`ModelLoadError` saying what is wrong when ``config.json`` is missing or no object."""
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ModelLoadError(
            f"{folder}: not a model folder (no {CONFIG_FILE}); train one with "
            "`python -m training train --output-dir DIR` or set SENTIQ_MODEL_PATH"
        )
    read_json_object(config_file)


def check_tokenizer_files(folder: Path) -> None:
    """Raise a :class:`ModelLoadError` when the folder has none of :data:`TOKENIZER_FILES`."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); save it next to the weights "
            "with tokenizer.save_pretrained(folder)"
        )


def check_labels(folder: Path, labels: Iterable[object]) -> None:
    """Raise a :class:`ModelLoadError` unless a model's ``id2label`` values are exactly the sentiq labels."""
    names = {str(label) for label in labels}
    if names != set(LABELS):
        raise ModelLoadError(
            f"{folder}: model labels are {sorted(names)}, expected {list(LABELS)} in id2label"
        )
