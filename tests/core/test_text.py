"""sentiq.text: review cleaning, head / head+tail truncation and special-token framing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentiq.text import (
    HEAD_SHARE,
    clean_review,
    frame_token_ids,
    kept_head_tail,
    review_words,
    special_token_frame,
    truncate_token_ids,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Great film.<br /><br />Loved it.", "Great film. Loved it."),
        ("a<br/>b", "a b"),
        ("a<br>b", "a b"),
        ("a<BR />b<Br/>c", "a b c"),
        ("end.<br / >Next", "end. Next"),
        ("  spaced \t out\n\nlines  ", "spaced out lines"),
        ("no tags at all", "no tags at all"),
        ("<br /><br />", ""),
        # Only line breaks go: other markup is review text.
        ("<i>italic</i>", "<i>italic</i>"),
    ],
)
def test_clean_review(raw: str, clean: str) -> None:
    assert clean_review(raw) == clean


def test_clean_review_folds_unicode_whitespace() -> None:
    # IMDB carries U+0085 (NEL) and non-breaking spaces from its Windows-1252 origins.
    assert clean_review("one\x85two\u00a0three") == "one two three"


def test_head_keeps_the_first_ids() -> None:
    assert truncate_token_ids(list(range(10)), 4, "head") == [0, 1, 2, 3]


def test_head_tail_keeps_a_quarter_head_and_the_rest_tail() -> None:
    ids = list(range(1000))
    kept = truncate_token_ids(ids, 100, "head_tail")
    head = int(100 * HEAD_SHARE)
    assert kept == ids[:head] + ids[-(100 - head) :]
    assert len(kept) == 100
    assert kept[:25] == list(range(25))
    assert kept[-75:] == list(range(925, 1000))


@pytest.mark.parametrize("mode", ["head", "head_tail"])
def test_short_sequences_are_kept_whole(mode: str) -> None:
    assert truncate_token_ids([5, 6, 7], 3, mode) == [5, 6, 7]
    assert truncate_token_ids([5, 6, 7], 10, mode) == [5, 6, 7]
    assert truncate_token_ids([], 10, mode) == []


@pytest.mark.parametrize("mode", ["head", "head_tail"])
def test_zero_budget_keeps_nothing(mode: str) -> None:
    assert truncate_token_ids([1, 2, 3], 0, mode) == []


def test_head_tail_with_tiny_budgets() -> None:
    # One token: the head gets it (the review's opening); two: one from each end.
    assert truncate_token_ids([1, 2, 3, 4], 1, "head_tail") == [1]
    assert truncate_token_ids([1, 2, 3, 4], 2, "head_tail") == [1, 4]
    assert truncate_token_ids([1, 2, 3, 4], 3, "head_tail") == [1, 3, 4]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        truncate_token_ids([1, 2, 3], 2, "middle")


class FakeBertTokenizer:
    """Word-per-id tokenizer that frames text with [CLS]=101 ... [SEP]=102, as BERT does."""

    def __call__(self, text: str, add_special_tokens: bool = True, **_: Any) -> Mapping[str, Any]:
        ids = [len(word) for word in text.split()]
        return {"input_ids": [101, *ids, 102] if add_special_tokens else ids}


def test_special_token_frame_of_a_real_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prefix, suffix = special_token_frame(tokenizer)
    assert prefix == [tokenizer.cls_token_id]
    assert suffix == [tokenizer.sep_token_id]


def test_frame_token_ids_fits_max_length_with_the_special_tokens() -> None:
    frame = special_token_frame(FakeBertTokenizer())
    assert frame == ([101], [102])
    ids = list(range(1, 21))
    assert frame_token_ids(ids, frame, 6, "head") == [101, 1, 2, 3, 4, 102]
    assert frame_token_ids(ids, frame, 6, "head_tail") == [101, 1, 18, 19, 20, 102]
    assert frame_token_ids([7], frame, 6, "head_tail") == [101, 7, 102]


def test_frame_token_ids_needs_room_for_text() -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        frame_token_ids([1, 2], ([101], [102]), 2)


def test_special_token_frame_refuses_a_tokenizer_that_rewrites_the_text() -> None:
    def rewriting(text: str, add_special_tokens: bool = True, **_: Any) -> Mapping[str, Any]:
        return {"input_ids": [1, 2, 3] if add_special_tokens else [9]}

    with pytest.raises(ValueError, match="special tokens"):
        special_token_frame(rewriting)


_REFERENCE_LINE_BREAKS = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)


@given(
    st.text(
        alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f\x85\u00a0\u2028\u3000<br/>BRxé")), max_size=60
    )
)
def test_clean_review_matches_its_regex_definition(text: str) -> None:
    # The definition clean_review had before it was made faster: breaks to spaces, \s+ folded, stripped.
    expected = re.sub(r"\s+", " ", _REFERENCE_LINE_BREAKS.sub(" ", text)).strip()
    assert clean_review(text) == expected
    # Its words, what the encoder looks up: the cleaned text's, and none empty.
    assert review_words(text) == (expected.split(" ") if expected else [])


@pytest.mark.parametrize("mode", ["head", "head_tail"])
@pytest.mark.parametrize("budget", [0, 1, 2, 3, 7, 298])
def test_kept_head_tail_is_what_truncation_keeps(mode: str, budget: int) -> None:
    ids = list(range(1000))
    head, tail = kept_head_tail(budget, mode)
    assert head + tail == budget
    assert truncate_token_ids(ids, budget, mode) == ids[:head] + (ids[-tail:] if tail else [])
