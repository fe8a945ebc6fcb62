"""Reviews to model input ids: cleaned, tokenized, cut to the budget and framed; one home for both
training and serving, so a model always reads reviews the way it was trained on them.

A review becomes ``frame_token_ids(tokenize(clean_review(text)), ...)`` (see :mod:`sentiq.text`).
For tokenizers that split words at whitespace before anything else (BERT's WordPiece family) no
token crosses a space, so a cleaned review's ids are its words' ids one after the other, and a
long review's kept tokens come from its first (and last) words only: those are taken from its raw
ends, cleaned there alone. A piece that comes up short of tokens (a very long word, text without
spaces) falls back to the whole review. The result is identical either way (tested against
whole-review tokenization).

Fast tokenizers are called through a private copy of their Rust tokenizer
(``encode_batch_fast``, without offsets, where whole texts are tokenized): the transformers
wrapper re-applies truncation and padding settings and builds a dict per review on every call.
Together that was a fifth of the tokenizing cost at the queue ceiling.

Reviews share most of their words, so for those tokenizers the encoder remembers each word's ids
(up to :data:`MAX_CACHED_WORDS` words) and tokenizes only words it has not seen: all of a call's
new words in one batched call, joined by spaces, each token then given to the word its offsets
fall in. A known word costs a dictionary lookup where the Rust tokenizer spent about a microsecond
(common words) to several (rare ones, which WordPiece tries piece by piece). Ids are kept and
joined as C ints (:class:`array.array`), never as one Python int per token, and
:meth:`ReviewEncoder.encode_arrays` hands them on that way.

BERT's normalizer (control characters out, Chinese characters spaced, accents stripped, lower
case) does nothing to printable ASCII but lower its case, yet it was a third of the Rust
tokenizer's time (tracking every character's offsets). New words of printable ASCII are lowered
in Python and tokenized by a second copy without the normalizer; words that hold anything else,
or the text of a special token in any case, go through the full tokenizer.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, pairwise, repeat
from operator import is_
from typing import Any, cast

import numpy as np
from tokenizers import Tokenizer

from sentiq.text import clean_review, kept_head_tail, review_words, special_token_frame

#: Raw characters per kept token that a long review's ends are cleaned over, twice over, so that
#: the window holds the head's (tail's) whole words even with line breaks and runs of whitespace:
#: words give at least one token (nearly all), and IMDB's words average 5.6 characters with a space.
CHARS_PER_TOKEN = 6
#: Tokenizer building blocks that act per character or split words at whitespace, so that cutting
#: a cleaned review at a space cuts its token sequence at the same place.
_SPLITTING_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_PER_CHARACTER_NORMALIZERS = frozenset({"BertNormalizer", "Lowercase", "NFD", "StripAccents"})
#: BERT tokenizers add 5 tokens ([PAD], [UNK], [CLS], [SEP], [MASK]); each is looked for in every
#: printable ASCII piece (about 0.1 us), so a tokenizer with many more keeps its normalizer.
MAX_ADDED_TOKENS_FOR_SHORTCUT = 32
#: Words whose ids an encoder remembers; when full, it starts again from the words of the call that
#: found it full (see :data:`MAX_CACHED_BYTES` and :data:`LEARN_ALL_BELOW_WORDS`). IMDB's 25,000 test
#: reviews hold 261,091 distinct words (what lies between spaces, punctuation included); the most
#: frequent 131,072 of them make up 97.7 % of all. 256,186 remembered words took 44 MiB.
MAX_CACHED_WORDS = 1 << 18
#: Longer words are never remembered (a review holding one is tokenized whole); 16 of those
#: 261,091 words are longer.
MAX_CACHED_WORD_CHARS = 64
#: What the remembered words may take, estimated as :func:`_entry_bytes` counts; realistic words
#: reach :data:`MAX_CACHED_WORDS` first (an estimated 41 MiB), hostile ones (long words of wide
#: characters, many ids each) this. A call whose own words do not fit keeps them to itself.
MAX_CACHED_BYTES = 64 << 20
#: Past this many remembered words, a call in which most words are new (random or foreign text)
#: tokenizes its texts whole and learns nothing: remembering words costs more than tokenizing them
#: once (offsets and a Python object per word), and such words rarely come back.
LEARN_ALL_BELOW_WORDS = 1 << 14
#: New words are tokenized joined by spaces, this many to a text: the tokenizer's cost per text
#: (about 12 us) made one text per word ten times slower.
WORDS_PER_CALL = 512
#: The C type of the ids in :meth:`ReviewEncoder.encode_arrays` (numpy: ``numpy.intc``).
ID_TYPECODE = "i"


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

    def sort_words(self, words: list[str]) -> tuple[list[str], list[str], list[str]]:
        """``words`` (no whitespace in them) as (for the full tokenizer, for this copy, and the
        latter's texts from :meth:`prepared`), looked at together rather than one by one."""
        joined = " ".join(words)
        # Mostly so: then no word needs looking at alone.
        every = joined.isascii() and joined.isprintable()
        fast = words if every else [word for word in words if word.isascii() and word.isprintable()]
        # No added token holds whitespace, so none can match across the spaces joining the words.
        lowered = (joined if every else " ".join(fast)).lower()
        if any(token in lowered for token in self.added):
            texts = [self.prepared(word) for word in words]
            fast = [word for word, text in zip(words, texts, strict=True) if text is not None]
            full = [word for word, text in zip(words, texts, strict=True) if text is None]
            return full, fast, [text for text in texts if text is not None]
        full = [] if every else [word for word in words if not (word.isascii() and word.isprintable())]
        if not self.lowercase:
            return full, fast, fast
        return full, fast, lowered.split(" ") if fast else []


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


def _start_words(window: str) -> list[str]:
    """The first words of ``review_words(text)`` for any text that starts with ``window``; the last
    one may be cut short.

    A line break tag that could continue past the window (a ``<`` with no ``>`` after it) is left
    out; every other tag ends inside the window, as the regex cannot pass a ``>``.
    """
    opening = window.rfind("<")
    if opening >= 0 and window.find(">", opening) < 0:
        window = window[:opening]
    return review_words(window)


def _end_words(window: str) -> list[str]:
    """The last words of ``review_words(text)`` for any text that ends with ``window``; the first
    one may be cut short.

    A tag that began before the window can only end at the window's first ``>`` with no ``<``
    before it, so everything up to there is left out.
    """
    closing = window.find(">")
    if closing >= 0 and window.rfind("<", 0, closing) < 0:
        window = window[closing + 1 :]
    return review_words(window)


def _ids_by_word(backend: Tokenizer, words: list[str]) -> list[bytes]:
    """The ids ``backend`` gives each of ``words`` (no spaces in them), as C ints.

    The words are tokenized joined by single spaces, :data:`WORDS_PER_CALL` to a text, all texts
    in one batched call, and each token goes to the word its offsets start in. No token crosses a
    space for the tokenizers this is used with (:func:`cuts_at_spaces_safely`), and none takes the
    space before it along (:func:`_takes_spaces_before`).
    """
    if not words:
        return []
    chunks = [words[start : start + WORDS_PER_CALL] for start in range(0, len(words), WORDS_PER_CALL)]
    encodings = backend.encode_batch([" ".join(chunk) for chunk in chunks], add_special_tokens=False)
    found: list[bytes] = []
    for chunk, encoding in zip(chunks, encodings, strict=True):
        # Where each word's space is (the last one's is just past the end of the text); a token
        # belongs to the word whose space is the first one after where it starts.
        spaces = np.cumsum(np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk)) + 1) - 1
        starts = np.array([start for start, _ in encoding.offsets], dtype=np.int64)
        owners = np.searchsorted(spaces, starts, side="right")
        if owners.size and (owners[-1] >= len(chunk) or bool((np.diff(owners) < 0).any())):
            raise RuntimeError("the tokenizer's offsets do not follow its text; words cannot be told apart")
        bounds = np.searchsorted(owners, np.arange(len(chunk) + 1), side="left").tolist()
        ids = array(ID_TYPECODE, encoding.ids).tobytes()
        size = array(ID_TYPECODE).itemsize
        found.extend(ids[size * first : size * end] for first, end in pairwise(bounds))
    return found


