"""Reviews to model input ids: cleaned, tokenized, cut to the budget and framed; one home for both
training and serving, so a model always reads reviews the way it was trained on them.

A review becomes ``frame_token_ids(tokenize(clean_review(text)), ...)`` (see :mod:`sentiq.text`).
Tokenizing a whole review only to keep its first (and last) few hundred tokens was the largest
cost of the queue path, so for tokenizers that split words at whitespace before anything else
(BERT's WordPiece family) only the needed ends of a long review are tokenized: the first and last
few characters per kept token, cut at a space. Words never span a space there, so those pieces
give exactly the head and tail tokens of the whole review; a piece that comes up short (a very
long word, text without spaces) falls back to tokenizing the whole review. The result is
identical either way (tested against whole-review tokenization).

Fast tokenizers are called through a private copy of their Rust tokenizer, without offsets
(``encode_batch_fast``): the transformers wrapper re-applies truncation and padding settings and
builds a dict per review on every call, and offsets are never used here. Together that was a fifth
of the tokenizing cost at the queue ceiling.

BERT's normalizer (control characters out, Chinese characters spaced, accents stripped, lower
case) does nothing to printable ASCII but lower its case, yet it was a third of the Rust
tokenizer's time (tracking every character's offsets). Printable ASCII pieces (94 % of IMDB
reviews) are lowered in Python and tokenized by a second copy without the normalizer; pieces that
hold anything else, or the text of a special token in any case, go through the full tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from sentiq.text import clean_review, frame_token_ids, kept_head_tail, special_token_frame

#: Characters of text budgeted per token when cutting the ends of a long review. English WordPiece
#: averages about 4.5 characters (with the space) per token; with 6, 4 of 500 IMDB reviews fell
#: short at 32 tokens and none at 128 (with 5: 52 and 17; tokenizing costs ~0.5 us a character).
CHARS_PER_TOKEN = 6
#: Tokenizer building blocks that act per character or split words at whitespace, so that cutting
#: a cleaned review at a space cuts its token sequence at the same place.
_SPLITTING_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_PER_CHARACTER_NORMALIZERS = frozenset({"BertNormalizer", "Lowercase", "NFD", "StripAccents"})
#: BERT tokenizers add 5 tokens ([PAD], [UNK], [CLS], [SEP], [MASK]); each is looked for in every
#: printable ASCII piece (about 0.1 us), so a tokenizer with many more keeps its normalizer.
MAX_ADDED_TOKENS_FOR_SHORTCUT = 32


def cuts_at_spaces_safely(tokenizer: Any) -> bool:
    """Whether a cleaned review cut at a space tokenizes to the same tokens as that part of the whole.

    True for fast tokenizers whose normalizer works per character and whose pre-tokenizer splits
    at whitespace (BERT, TinyBERT, MiniLM), and whose added tokens hold no whitespace.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        return False
    normalizer, pre_tokenizer = backend.normalizer, backend.pre_tokenizer
    if pre_tokenizer is None or type(pre_tokenizer).__name__ not in _SPLITTING_PRE_TOKENIZERS:
        return False
    if normalizer is not None and type(normalizer).__name__ not in _PER_CHARACTER_NORMALIZERS:
        return False
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return not any(any(char.isspace() for char in str(token)) for token in added.values())


