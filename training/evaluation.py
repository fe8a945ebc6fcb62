"""``python -m training evaluate``: score a trained model folder on a labelled file.

The folder's own ``max_length`` and ``truncation`` (from its ``metrics.json``) are applied, so a
model is scored on the same input the worker gives it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sentiq.errors import ConfigurationError, ModelLoadError
from training.base_model import max_positions
from training.data import LABEL_NAMES, load_sources, subsample
from training.encoding import ReviewEncoder
from training.model_folder import has_model
from training.report import read_metrics
from training.runtime import Precision, Runtime, choose_runtime
from training.scoring import score

log = logging.getLogger(__name__)

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    """A model folder ready to score: model, tokenizer, preprocessing and label mapping."""

    model: Any
    encoder: ReviewEncoder
    model_id: str
    #: Model output index -> sentiq label id (0 negative, 1 positive).
    label_of_output: dict[int, int]


def load_model(folder: Path, runtime: Runtime) -> LoadedModel:
    """Load a folder written by ``python -m training train`` (or any 2-label negative/positive model)."""
    if not has_model(folder):
        raise ModelLoadError(f"{folder}: not a model folder (needs config.json and model weights)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder}: cannot load model: {error}") from error
    outputs = {int(index): str(name).lower() for index, name in model.config.id2label.items()}
    if sorted(outputs.values()) != sorted(LABEL_NAMES):
        raise ModelLoadError(
            f"{folder}: model labels are {sorted(outputs.values())}, expected {list(LABEL_NAMES)}"
        )
    recorded = read_metrics(folder) or {}
    max_length = int(recorded.get("max_length") or max_positions(model, tokenizer))
    truncation = str(recorded.get("truncation") or "head")
    model.to(runtime.device)
    model.eval()
    return LoadedModel(
        model=model,
        encoder=ReviewEncoder(tokenizer, max_length, truncation),
        model_id=str(recorded.get("model_id") or folder.resolve().name),
        label_of_output={index: LABEL_NAMES.index(name) for index, name in outputs.items()},
    )


def predict(loaded: LoadedModel, texts: list[str], batch_size: int, runtime: Runtime) -> list[int]:
    """Label ids (0/1) for ``texts``; batches are formed from reviews of similar length."""
    encoded = loaded.encoder.encode(texts)
    order = sorted(range(len(encoded)), key=lambda row: len(encoded[row]), reverse=True)
    predictions = [0] * len(encoded)
    tokenizer = loaded.encoder.tokenizer
    autocast = _AUTOCAST.get(runtime.precision)
    with (
        torch.inference_mode(),
        torch.autocast(runtime.device, dtype=autocast or torch.float32, enabled=autocast is not None),
        tqdm(total=len(encoded), desc="Scoring", unit="review") as progress,
    ):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt")
            logits = loaded.model(
                **{name: tensor.to(runtime.device) for name, tensor in batch.items()}
            ).logits
            for row, output in zip(rows, logits.argmax(dim=-1).tolist(), strict=True):
                predictions[row] = loaded.label_of_output[int(output)]
            progress.update(len(rows))
    return predictions


def evaluate_model(
    folder: Path,
    data: str,
    *,
    max_samples: int | None = None,
    batch_size: int = 32,
    seed: int = 42,
    precision: Precision = "auto",
) -> dict[str, Any]:
    """Metrics of the model in ``folder`` on ``data`` (a file, folder or hub dataset, test split).

    ``max_samples`` scores a seeded random subset. Returns one JSON-ready dict: the model, the
    data, the preprocessing used, the metrics of :mod:`training.scoring` and the timing.
    """
    if max_samples is not None and max_samples < 1:
        raise ConfigurationError(f"--max-samples must be at least 1, got {max_samples}")
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, got {batch_size}")
    runtime = choose_runtime(precision)
    loaded_data = load_sources([data], split="test")
    dataset = subsample(loaded_data.dataset, max_samples, seed)
    loaded = load_model(folder, runtime)
    log.info(
        "scoring %s on %d reviews from %s (max_length %d, %s truncation, %s)",
        loaded.model_id,
        len(dataset),
        data,
        loaded.encoder.max_length,
        loaded.encoder.truncation,
        runtime.describe(),
    )
    started = time.monotonic()
    predictions = predict(loaded, list(dataset["text"]), batch_size, runtime)
    seconds = time.monotonic() - started
    return {
        "model": str(folder),
        "model_id": loaded.model_id,
        "data": data,
        "samples": len(dataset),
        "max_length": loaded.encoder.max_length,
        "truncation": loaded.encoder.truncation,
        **score(predictions, list(dataset["label"])),
        "seconds": round(seconds, 2),
        "reviews_per_second": round(len(dataset) / seconds, 1) if seconds > 0 else None,
        "device": runtime.device,
        "dtype": runtime.precision,
    }
