"""training.encoding: cleaned, truncated, framed token ids, ready for dynamic padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from sentiq.errors import ConfigurationError
from training.data import FEATURES
from training.encoding import ReviewEncoder, encode_dataset, review_encoder


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


LONG = "the start was good . " + "filler words and more filler . " * 60 + "but the ending was bad ."


def test_line_breaks_are_cleaned_before_tokenizing(tokenizer: Any) -> None:
    encoder = ReviewEncoder(tokenizer, 64, "head")
    assert encoder.encode(["great film.<br /><br />loved it"]) == encoder.encode(["great film. loved it"])


def test_head_truncation_matches_the_tokenizers_own(tokenizer: Any) -> None:
    encoder = ReviewEncoder(tokenizer, 32, "head")
    [ids] = encoder.encode([LONG])
    assert len(ids) == 32
    assert ids == tokenizer(LONG, truncation=True, max_length=32)["input_ids"]


def test_head_tail_keeps_the_ending(tokenizer: Any) -> None:
    encoder = ReviewEncoder(tokenizer, 32, "head_tail")
    [ids] = encoder.encode([LONG])
    full = tokenizer(LONG, verbose=False)["input_ids"]
    assert len(ids) == 32
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1:8] == full[1:8]  # budget 30: 7 head tokens
    assert ids[8:] == full[-24:]  # the last 23 text tokens and [SEP]
    assert tokenizer.decode(ids[-6:-1]) == "the ending was bad."


def test_short_reviews_are_not_padded(tokenizer: Any) -> None:
    encoder = ReviewEncoder(tokenizer, 64, "head_tail")
    short, longer = encoder.encode(["good", "good but long winded"])
    assert len(short) < len(longer) < 64


def test_encode_dataset_leaves_ids_lengths_and_labels(tokenizer: Any) -> None:
    dataset = Dataset.from_dict({"text": ["fine", LONG], "label": [1, 0]}, features=FEATURES)
    encoded = encode_dataset(ReviewEncoder(tokenizer, 16, "head"), dataset, "test")
    assert set(encoded.column_names) == {"labels", "input_ids", "length"}
    assert encoded["labels"] == [1, 0]
    assert encoded["length"] == [len(ids) for ids in encoded["input_ids"]]
    assert encoded["length"][1] == 16


def test_max_length_must_leave_room_for_text(tokenizer: Any) -> None:
    with pytest.raises(ConfigurationError, match="leaves no room for text"):
        review_encoder(tokenizer, 2, "head")
