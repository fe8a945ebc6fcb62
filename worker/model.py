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
from sentiq.text import clean_review, frame_token_ids, special_token_frame

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEFAULT_MAX_LENGTH = 512


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


def read_model_info(folder: Path, max_length_override: int = 0) -> ModelInfo:
    """Model id, max length and truncation from the folder's ``metrics.json`` (defaults without one)."""
    metrics: dict[str, Any] = {}
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{metrics_file}: unreadable metrics.json: {error}") from error
    model_id = str(metrics.get("model_id") or folder.resolve().name)
    max_length = int(max_length_override or metrics.get("max_length") or _DEFAULT_MAX_LENGTH)
    truncation = str(metrics.get("truncation") or "head")
    return ModelInfo(model_id=model_id, max_length=max_length, truncation=truncation)


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

        Raises :class:`ModelLoadError` with the reason when the folder is missing, incomplete, or
        its labels are not exactly ``negative`` and ``positive``.
        """
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"{folder}: not a model folder (no config.json); train one with "
                "`python -m training train --output-dir DIR` or set SENTIQ_MODEL_PATH"
            )
        info = read_model_info(folder, max_length)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=_DTYPES[dtype], local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{folder}: cannot load model: {error}") from error
        labels = {str(label) for label in model.config.id2label.values()}
        if labels != set(LABELS):
            raise ModelLoadError(
                f"{folder}: model labels are {sorted(labels)}, expected {list(LABELS)} in id2label"
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
        _, stats = self.predict(["A short warm-up review that was rather good."] * 2)
        return stats.milliseconds
