"""Text preprocessing shared by training and the worker, so both see reviews the same way.

Torch-free: it works on strings and lists of token ids. A review becomes model input as
``frame_token_ids(tokenizer(clean_review(text), add_special_tokens=False)["input_ids"], ...)``:
cleaned, tokenized without special tokens, cut to the budget that ``max_length`` leaves, then
framed by the tokenizer's own special tokens (see :func:`special_token_frame`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_LINE_BREAKS = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)

TRUNCATION_MODES = ("head", "head_tail")
#: Share of the token budget kept from the start of a long review in ``head_tail`` mode. Sun et
#: al. (2019, "How to Fine-Tune BERT for Text Classification?") kept 128 head + 382 tail tokens
#: of 510 on IMDB; a quarter head keeps that ratio at any max length.
HEAD_SHARE = 0.25


def clean_review(text: str) -> str:
    """The review with IMDB's HTML line breaks (``<br />``) turned into spaces and whitespace folded."""
    return " ".join(review_words(text))


def review_words(text: str) -> list[str]:
    """The words of :func:`clean_review`'s text: ``clean_review(text) == " ".join(review_words(text))``."""
    if "<" in text:
        text = _LINE_BREAKS.sub(" ", text)
    # str.split() splits at exactly what the regex \s matches (str.isspace), at a third of the cost.
    return text.split()


def kept_head_tail(budget: int, mode: str = "head") -> tuple[int, int]:
    """How many tokens a review longer than ``budget`` keeps from its start and from its end."""
    if mode not in TRUNCATION_MODES:
        raise ValueError(f"unknown truncation {mode!r}: use one of {', '.join(TRUNCATION_MODES)}")
    if budget <= 0:
        return 0, 0
    if mode == "head":
        return budget, 0
    head = max(1, int(budget * HEAD_SHARE))
    return head, budget - head


def truncate_token_ids(ids: list[int], budget: int, mode: str = "head") -> list[int]:
    """At most ``budget`` ids: the first ones (``head``), or the first and last (``head_tail``)."""
    head, tail = kept_head_tail(budget, mode)
    if len(ids) <= budget:
        return ids if budget > 0 else []
    return ids[:head] + (ids[-tail:] if tail else [])


#: Anything called like a Hugging Face tokenizer: ``tokenizer(text, add_special_tokens=...)``.
TokenizerCall = Callable[..., Mapping[str, Any]]


def special_token_frame(tokenizer: TokenizerCall) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after a single text ([CLS] / [SEP] for BERT).

    Found by encoding a probe word with and without special tokens; raises ``ValueError`` when the
    bare encoding does not occur inside the framed one.
    """
    probe = "sentiment"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    framed = list(tokenizer(probe)["input_ids"])
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    raise ValueError("cannot tell where the tokenizer puts its special tokens")


def frame_token_ids(
    ids: Sequence[int], frame: tuple[Sequence[int], Sequence[int]], max_length: int, mode: str = "head"
) -> list[int]:
    """``ids`` (no special tokens) cut to fit ``max_length`` with the ``frame`` around them."""
    prefix, suffix = frame
    budget = max_length - len(prefix) - len(suffix)
    if budget <= 0:
        raise ValueError(f"max_length {max_length} leaves no room for text between the special tokens")
    return [*prefix, *truncate_token_ids(list(ids), budget, mode), *suffix]
