"""The fine-tuned classifier as a worker runs it: loaded once, batched, in inference mode."""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from sentiq.contract import Label
from sentiq.errors import ModelLoadError, one_line
from sentiq.model_folder import (
    ModelInfo,
    check_config,
    check_labels,
    check_tokenizer_files,
    read_model_info,
)
from worker.device import ServedPrecision
from worker.encoding import ID_TYPECODE, ReviewEncoder

if TYPE_CHECKING:
    from worker.int8 import OnnxClassifier

log = logging.getLogger(__name__)

#: The torch dtype the weights are cast to, per precision.
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: A review any working model classifies: the warm-up input, and the check that tells a broken
#: model from bad reviews after a failed pass.
PROBE_TEXT = "A short warm-up review that was rather good."
#: Failures that say the machine is short of memory, not that a review is bad: never blamed on a review.
RESOURCE_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError)


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
        precision: ServedPrecision,
        max_batch_size: int,
        max_batch_tokens: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.precision = precision
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        #: Tokenize ahead on a background thread while passes run (pays where passes are fast: GPUs).
        self.overlap_tokenization = device.startswith("cuda")
        #: The ONNX Runtime int8 copy that runs the passes instead of torch, when chosen (CPU only).
        self.int8: OnnxClassifier | None = None
        #: CPU passes of at most this many padded tokens run on one thread (0: none do), see
        #: :func:`worker.assembly.calibrate_single_thread`; the others on :attr:`threads`.
        self.single_thread_tokens = 0
        self.threads = torch.get_num_threads()
        try:
            self.encoder = ReviewEncoder(tokenizer, info.max_length, info.truncation)
        except ValueError as error:
            raise ModelLoadError(str(error)) from error
        config = cast(Any, model).config
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
        precision: ServedPrecision = "fp32",
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
        check_config(folder)
        info = read_model_info(folder, max_length)
        check_tokenizer_files(folder)
        _check_weight_files(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:  # transformers raises many types for a bad tokenizer
            raise ModelLoadError(f"{folder}: the tokenizer does not load: {one_line(error)}") from error
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=TORCH_DTYPES[precision], local_files_only=True
            )
        except Exception as error:  # transformers raises many types for a bad config or weights
            raise ModelLoadError(f"{folder}: {one_line(error)}") from error
        check_labels(folder, model.config.id2label.values())
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
            precision=precision,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of one review, cleaned and truncated as in training, with special tokens."""
        return self.encode_all([text])[0]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many reviews, one batched tokenizer call (see :mod:`worker.encoding`)."""
        return self.encoder.encode(texts)

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

        ``on_pass`` is called after each forward pass. On a GPU the reviews are tokenized in
        chunks on a background thread while the passes of earlier chunks run, inputs are copied
        from pinned memory without blocking, and results are read back once at the end, so the
        CPU keeps the GPU fed instead of waiting for it after every pass.
        """
        stats = PassStats()
        if not texts:
            return [], stats
        started = time.perf_counter()
        # (rows, scores, label ids) per pass; read back after the last pass.
        pending: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
        with torch.inference_mode():
            for offset, encoded in self._encoded_chunks(texts):
                for rows in self.plan_batches([len(ids) for ids in encoded]):
                    padded = self.pad([encoded[row] for row in rows])
                    self._set_threads(int(padded["input_ids"].numel()))
                    logits = self._logits(padded)
                    scores, label_ids = torch.softmax(logits, dim=-1).max(dim=-1)
                    pending.append(([offset + row for row in rows], scores, label_ids))
                    padded_length = int(padded["input_ids"].shape[1])
                    stats.passes += 1
                    stats.rows += len(rows)
                    stats.padded_tokens += len(rows) * padded_length
                    stats.max_padded_length = max(stats.max_padded_length, padded_length)
                    stats.lengths.append(padded_length)
                    if on_pass is not None:
                        on_pass()
        results: list[tuple[Label, float] | None] = [None] * len(texts)
        for rows, scores, label_ids in pending:
            for row, score, label_id in zip(rows, scores.tolist(), label_ids.tolist(), strict=True):
                results[row] = (self.id2label[int(label_id)], float(score))
        stats.milliseconds = (time.perf_counter() - started) * 1000
        return [result for result in results if result is not None], stats

    def _encoded_chunks(self, texts: Sequence[str]) -> Iterator[tuple[int, list[array[int]]]]:
        """(offset, token ids) of consecutive chunks of ``texts``; tokenized ahead on a thread if set."""
        chunk = max(1, 2 * self.max_batch_tokens // self.info.max_length)
        if not self.overlap_tokenization or len(texts) <= chunk:
            yield 0, self.encoder.encode_arrays(texts)
            return
        # One thread, so chunks are tokenized in order, each while earlier ones run on the device;
        # the Rust tokenizer releases the GIL (and uses every core) while it works.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiq-tokenize")
        try:
            futures = [
                (start, pool.submit(self.encoder.encode_arrays, texts[start : start + chunk]))
                for start in range(0, len(texts), chunk)
            ]
            for start, future in futures:
                yield start, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of one pass, padded as ``tokenizer.pad`` pads them.

        Built directly: the tokenizer's own padding works row by row in Python (12 us a review,
        a tenth of the queue path with a near-zero model), and so did building the padded lists
        here (77 us a review at 300 tokens, a third of the CPU work per review on a GPU). The rows
        are read into one flat array and scattered into place through the mask instead; rows from
        :meth:`ReviewEncoder.encode_arrays` are read as one block of C ints, without a Python int
        per token.
        """
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            lists = [list(row) for row in rows]
            return dict(self.tokenizer.pad({"input_ids": lists}, padding=True, return_tensors="pt"))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max())
        columns = np.arange(width)
        if self.tokenizer.padding_side == "left":
            mask = columns >= (width - lengths)[:, None]
        else:
            mask = columns < lengths[:, None]
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        # The mask's True cells, read row by row, are exactly the rows' tokens in order.
        if all(isinstance(row, array) and row.typecode == ID_TYPECODE for row in rows):
            ids[mask] = np.frombuffer(
                b"".join(cast("Sequence[array[int]]", rows)), dtype=np.dtype(ID_TYPECODE)
            )
        else:
            ids[mask] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}

    def use_all_threads(self) -> None:
        """Give torch every thread again, for work other than :meth:`predict` (attributions).

        :meth:`predict` leaves the thread count its last pass needed, so that a run of short
        passes does not switch it back and forth.
        """
        self._set_threads(None)

    def _set_threads(self, padded_tokens: int | None) -> None:
        """One torch thread for a pass of at most :attr:`single_thread_tokens`, else (and for None)
        :attr:`threads`; nothing changes while the single-thread budget is 0."""
        if self.single_thread_tokens <= 0 or self.int8 is not None:
            return
        small = padded_tokens is not None and padded_tokens <= self.single_thread_tokens
        wanted = 1 if small else self.threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _logits(self, padded: Any) -> torch.Tensor:
        """One forward pass: torch on the model's device, or the int8 engine when it is set."""
        if self.int8 is not None:
            return self.int8.logits(padded["input_ids"], padded["attention_mask"])
        batch = {name: self._to_device(tensor) for name, tensor in padded.items()}
        return cast(torch.Tensor, self.model(**batch).logits.float())

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.startswith("cuda"):
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def warm_up(self) -> float:
        """One forward pass to allocate buffers and pick kernels; returns its milliseconds."""
        _, stats = self.predict([PROBE_TEXT] * 2)
        return stats.milliseconds
