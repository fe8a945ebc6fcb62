"""Training data as token ids, encoded exactly as the worker encodes reviews at inference time.

The encoding itself (clean, tokenize, cut to ``head`` or ``head_tail``, frame with the special
tokens) has one home, :class:`worker.encoding.ReviewEncoder`; this module maps it over a dataset.
Padding is left to the batch collator, so each batch is only as long as its longest review.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from sentiq.errors import ConfigurationError
from worker.encoding import ReviewEncoder

__all__ = ["ReviewEncoder", "encode_dataset", "review_encoder"]


def review_encoder(tokenizer: Any, max_length: int, truncation: str) -> ReviewEncoder:
    """The serving encoder for these settings; :class:`ConfigurationError` when they cannot work."""
    try:
        return ReviewEncoder(tokenizer, max_length, truncation)
    except ValueError as error:
        raise ConfigurationError(f"unsupported tokenizer or max length: {error}") from error


def encode_dataset(encoder: ReviewEncoder, dataset: Dataset, description: str) -> Dataset:
    """``dataset`` (``text`` / ``label``) as ``input_ids`` / ``length`` / ``labels`` columns."""

    def encode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        input_ids = encoder.encode(batch["text"])
        return {"input_ids": input_ids, "length": [len(row) for row in input_ids]}

    encoded = dataset.map(
        encode_batch, batched=True, batch_size=256, remove_columns=["text"], desc=description
    )
    return encoded.rename_column("label", "labels")