def _plain_backend(tokenizer: Any) -> Tokenizer | None:
    """A copy of a fast tokenizer's Rust tokenizer with truncation and padding off, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or not isinstance(backend, Tokenizer):
        return None
    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    # Not in the JSON: transformers sets it for split_special_tokens=True ("[CLS]" in text is words).
    plain.encode_special_tokens = backend.encode_special_tokens
    return plain


@dataclass(frozen=True)
class _AsciiShortcut:
    """A copy of a BERT tokenizer without its normalizer, for printable ASCII text.

    For such text the BertNormalizer only lowers the case (when it lowercases): nothing is a
    control or Chinese character and nothing has an accent to strip.
    """

    backend: Tokenizer
    lowercase: bool
    #: Added tokens (``[CLS]``, ...), lower-cased, as written and as normalized: a piece holding
    #: one goes the full way, since some are matched before normalizing (lowering them here would
    #: change what matches) and the normalizer can make others ASCII ("café" matches "cafe").
    added: tuple[str, ...]

    def prepared(self, text: str) -> str | None:
        """What the normalizer would make of ``text`` when this copy gives the same ids for it, else None."""
        if not (text.isascii() and text.isprintable()):
            return None
        lowered = text.lower()
        if any(token in lowered for token in self.added):
            return None
        return lowered if self.lowercase else text


def _ascii_shortcut(backend: Tokenizer | None) -> _AsciiShortcut | None:
    """The shortcut for tokenizers whose normalizer is exactly BERT's, else None."""
    if backend is None:
        return None
    spec = backend.to_str()
    normalizer = json.loads(spec).get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return None
    tokens = list(backend.get_added_tokens_decoder().values())
    texts = [token.content for token in tokens]
    # The full tokenizer looks for a normalized=True token's normalized text in the normalized piece.
    texts += [backend.normalizer.normalize_str(token.content) for token in tokens if token.normalized]
    added = tuple(dict.fromkeys(text.lower() for text in texts))
    if len(added) > MAX_ADDED_TOKENS_FOR_SHORTCUT:
        # Looking for each of them in every piece would cost more than the normalizer.
        return None
    bare = Tokenizer.from_str(spec)
    bare.normalizer = None
    return _AsciiShortcut(bare, bool(normalizer.get("lowercase", True)), added)


def _cleaned_start(window: str) -> str:
    """A prefix of ``clean_review(text)`` for any text that starts with ``window``.

    A line break tag that could continue past the window (a ``<`` with no ``>`` after it) is left
    out; every other tag ends inside the window, as the regex cannot pass a ``>``. The last word
    may be cut short, which is harmless: a head piece ends at a space before it.
    """
    opening = window.rfind("<")
    if opening >= 0 and window.find(">", opening) < 0:
        window = window[:opening]
    return clean_review(window)


def _cleaned_end(window: str) -> str:
    """A suffix of ``clean_review(text)`` for any text that ends with ``window``.

    A tag that began before the window can only end at the window's first ``>`` with no ``<``
    before it, so everything up to there is left out. The first word may be cut short, which is
    harmless: a tail piece starts after a space behind it.
    """
    closing = window.find(">")
    if closing >= 0 and window.rfind("<", 0, closing) < 0:
        window = window[closing + 1 :]
    return clean_review(window)