def _entry_bytes(word: str, ids: bytes) -> int:
    """About what remembering ``word`` with ``ids`` takes: its text at 4 bytes a character (the
    widest), its ids, and ~150 bytes of object headers and dictionary slot."""
    return 150 + 4 * len(word) + len(ids)


@dataclass
class _RememberedWords:
    """Words and their ids as C ints, with about what they take (:func:`_entry_bytes`)."""

    ids: dict[str, bytes] = field(default_factory=dict)
    size: int = 0


def _takes_spaces_before(backend: Tokenizer | None) -> bool:
    """Whether an added token of ``backend`` takes the whitespace before it along (``lstrip``).

    Its offsets then start at that whitespace, which after normalizing can reach back into the word
    before: one that normalizes to nothing (control characters) or ends in a Chinese character
    (spaced by the normalizer). :func:`_ids_by_word` would give the token to that word.
    """
    return backend is not None and any(token.lstrip for token in backend.get_added_tokens_decoder().values())


class ReviewEncoder:
    """Cleans, tokenizes and truncates reviews for one tokenizer, max length and truncation mode.

    Raises ``ValueError`` when the tokenizer's special tokens cannot be found or ``max_length``
    leaves no room for text between them.
    """

    def __init__(self, tokenizer: Any, max_length: int, truncation: str) -> None:
        #: The tokenizer's Rust core with truncation and padding off (None for Python tokenizers).
        #: Copied first, so that the test of it sees what the caller set on the original.
        self._backend = _plain_backend(tokenizer)
        self._encode_special_tokens = self._backend is not None and self._backend.encode_special_tokens
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
        # Raw characters cleaned at each end of a long review (see CHARS_PER_TOKEN); longer reviews
        # are not cleaned whole, which was a fifth of the encoding cost at 32 tokens.
        self._head_window = 2 * self.head * CHARS_PER_TOKEN + 32
        self._tail_window = 2 * self.tail * CHARS_PER_TOKEN + 32 if self.tail else 0
        self._prefix = array(ID_TYPECODE, self.frame[0])
        self._suffix = array(ID_TYPECODE, self.frame[1])
        #: Words seen so far and their ids (see :meth:`_tokenize_words`; ``cuts_ends`` only).
        self._words = _RememberedWords()
        #: Held while the remembered words are checked for room and added to or replaced.
        self._learning = threading.Lock()
        # Where words cannot be told their tokens by offsets, pieces are tokenized whole (rare).
        self._remembers_words = not _takes_spaces_before(self._backend)

    def __getstate__(self) -> dict[str, Any]:
        # The remembered words are a memo, not state: a copy (datasets.map's worker processes, the
        # fingerprint datasets takes of a mapped function) starts without them.
        state = self.__dict__.copy()
        state["_words"] = _RememberedWords()
        del state["_learning"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._learning = threading.Lock()
        if self._backend is not None:
            # Not in the tokenizer's JSON, so a copied Rust tokenizer lost it (see _plain_backend).
            self._backend.encode_special_tokens = self._encode_special_tokens

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, at most ``max_length`` per review, in input order."""
        return [row.tolist() for row in self.encode_arrays(texts)]

    def encode_arrays(self, texts: Sequence[str]) -> list[array[int]]:
        """:meth:`encode`, each review's ids as an ``array`` of C ints (:data:`ID_TYPECODE`).

        For the serving path: a Python int per token cost more than the rest of encoding together.
        """
        if not self.cuts_ends:
            cleaned = [clean_review(text) for text in texts]
            return [self._framed(array(ID_TYPECODE, row)) for row in self._tokenize(cleaned)]
        pieces: list[list[str]] = []
        # Per review: where its pieces are in ``pieces`` (head, tail or -1), and whether it is whole.
        layout: list[tuple[int, int, bool]] = []
        for raw in texts:
            ends = self._window_words(raw)
            if ends is None:
                layout.append((len(pieces), -1, True))
                pieces.append(review_words(raw))
                continue
            layout.append((len(pieces), len(pieces) + 1 if self.tail else -1, False))
            pieces.extend(ends)
        tokenized = self._tokenize_words(pieces)
        encoded: list[array[int]] = []
        short: list[int] = []
        for index, (first, second, whole) in enumerate(layout):
            head = tokenized[first]
            if whole:
                encoded.append(self._framed(head))
                continue
            tail = tokenized[second] if second >= 0 else array(ID_TYPECODE)
            if len(head) < self.head or len(tail) < self.tail:
                # A piece came up short of tokens (very long words): this review is tokenized whole.
                short.append(index)
                encoded.append(array(ID_TYPECODE))
                continue
            encoded.append(self._prefix + head[: self.head] + tail[len(tail) - self.tail :] + self._suffix)
        if short:
            words = [review_words(texts[index]) for index in short]
            for index, row in zip(short, self._tokenize_words(words), strict=True):
                encoded[index] = self._framed(row)
        return encoded

    def _window_words(self, raw: str) -> tuple[list[str], ...] | None:
        """The first ``head`` words (and last ``tail`` words) of ``review_words(raw)``, cleaning only
        the raw ends they lie in; None for a review not long enough for that (looked up whole).

        Each word gives at least one token but for the few the normalizer removes whole (control
        characters): a piece short of tokens is caught after the lookup.
        """
        if len(raw) <= self._head_window + self._tail_window:
            return None
        # The last word of a window may be cut, so it is never taken.
        head = _start_words(raw[: self._head_window])[:-1][: self.head]
        if not self.tail:
            return (head,)
        tail = _end_words(raw[len(raw) - self._tail_window :])[1:][-self.tail :]
        # The windows do not overlap, so the tail's words come after the head's in the review.
        return head, tail

    def _tokenize_words(self, texts: Sequence[list[str]]) -> list[array[int]]:
        """The ids of texts given as their words (a cleaned text split at its spaces), put together
        from the words' ids.

        Words not seen before are tokenized first, together, and remembered (:meth:`_learn_words`).
        A text with a word longer than :data:`MAX_CACHED_WORD_CHARS` is tokenized whole, and so
        are a call's texts when most of their words are new (:data:`LEARN_ALL_BELOW_WORDS`); so
        are all texts for a tokenizer whose tokens cannot be told their words by offsets.
        """
        if not self._remembers_words:
            return [array(ID_TYPECODE, ids) for ids in self._tokenize([" ".join(words) for words in texts])]
        remembered = self._words
        lookup = remembered.ids.get
        # join raises TypeError at a None: a word not seen yet (what the except clauses rely on).
        join = cast(Callable[[Iterable[bytes | None]], bytes], b"".join)
        rows: list[array[int]] = []
        unseen: list[tuple[int, list[str]]] = []
        new: set[str] = set()
        for words in texts:
            looked = list(map(lookup, words))
            row = array(ID_TYPECODE)
            try:
                row.frombytes(join(looked))
            except TypeError:  # join met a None: a word not seen before
                unseen.append((len(rows), words))
                new.update(compress(words, map(is_, looked, repeat(None))))
            rows.append(row)
        if not unseen:
            return rows
        whole: list[int] = []
        if len(remembered.ids) < LEARN_ALL_BELOW_WORDS or 2 * len(new) <= sum(len(w) for _, w in unseen):
            lookup = self._learn_words(remembered, new, [words for _, words in unseen]).get
            for index, words in unseen:
                try:
                    rows[index].frombytes(join(map(lookup, words)))
                except TypeError:  # a word too long to remember
                    whole.append(index)
        else:
            whole = [index for index, _ in unseen]
        cleaned = [" ".join(texts[index]) for index in whole]
        for index, ids in zip(whole, self._tokenize(cleaned), strict=True):
            rows[index] = array(ID_TYPECODE, ids)
        return rows

    def _learn_words(
        self, remembered: _RememberedWords, new: set[str], texts: list[list[str]]
    ) -> dict[str, bytes]:
        """Tokenize ``new`` words (which ``remembered`` lacks) and remember them; returns a
        dictionary with every word of ``texts`` (the texts that hold them) short enough to remember.

        When they do not fit, a new set of remembered words, those of ``texts``, replaces the old
        one (replaced, not cleared, so that another thread encoding at the same time keeps a
        consistent one); when even those do not fit, they are this call's alone.
        """
        learned = self._word_ids_of([word for word in new if len(word) <= MAX_CACHED_WORD_CHARS])
        with self._learning:
            # Words another thread learned meanwhile are neither added nor counted twice.
            learned = [(word, ids) for word, ids in learned if word not in remembered.ids]
            size = sum(_entry_bytes(word, ids) for word, ids in learned)
            if (
                len(remembered.ids) + len(learned) <= MAX_CACHED_WORDS
                and remembered.size + size <= MAX_CACHED_BYTES
            ):
                remembered.ids.update(learned)
                remembered.size += size
                return remembered.ids
            # The texts' other words are known already: copied, not tokenized again.
            known = remembered.ids
            kept = {word: known[word] for word in set(chain.from_iterable(texts)) if word in known}
            kept.update(learned)
            fresh = _RememberedWords(kept, sum(_entry_bytes(word, ids) for word, ids in kept.items()))
            if len(fresh.ids) <= MAX_CACHED_WORDS and fresh.size <= MAX_CACHED_BYTES:
                self._words = fresh
            return fresh.ids

    def _word_ids_of(self, words: list[str]) -> list[tuple[str, bytes]]:
        """Each word with its ids as C ints, printable ASCII ones through the shortcut."""
        if self._backend is None:  # cuts_ends implies a fast tokenizer; kept for the type checker
            raise TypeError("words are tokenized by fast tokenizers only")
        shortcut = self._ascii
        if shortcut is None:
            return list(zip(words, _ids_by_word(self._backend, words), strict=True))
        full, fast, prepared = shortcut.sort_words(words)
        return [
            *zip(full, _ids_by_word(self._backend, full), strict=True),
            *zip(fast, _ids_by_word(shortcut.backend, prepared), strict=True),
        ]

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

    def _framed(self, ids: array[int]) -> array[int]:
        """``ids`` cut to the budget and framed, as :func:`sentiq.text.frame_token_ids` does."""
        if len(ids) > self.head + self.tail:
            ids = ids[: self.head] + ids[len(ids) - self.tail :]
        return self._prefix + ids + self._suffix
