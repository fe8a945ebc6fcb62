"""The fine-tuned classifier as a worker runs it: loaded once, batched, in inference mode."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from sentiq.contract import LABELS, Label
from sentiq.errors import ModelLoadError
from sentiq.text import TRUNCATION_MODES, clean_review, frame_token_ids, special_token_frame

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: What ``tokenizer.save_pretrained`` writes; without either, transformers quietly builds an
#: empty-vocabulary tokenizer that maps every word to [UNK].
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
#: A review any working model classifies: the warm-up input, and the check that tells a broken
#: model from bad reviews after a failed pass.
PROBE_TEXT = "A short warm-up review that was rather good."
#: Failures that say the machine is short of memory, not that a review is bad: never blamed on a review.
RESOURCE_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError)
_MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class ModelInfo:
    """What the training run recorded about a model folder."""

    model_id: str
    max_length: int
    truncation: str


@dataclass
class PassStats:
    """Shape and duration of the forward passes behind one :meth:`SentimentModel.predict` call."""

    passes: int = 0
    rows: int = 0
    padded_tokens: int = 0
    max_padded_length: int = 0
    milliseconds: float = 0.0
    lengths: list[int] = field(default_factory=list)

    def add(self, other: PassStats) -> None:
        """Count ``other``'s passes in these too."""
        self.passes += other.passes
        self.rows += other.rows
        self.padded_tokens += other.padded_tokens
        self.max_padded_length = max(self.max_padded_length, other.max_padded_length)
        self.milliseconds += other.milliseconds
        self.lengths.extend(other.lengths)


def one_line(error: BaseException) -> str:
    """``ExceptionClass: message`` on one line, at most a few hundred characters."""
    message = " ".join(str(error).split())
    if len(message) > _MAX_REASON_CHARS:
        message = message[: _MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def read_model_info(folder: Path, max_length_override: int = 0) -> ModelInfo:
    """Model id, max length and truncation the folder's ``metrics.json`` recorded at training.

    ``max_length_override`` (``SENTIQ_WORKER_MAX_LENGTH``) replaces the recorded max length. Raises
    :class:`ModelLoadError` when ``metrics.json`` is unreadable or implausible, and when the folder
    has none and no override is given: serving with another length than the model was trained
    with would quietly change its answers.
    """
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        if not max_length_override:
            raise ModelLoadError(
                f"{folder}: no metrics.json, so the max length and truncation this model was trained "
                "with are unknown; pass --max-length N (SENTIQ_WORKER_MAX_LENGTH) to serve it anyway"
            )
        log.warning(
            "%s has no metrics.json: serving with max length %d as given and head truncation assumed; "
            "answers differ from training if it used another length or head+tail truncation",
            folder,
            max_length_override,
        )
        return ModelInfo(model_id=folder.resolve().name, max_length=max_length_override, truncation="head")
    metrics = _read_json_object(metrics_file)
    model_id = metrics.get("model_id") or folder.resolve().name
    recorded_length = metrics.get("max_length")
    truncation = metrics.get("truncation") or "head"
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


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object, or a :class:`ModelLoadError` saying why it does not."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: not valid JSON: {one_line(error)}") from error
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path}: holds a JSON {type(loaded).__name__}, expected an object")
    return loaded


def _check_config(folder: Path) -> None:
    """Raise a :class:`ModelLoadError` saying what is wrong when ``config.json`` is not a JSON object."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"{folder}: not a model folder (no config.json); train one with "
            "`python -m training train --output-dir DIR` or set SENTIQ_MODEL_PATH"
        )
    _read_json_object(config_file)


def _check_weight_files(folder: Path) -> None:
    """Open every safetensors file's header, so a truncated or damaged copy is named at start-up."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own error type for every kind of damage
            raise ModelLoadError(
                f"{path}: unreadable weights, truncated or damaged ({one_line(error)}); "
                "copy the model folder again"
            ) from error