class ReviewEncoder:
    """Cleans, tokenizes and truncates reviews for one tokenizer, max length and truncation mode.

    Raises ``ValueError`` when the tokenizer's special tokens cannot be found or ``max_length``
    leaves no room for text between them.
    """

    def __init__(self, tokenizer: Any, max_length: int, truncation: str) -> None:
        #: The tokenizer's Rust core with truncation and padding off (None for Python tokenizers).
        #: Copied first, so that the test of it sees what the caller set on the original.
        self._backend = _plain_backend(tokenizer)
        self._ascii = _ascii_shortcut(self._backend)
        self.frame = special_token_frame(tokenizer)
        specials = len(self.frame[0]) + len(self.frame[1])
        if max_length <= specials:
            raise ValueError(
                f"max length {max_length} leaves no room for text between the {specials} special tokens"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.head, self.tail = kept_head_tail(max_length - specials, truncation)
        self.cuts_ends = cuts_at_spaces_safely(tokenizer)
        # Reviews shorter than this are tokenized whole: cutting would save little.
        self._whole_below = (self.head + self.tail) * CHARS_PER_TOKEN * 3 // 2
        # Raw characters cleaned at each end of a long review (twice what the piece needs, so that
        # line breaks and runs of whitespace rarely leave it short); longer reviews are not cleaned
        # whole, which was a fifth of the encoding cost at 32 tokens.
        self._head_window = 2 * self.head * CHARS_PER_TOKEN + 32
        self._tail_window = 2 * self.tail * CHARS_PER_TOKEN + 32 if self.tail else 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, at most ``max_length`` per review, in input order."""
        if not self.cuts_ends:
            return [self._framed(row) for row in self._tokenize([clean_review(text) for text in texts])]
        pieces: list[str] = []
        # Per review: where its pieces are in ``pieces`` (head, tail or -1), and whether it is whole.
        layout: list[tuple[int, int, bool]] = []
        for raw in texts:
            ends = self._window_ends(raw)
            if ends is None:
                text = clean_review(raw)
                ends = self._ends(text) if len(text) >= self._whole_below else None
                if ends is None:
                    layout.append((len(pieces), -1, True))
                    pieces.append(text)
                    continue
            layout.append((len(pieces), len(pieces) + 1 if self.tail else -1, False))
            pieces.extend(ends)
        tokenized = self._tokenize(pieces)
        encoded: list[list[int]] = []
        short: list[int] = []
        for index, (first, second, whole) in enumerate(layout):
            head = tokenized[first]
            if whole:
                encoded.append(self._framed(head))
                continue
            tail = tokenized[second] if second >= 0 else []
            if len(head) < self.head or len(tail) < self.tail:
                # A piece came up short of tokens (very long words): this review is tokenized whole.
                short.append(index)
                encoded.append([])
                continue
            kept = head[: self.head] + (tail[len(tail) - self.tail :] if self.tail else [])
            encoded.append([*self.frame[0], *kept, *self.frame[1]])
        if short:
            cleaned = [clean_review(texts[i]) for i in short]
            for index, row in zip(short, self._tokenize(cleaned), strict=True):
                encoded[index] = self._framed(row)
        return encoded

    def _window_ends(self, raw: str) -> tuple[str, ...] | None:
        """What :meth:`_ends` gives for ``clean_review(raw)``, cleaning only the raw ends it needs.

        None when the review is not long enough for that, or when its ends hold so many line
        breaks or spaces that the cleaned window falls short (then the whole review is cleaned).
        """
        if len(raw) <= self._head_window + self._tail_window:
            return None
        start = _cleaned_start(raw[: self._head_window])
        head_end = start.find(" ", self.head * CHARS_PER_TOKEN)
        if head_end < 0:
            return None
        if not self.tail:
            return (start[:head_end],)
        end = _cleaned_end(raw[len(raw) - self._tail_window :])
        tail_start = end.rfind(" ", 0, len(end) - self.tail * CHARS_PER_TOKEN)
        if tail_start < 0:
            return None
        # The windows do not overlap, so the tail piece lies after the head piece, as in _ends.
        return start[:head_end], end[tail_start + 1 :]

    def _ends(self, text: str) -> tuple[str, ...] | None:
        """The head piece (and tail piece) of a long cleaned review, each cut at a space; None if whole."""
        head_end = text.find(" ", self.head * CHARS_PER_TOKEN)
        if head_end < 0:
            return None
        if not self.tail:
            return (text[:head_end],)
        tail_start = text.rfind(" ", head_end, len(text) - self.tail * CHARS_PER_TOKEN)
        if tail_start <= head_end:
            return None
        return text[:head_end], text[tail_start + 1 :]

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        if self._backend is not None:
            if self._ascii is None:
                return self._ids(self._backend, list(texts))
            prepared = [self._ascii.prepared(text) for text in texts]
            fast = self._ids(self._ascii.backend, [text for text in prepared if text is not None])
            full = self._ids(self._backend, [t for t, p in zip(texts, prepared, strict=True) if p is None])
            fast_rows, full_rows = iter(fast), iter(full)
            return [next(full_rows) if text is None else next(fast_rows) for text in prepared]
        # verbose=False: whole reviews are longer than the model takes on purpose; they are cut after.
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
        return list(ids["input_ids"])

    @staticmethod
    def _ids(backend: Tokenizer, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]

    def _framed(self, ids: Sequence[int]) -> list[int]:
        return frame_token_ids(ids, self.frame, self.max_length, self.truncation)
