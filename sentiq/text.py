"""Text preprocessing shared by training and the worker, so both see reviews the same way.

Torch-free: it works on strings and lists of token ids.
"""

from __future__ import annotations

import re

_LINE_BREAKS = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

TRUNCATION_MODES = ("head", "head_tail")
#: Share of the token budget kept from the start of a long review in ``head_tail`` mode. Sun et
#: al. (2019, "How to Fine-Tune BERT for Text Classification?") kept 128 head + 382 tail tokens
#: of 510 on IMDB; a quarter head keeps that ratio at any max length.
HEAD_SHARE = 0.25


def clean_review(text: str) -> str:
    """The review with IMDB's HTML line breaks (``<br />``) turned into spaces and whitespace folded."""
    return _WHITESPACE.sub(" ", _LINE_BREAKS.sub(" ", text)).strip()


def truncate_token_ids(ids: list[int], budget: int, mode: str = "head") -> list[int]:
    """At most ``budget`` ids: the first ones (``head``), or the first and last (``head_tail``)."""
    if mode not in TRUNCATION_MODES:
        raise ValueError(f"unknown truncation {mode!r}: use one of {', '.join(TRUNCATION_MODES)}")
    if budget <= 0:
        return []
    if len(ids) <= budget:
        return ids
    if mode == "head":
        return ids[:budget]
    head = max(1, int(budget * HEAD_SHARE))
    tail = budget - head
    return ids[:head] + (ids[-tail:] if tail else [])