class SentimentModel:
    """A sequence classifier with labels ``negative``/``positive`` and its tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        *,
        device: str,
        dtype: str,
        max_batch_size: int,
        max_batch_tokens: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        try:
            self._frame = special_token_frame(tokenizer)
        except ValueError as error:
            raise ModelLoadError(str(error)) from error
        config = cast(Any, model).config
        frame_length = len(self._frame[0]) + len(self._frame[1])
        if info.max_length <= frame_length:
            raise ModelLoadError(
                f"max length {info.max_length} leaves no room for text between the "
                f"{frame_length} special tokens"
            )
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(positions, int) and info.max_length > positions:
            raise ModelLoadError(
                f"max length {info.max_length} is more than the {positions} positions this model has "
                "(max_position_embeddings); use at most that"
            )
        self.id2label: dict[int, Label] = {
            int(index): cast(Label, label) for index, label in config.id2label.items()
        }

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_length: int = 0,
        max_batch_size: int = 64,
        max_batch_tokens: int = 16_384,
    ) -> SentimentModel:
        """Load a model folder written by ``python -m training train`` onto ``device``.

        Raises :class:`ModelLoadError` with a one-line reason when the folder is missing or
        incomplete (no config, tokenizer or weights; an unreadable config, weights or
        ``metrics.json``), when its labels are not exactly ``negative`` and ``positive``, and
        when the max length is unknown (no ``metrics.json`` and no ``max_length``) or more than
        the model's positions.
        """
        folder = Path(folder)
        _check_config(folder)
        info = read_model_info(folder, max_length)
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise ModelLoadError(
                f"{folder}: no tokenizer ({' or '.join(_TOKENIZER_FILES)}); save it next to the weights "
                "with tokenizer.save_pretrained(folder)"
            )
        _check_weight_files(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:  # transformers raises many types for a bad tokenizer
            raise ModelLoadError(f"{folder}: the tokenizer does not load: {one_line(error)}") from error
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=_DTYPES[dtype], local_files_only=True
            )
        except Exception as error:  # transformers raises many types for a bad config or weights
            raise ModelLoadError(f"{folder}: {one_line(error)}") from error
        labels = {str(label) for label in model.config.id2label.values()}
        if labels != set(LABELS):
            raise ModelLoadError(
                f"{folder}: model labels are {sorted(labels)}, expected {list(LABELS)} in id2label"
            )
        vocab_size = getattr(model.config, "vocab_size", None)
        if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
            # Token ids past the embedding table would fail the forward pass of every review using them.
            raise ModelLoadError(
                f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} "
                "(vocab_size); the tokenizer does not belong to these weights"
            )
        model.to(device)
        model.eval()
        return cls(
            model,
            tokenizer,
            info,
            device=device,
            dtype=dtype,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of one review, cleaned and truncated as in training, with special tokens."""
        # Tokenized whole on purpose (verbose=False silences the length warning): truncation
        # happens below, head-only or head+tail, exactly as in training.
        ids = self.tokenizer(clean_review(text), add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        return frame_token_ids(ids, self._frame, self.info.max_length, self.info.truncation)

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Group row indices into forward passes: longest first, so each pass pads little.

        A pass holds at most ``max_batch_size`` rows and ``max_batch_tokens`` padded tokens.
        """
        order = sorted(range(len(lengths)), key=lambda index: lengths[index], reverse=True)
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            # Sorted descending, so the first row of a pass sets its padded length.
            padded_length = lengths[current[0]] if current else lengths[index]
            too_many_rows = len(current) >= self.max_batch_size
            too_many_tokens = (len(current) + 1) * padded_length > self.max_batch_tokens
            if current and (too_many_rows or too_many_tokens):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def predict(
        self, texts: Sequence[str], on_pass: Callable[[], None] | None = None
    ) -> tuple[list[tuple[Label, float]], PassStats]:
        """Label and probability of that label for each text, in input order.

        ``on_pass`` is called after each forward pass (the worker keeps its heartbeats there).
        """
        stats = PassStats()
        if not texts:
            return [], stats
        started = time.perf_counter()
        encoded = [self.encode(text) for text in texts]
        lengths = [len(ids) for ids in encoded]
        results: list[tuple[Label, float] | None] = [None] * len(texts)
        with torch.inference_mode():
            for rows in self.plan_batches(lengths):
                padded = self.tokenizer.pad(
                    {"input_ids": [encoded[row] for row in rows]}, padding=True, return_tensors="pt"
                )
                batch = {name: tensor.to(self.device) for name, tensor in padded.items()}
                logits = self.model(**batch).logits.float()
                probabilities = torch.softmax(logits, dim=-1)
                scores, label_ids = probabilities.max(dim=-1)
                for row, score, label_id in zip(rows, scores.tolist(), label_ids.tolist(), strict=True):
                    results[row] = (self.id2label[int(label_id)], float(score))
                padded_length = int(batch["input_ids"].shape[1])
                stats.passes += 1
                stats.rows += len(rows)
                stats.padded_tokens += len(rows) * padded_length
                stats.max_padded_length = max(stats.max_padded_length, padded_length)
                stats.lengths.append(padded_length)
                if on_pass is not None:
                    on_pass()
        stats.milliseconds = (time.perf_counter() - started) * 1000
        return [result for result in results if result is not None], stats

    def warm_up(self) -> float:
        """One forward pass to allocate buffers and pick kernels; returns its milliseconds."""
        _, stats = self.predict([PROBE_TEXT] * 2)
        return stats.milliseconds
