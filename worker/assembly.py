"""Assembling a ready :class:`~worker.processing.Classifier` from settings: device, precision, model."""

from __future__ import annotations

import logging
import time

import torch
from redis import Redis

from sentiq.errors import ModelLoadError
from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from worker.device import (
    DeviceChoice,
    ServedPrecision,
    choose_device,
    choose_precision,
    cpu_has_fast_bf16,
    host_ticket_key,
)
from worker.model import SentimentModel
from worker.processing import Classifier

log = logging.getLogger(__name__)


def pick_device(settings: Settings, connection: Redis) -> tuple[DeviceChoice, ServedPrecision]:
    """The device (logged with its reason) and precision this worker runs on."""
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ticket_key = host_ticket_key(settings.queue.key_prefix)
    choice = choose_device(
        settings.worker.device,
        gpu_count=gpu_count,
        take_ticket=lambda: int(connection.incr(ticket_key)) - 1,
    )
    if choice.device == "cpu" and settings.worker.device == "auto":
        log.warning("device: %s", choice.reason)
    precision = choose_precision(
        settings.worker.precision,
        choice.device,
        cuda_bf16=choice.device.startswith("cuda") and torch.cuda.is_bf16_supported(),
        cpu_bf16_fast=cpu_has_fast_bf16(),
    )
    log.info("device %s (%s), precision %s", choice.device, choice.reason, precision)
    return choice, precision


def load_model(settings: Settings, device: str, precision: ServedPrecision) -> tuple[SentimentModel, float]:
    """The model loaded and warmed up, with the warm-up time in ms.

    Whatever goes wrong here is a problem of the model folder (or of the device it is loaded on),
    so every exception becomes a :class:`ModelLoadError` naming the folder: the worker reports it
    as one line, and its cause stays chained for the DEBUG log's traceback.
    """
    try:
        model = SentimentModel.load(
            settings.model.path, device=device, precision=precision, max_length=settings.worker.max_length
        )
        warm_ms = model.warm_up()
        size_passes(model, settings.worker.max_batch_size, settings.worker.max_batch_tokens)
        return model, warm_ms
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(
            f"{settings.model.path}: {type(error).__name__} while loading on {device} ({precision}): {error}"
        ) from error


#: Row counts tried when the pass size is measured at start-up (``max_batch_size`` 0).
CPU_BATCH_SIZES = (8, 16, 32, 64)
GPU_BATCH_SIZES = (64, 128, 256, 512, 1024)
#: With a measured pass size, passes of short reviews may hold this many times the rows.
SHORT_REVIEW_ROWS_FACTOR = 4


def size_passes(model: SentimentModel, max_batch_size: int, max_batch_tokens: int) -> None:
    """Set the model's pass limits from the settings; 0 means measured here (see WorkerSettings)."""
    max_length = model.info.max_length
    if max_batch_size == 0:
        candidates = GPU_BATCH_SIZES if model.device.startswith("cuda") else CPU_BATCH_SIZES
        started = time.perf_counter()
        rates = model.measure_pass_rates(candidates)
        best = max(rates.values())
        # The smallest within 2% of the fastest: smaller passes keep waits short at no cost.
        rows = min(size for size, rate in rates.items() if rate >= 0.98 * best)
        log.info(
            "pass size measured in %.1f s: %d rows of %d tokens (reviews/s by rows: %s)",
            time.perf_counter() - started,
            rows,
            max_length,
            ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items()),
        )
        model.max_batch_tokens = max_batch_tokens or rows * max_length
        model.max_batch_size = rows * SHORT_REVIEW_ROWS_FACTOR
    else:
        model.max_batch_size = max_batch_size
        model.max_batch_tokens = max_batch_tokens or max_batch_size * max_length


def build_classifier(settings: Settings, connection: Redis) -> Classifier:
    """Load the model once on the chosen device, warm it up and attach the result store."""
    choice, precision = pick_device(settings, connection)
    if choice.device == "cpu":
        # Leave the core count to torch's default, but never oversubscribe inter-op threads.
        torch.set_num_interop_threads(1)
    model, warm_ms = load_model(settings, choice.device, precision)
    log.info(
        "model %s loaded from %s (max_length %d, truncation %s), warm-up %.0f ms",
        model.info.model_id,
        settings.model.path,
        model.info.max_length,
        model.info.truncation,
        warm_ms,
    )
    store = ResultStore(
        connection, settings.queue.key_prefix, settings.queue.result_ttl_s, settings.queue.stream_maxlen
    )
    return Classifier(model, store, settings.queue.max_review_chars)
