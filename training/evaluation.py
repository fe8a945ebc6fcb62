"""``python -m training evaluate``: score a trained model folder on a labelled file.

The model is loaded and run by the worker's own code (:class:`worker.model.SentimentModel`:
the same loader, label check, cleaning, truncation from ``metrics.json``, batching and weights'
precision), so the accuracy reported here is the accuracy a worker serves. ``--precision auto``
resolves as a worker's does on this machine (:func:`worker.device.choose_precision`): bf16 on GPUs
that support it (else fp16), bf16 on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32. The
result says which precision it used.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sentiq.contract import LABELS
from sentiq.errors import ConfigurationError
from sentiq.settings import Precision, WorkerSettings
from training.data import load_sources, subsample
from training.precision import Runtime, choose_runtime
from training.scoring import score
from worker.device import ServedPrecision, choose_precision, cpu_has_fast_bf16
from worker.model import SentimentModel

log = logging.getLogger(__name__)

#: Reviews handed to :meth:`SentimentModel.predict` at a time: progress is reported between chunks.
_CHUNK = 1024


def serving_precision(requested: Precision, runtime: Runtime) -> ServedPrecision:
    """The precision a worker started with ``requested`` would serve in on this runtime's device."""
    import torch

    cuda = runtime.device == "cuda"
    return choose_precision(
        requested,
        runtime.device,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
        cpu_bf16_fast=cpu_has_fast_bf16(),
    )


def load_model(
    folder: Path,
    runtime: Runtime,
    precision: ServedPrecision = "fp32",
    *,
    batch_size: int = 32,
    max_length: int = 0,
) -> SentimentModel:
    """The folder loaded exactly as a worker loads it (``max_length`` 0: the folder's own)."""
    return SentimentModel.load(
        folder,
        device=runtime.device,
        precision=precision,
        max_length=max_length,
        max_batch_size=batch_size,
        max_batch_tokens=WorkerSettings().max_batch_tokens,
    )


def predict(model: SentimentModel, texts: list[str]) -> list[int]:
    """Label ids (0 negative, 1 positive) for ``texts``, through the worker's batching."""
    predictions: list[int] = []
    with tqdm(total=len(texts), desc="Scoring", unit="review") as progress:
        for start in range(0, len(texts), _CHUNK):
            chunk = texts[start : start + _CHUNK]
            results, _ = model.predict(chunk)
            predictions.extend(LABELS.index(label) for label, _score in results)
            progress.update(len(chunk))
    return predictions


def evaluate_model(
    folder: Path,
    data: str,
    *,
    max_samples: int | None = None,
    batch_size: int = 32,
    seed: int = 42,
    precision: Precision = "auto",
    max_length: int = 0,
) -> dict[str, Any]:
    """Metrics of the model in ``folder`` on ``data`` (a file, folder or hub dataset, test split).

    ``max_samples`` scores a seeded random subset; ``max_length`` overrides the folder's recorded
    one (needed only for a folder without ``metrics.json``). Returns one JSON-ready dict: the
    model, the data, the preprocessing and precision used, the metrics of
    :mod:`training.scoring` and the timing.
    """
    if max_samples is not None and max_samples < 1:
        raise ConfigurationError(f"--max-samples must be at least 1, got {max_samples}")
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, got {batch_size}")
    runtime = choose_runtime("fp32")
    served = serving_precision(precision, runtime)
    loaded_data = load_sources([data], split="test")
    dataset = subsample(loaded_data.dataset, max_samples, seed)
    model = load_model(folder, runtime, served, batch_size=batch_size, max_length=max_length)
    log.info(
        "scoring %s on %d reviews from %s (max_length %d, %s truncation, %s weights on %s)",
        model.info.model_id,
        len(dataset),
        data,
        model.info.max_length,
        model.info.truncation,
        served,
        runtime.describe().split(",")[0],
    )
    started = time.monotonic()
    predictions = predict(model, list(dataset["text"]))
    seconds = time.monotonic() - started
    return {
        "model": str(folder),
        "model_id": model.info.model_id,
        "data": data,
        "samples": len(dataset),
        "max_length": model.info.max_length,
        "truncation": model.info.truncation,
        **score(predictions, list(dataset["label"])),
        "seconds": round(seconds, 2),
        "reviews_per_second": round(len(dataset) / seconds, 1) if seconds > 0 else None,
        "device": runtime.device,
        "weights_precision": served,
    }
