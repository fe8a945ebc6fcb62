"""Reviews to token ids, exactly as the worker prepares them at inference time.

Each review is cleaned (:func:`sentiq.text.clean_review`), tokenized without special tokens,
cut to the budget ``max_length`` leaves (``head`` or ``head_tail``) and framed by the tokenizer's
special tokens (:func:`sentiq.text.frame_token_ids`). Padding is left to the batch collator, so
each batch is only as long as its longest review.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from sentiq.errors import ConfigurationError
from sentiq.text import clean_review, frame_token_ids, special_token_frame


class ReviewEncoder:
    """Cleans, tokenizes and truncates reviews for one tokenizer, max length and truncation mode."""

    def __init__(self, tokenizer: Any, max_length: int, truncation: str) -> None:
        try:
            self.frame = special_token_frame(tokenizer)
        except ValueError as error:
            raise ConfigurationError(f"unsupported tokenizer: {error}") from error
        specials = len(self.frame[0]) + len(self.frame[1])
        if max_length <= specials:
            raise ConfigurationError(
                f"max_length {max_length} leaves no room for text next to {specials} special tokens"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, at most ``max_length`` per review."""
        # verbose=False: whole reviews are longer than the model takes on purpose; they are cut below.
        ids = self.tokenizer(
            [clean_review(text) for text in texts], add_special_tokens=False, truncation=False, verbose=False
        )["input_ids"]
        return [frame_token_ids(row, self.frame, self.max_length, self.truncation) for row in ids]

    def encode_dataset(self, dataset: Dataset, description: str) -> Dataset:
        """``dataset`` (``text`` / ``label``) as ``input_ids`` / ``length`` / ``labels`` columns."""

        def encode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            input_ids = self.encode(batch["text"])
            return {"input_ids": input_ids, "length": [len(row) for row in input_ids]}

        encoded = dataset.map(
            encode_batch, batched=True, batch_size=256, remove_columns=["text"], desc=description
        )
        return encoded.rename_column("label", "labels")
