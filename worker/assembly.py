"""Assembling a ready :class:`~worker.processing.Classifier` from settings: device, precision, model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from redis import Redis

from sentiq.errors import ModelLoadError
from sentiq.result_store import ResultStore
from sentiq.settings import Engine, Settings
from worker.allocator import keep_freed_memory
from worker.device import (
    DeviceChoice,
    ServedPrecision,
    choose_device,
    choose_precision,
    cpu_has_fast_bf16,
    host_ticket_key,
)
from worker.int8 import has_usable_int8, load_int8
from worker.model import PROBE_TEXT, SentimentModel
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
        choose_engine(model, settings.worker.engine, settings.model.path)
        calibrate_single_thread(model, settings.worker.single_thread_pass_ms)
        return model, warm_ms
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(
            f"{settings.model.path}: {type(error).__name__} while loading on {device} ({precision}): {error}"
        ) from error


#: Padded tokens per forward pass when ``max_batch_tokens`` is 0. On the issue 9 CPU (AVX512-BF16)
#: passes of 8, 16 and 32 rows of 300 tokens ran at the same speed within noise and 64 rows 20-30%
#: slower; on an AVX2 CPU 8 rows ran fastest and ~29 rows 40% slower: about 13 rows of 300 here.
#: A GPU needs large passes to be busy.
CPU_PASS_TOKENS = 4_096
GPU_PASS_TOKENS = 131_072
#: With ``max_batch_size`` 0, passes of short reviews may hold this many times the full-length rows.
SHORT_REVIEW_ROWS_FACTOR = 4


def size_passes(model: SentimentModel, max_batch_size: int, max_batch_tokens: int) -> None:
    """Set the model's pass limits from the settings, where 0 means the device's default."""
    max_length = model.info.max_length
    if max_batch_tokens == 0:
        if max_batch_size:
            max_batch_tokens = max_batch_size * max_length
        else:
            max_batch_tokens = GPU_PASS_TOKENS if model.device.startswith("cuda") else CPU_PASS_TOKENS
    if max_batch_size == 0:
        max_batch_size = max(1, max_batch_tokens // max_length) * SHORT_REVIEW_ROWS_FACTOR
    model.max_batch_size, model.max_batch_tokens = max_batch_size, max_batch_tokens
    log.info(
        "forward passes of at most %d rows and %d padded tokens (%d reviews of %d tokens)",
        max_batch_size,
        max_batch_tokens,
        min(max_batch_size, max(1, max_batch_tokens // max_length)),
        max_length,
    )


def choose_engine(model: SentimentModel, requested: Engine, folder: Path) -> None:
    """Set the int8 engine on ``model`` when it is asked for, or when ``auto`` measures it faster.

    ``auto`` on a CPU times one full pass of full-length reviews with each engine (after a
    warm-up pass each) and keeps the faster; the int8 copy is only ever built by
    ``python -m worker.int8``, never here.
    """
    if requested == "torch":
        return
    cpu = not model.device.startswith("cuda")
    if requested == "onnx-int8":
        if not cpu:
            raise ModelLoadError(
                "the onnx-int8 engine runs on the CPU only; use --device cpu or engine torch"
            )
        model.int8 = load_int8(folder, model.info.model_id)
        log.info("engine onnx-int8 (requested)")
        return
    if not cpu or not has_usable_int8(folder, model.info.model_id):
        return
    try:
        candidate = load_int8(folder, model.info.model_id)
    except ModelLoadError as error:
        log.warning("int8 engine not used: %s", error)
        return
    texts = [" ".join([PROBE_TEXT] * model.info.max_length)] * max(
        1, model.max_batch_tokens // model.info.max_length
    )
    torch_s = _pass_seconds(model, texts)
    model.int8 = candidate
    int8_s = _pass_seconds(model, texts)
    if int8_s >= torch_s:
        model.int8 = None
    log.info(
        "engine auto: one pass of %d full-length reviews took %.0f ms with torch (%s), %.0f ms with "
        "onnx-int8: using %s",
        len(texts),
        torch_s * 1000,
        model.precision,
        int8_s * 1000,
        "onnx-int8" if model.int8 is not None else "torch",
    )


def calibrate_single_thread(model: SentimentModel, budget_ms: float) -> None:
    """Let CPU passes that one thread runs within ``budget_ms`` leave the other threads asleep.

    Waking the sleeping threads of an idle worker took ~6 ms on a 2-core VM, twelve times a
    near-zero model's whole pass, so a lone short review waited mostly for threads. The cost of a
    token on one thread is timed here on full-length rows (the dearest tokens, as attention grows
    with length), and passes of up to ``budget_ms`` worth of padded tokens run on one thread.
    """
    model.use_all_threads()
    model.single_thread_tokens = 0
    if budget_ms <= 0 or model.device != "cpu" or model.int8 is not None or model.threads <= 1:
        return
    rows = 2
    texts = [" ".join([PROBE_TEXT] * model.info.max_length)] * rows
    torch.set_num_threads(1)
    try:
        seconds = _pass_seconds(model, texts)
    finally:
        torch.set_num_threads(model.threads)
    token_ms = max(seconds, 1e-9) * 1000 / (rows * model.info.max_length)
    model.single_thread_tokens = int(budget_ms / token_ms)
    if model.single_thread_tokens == 0:
        log.info("every pass runs on %d threads (a token takes %.4f ms on one)", model.threads, token_ms)
        return
    log.info(
        "passes of up to %d padded tokens run on one thread (%.4f ms a token on one; %d threads otherwise)",
        model.single_thread_tokens,
        token_ms,
        model.threads,
    )


def _pass_seconds(model: SentimentModel, texts: list[str]) -> float:
    """The faster of two timed passes over ``texts``, after one to warm up."""
    model.predict(texts)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        model.predict(texts)
        timings.append(time.perf_counter() - started)
    return min(timings)


def build_classifier(settings: Settings, connection: Redis) -> Classifier:
    """Load the model once on the chosen device, warm it up and attach the result store."""
    if settings.worker.keep_freed_memory:
        keep_freed_memory()
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
