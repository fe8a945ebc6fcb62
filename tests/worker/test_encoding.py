"""worker.encoding: tokenizing only the kept ends of a long review gives exactly the whole-review ids."""

from __future__ import annotations

import copy
import gzip
import pickle
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer

from sentiq.text import clean_review, frame_token_ids, special_token_frame
from worker import encoding
from worker.encoding import (
    CHARS_PER_TOKEN,
    MAX_ADDED_TOKENS_FOR_SHORTCUT,
    ReviewEncoder,
    _end_words,
    _start_words,
    cuts_at_spaces_safely,
)

SAMPLE = Path(__file__).resolve().parents[2] / "sentiq" / "data" / "imdb_test_sample.csv.gz"


def reference_ids(tokenizer: Any, text: str, max_length: int, truncation: str) -> list[int]:
    """The definition: the whole cleaned review tokenized, then cut and framed."""
    ids = tokenizer(clean_review(text), add_special_tokens=False, verbose=False)["input_ids"]
    return frame_token_ids(ids, special_token_frame(tokenizer), max_length, truncation)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from training.base_model import bundled_model_path

    return AutoTokenizer.from_pretrained(str(bundled_model_path()))


@pytest.fixture(scope="module")
def imdb_reviews() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        return list(pd.read_csv(handle, keep_default_na=False)["review"])


@pytest.fixture(params=["tiny_tokenizer", "minilm_tokenizer"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("A Fine, FINE film!", True),
        ("plain words", True),
        ("café", False),
        ("tab\tinside", False),
        ("bell\x07", False),
        ("del\x7f", False),
        ("[CLS] first", False),
        ("lower [cls] too", False),
        ("[unk]", False),
    ],
)
def test_only_printable_ascii_without_special_tokens_skips_the_normalizer(
    minilm_tokenizer: Any, text: str, taken: bool
) -> None:
    encoder = ReviewEncoder(minilm_tokenizer, 32, "head")
    assert encoder._ascii is not None
    assert (encoder._ascii.prepared(text) is not None) is taken
    # Either way the ids are the whole review's.
    assert encoder.encode([text]) == [reference_ids(minilm_tokenizer, text, 32, "head")]


def with_normalizer(tokenizer: Any, normalizer: dict[str, Any]) -> Any:
    """A fast tokenizer like ``tokenizer`` (BERT's special tokens) with another normalizer."""
    import json

    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["normalizer"] = normalizer
    specials = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]"}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), mask_token="[MASK]", **specials
    )


def test_a_cased_bert_tokenizer_keeps_its_case_on_the_shortcut(minilm_tokenizer: Any) -> None:
    bert = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True}
    cased = with_normalizer(minilm_tokenizer, {**bert, "strip_accents": None, "lowercase": False})
    encoder = ReviewEncoder(cased, 32, "head")
    assert encoder._ascii is not None and not encoder._ascii.lowercase
    texts = ["GOOD Film", "good film", "Naïve GOOD"]
    assert encoder.encode(texts) == [reference_ids(cased, t, 32, "head") for t in texts]
    assert encoder.encode(["GOOD"]) != encoder.encode(["good"])


@pytest.mark.parametrize(
    ("content", "texts"),
    [
        ("café", ["a cafe here", "CAFE"]),  # accents stripped
        ("\u0130", ["i am", "I"]),  # stripped, then lowered: "i"
        ("ab\x07c", ["abc d"]),  # control characters out
    ],
)
def test_an_added_token_that_normalizes_to_ascii_keeps_the_normalizer(
    minilm_tokenizer: Any, content: str, texts: list[str]
) -> None:
    # tokenizer.add_tokens gives normalized=True: the full tokenizer matches the token's normalized
    # text, which is printable ASCII though the token is not.
    bert = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "lowercase": True}
    extended = with_normalizer(minilm_tokenizer, bert)
    extended.add_tokens([AddedToken(content, normalized=True)])
    encoder = ReviewEncoder(extended, 32, "head")
    assert encoder._ascii is not None
    assert encoder.encode(texts) == [reference_ids(extended, t, 32, "head") for t in texts]
    assert all(extended.convert_tokens_to_ids(content) in ids for ids in encoder.encode(texts))


def test_split_special_tokens_reads_their_text_as_words() -> None:
    from transformers import AutoTokenizer

    from training.base_model import bundled_model_path

    split = AutoTokenizer.from_pretrained(str(bundled_model_path()), split_special_tokens=True)
    texts = ["a [CLS] b", "[MASK]", "é [SEP]", "good [sep] film"]
    encoder = ReviewEncoder(split, 32, "head")
    assert encoder.encode(texts) == [reference_ids(split, t, 32, "head") for t in texts]
    assert split.mask_token_id not in encoder.encode(["[MASK]"])[0]


def test_a_tokenizer_with_many_added_tokens_keeps_its_normalizer(minilm_tokenizer: Any) -> None:
    bert = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "lowercase": True}
    many = with_normalizer(minilm_tokenizer, bert)
    many.add_tokens([f"<extra_{n}>" for n in range(MAX_ADDED_TOKENS_FOR_SHORTCUT)])
    encoder = ReviewEncoder(many, 32, "head")
    assert encoder._ascii is None
    texts = ["a <extra_3> review", "GOOD film"]
    assert encoder.encode(texts) == [reference_ids(many, t, 32, "head") for t in texts]


def test_other_normalizers_get_no_shortcut(minilm_tokenizer: Any) -> None:
    other = with_normalizer(
        minilm_tokenizer, {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}
    )
    encoder = ReviewEncoder(other, 32, "head")
    assert encoder._ascii is None
    texts = ["ＦＵＬＬ width", "GOOD film"]
    assert encoder.encode(texts) == [reference_ids(other, t, 32, "head") for t in texts]


def test_bert_tokenizers_take_the_fast_path(tokenizer: Any) -> None:
    # Otherwise every other test here would compare the whole-review path with itself.
    assert cuts_at_spaces_safely(tokenizer)
    assert ReviewEncoder(tokenizer, 32, "head_tail").cuts_ends


@pytest.mark.parametrize("max_length", [3, 4, 16, 32, 128, 300])
@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_real_reviews_encode_exactly_as_whole_reviews(
    tokenizer: Any, imdb_reviews: list[str], max_length: int, truncation: str
) -> None:
    encoder = ReviewEncoder(tokenizer, max_length, truncation)
    assert encoder.encode(imdb_reviews) == [
        reference_ids(tokenizer, text, max_length, truncation) for text in imdb_reviews
    ]


def test_only_the_ends_of_a_long_review_are_tokenized(
    tiny_tokenizer: Any, imdb_reviews: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_words, real_texts = encoding._ids_by_word, ReviewEncoder._tokenize

    def words(backend: Any, words: list[str]) -> list[bytes]:
        seen.extend(len(word) + 1 for word in words)
        return real_words(backend, words)

    def texts(self: ReviewEncoder, texts: list[str]) -> list[list[int]]:
        seen.extend(map(len, texts))
        return real_texts(self, texts)

    monkeypatch.setattr(encoding, "_ids_by_word", words)
    monkeypatch.setattr(ReviewEncoder, "_tokenize", texts)
    encoder = ReviewEncoder(tiny_tokenizer, 32, "head_tail")
    longest = max(imdb_reviews, key=len)
    encoder.encode([longest])
    assert len(longest) > 4_000
    assert 0 < sum(seen) <= 32 * CHARS_PER_TOKEN * 2


def test_truncation_or_padding_set_on_the_tokenizer_changes_nothing(
    minilm_tokenizer: Any, imdb_reviews: list[str]
) -> None:
    from transformers import AutoTokenizer

    from training.base_model import bundled_model_path

    # A tokenizer of its own: the reference call below resets what is set here.
    configured = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    configured.backend_tokenizer.enable_truncation(max_length=5)
    configured.backend_tokenizer.enable_padding(length=400)
    encoder = ReviewEncoder(configured, 128, "head_tail")
    texts = [*imdb_reviews[:40], "short one", "x" * 3000]
    assert encoder.encode(texts) == [reference_ids(minilm_tokenizer, t, 128, "head_tail") for t in texts]


def test_python_tokenizers_are_called_as_they_are(
    tiny_tokenizer: Any, imdb_reviews: list[str], tmp_path: Path
) -> None:
    from transformers import BertTokenizerLegacy

    vocab = sorted(tiny_tokenizer.get_vocab().items(), key=lambda item: item[1])
    (tmp_path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    slow = BertTokenizerLegacy(vocab_file=str(tmp_path / "vocab.txt"))  # type: ignore[no-untyped-call]
    encoder = ReviewEncoder(slow, 32, "head_tail")
    assert not slow.is_fast and not encoder.cuts_ends
    texts = imdb_reviews[:10]
    assert encoder.encode(texts) == [reference_ids(slow, t, 32, "head_tail") for t in texts]


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_pieces_short_of_tokens_fall_back_to_the_whole_review(tiny_tokenizer: Any, truncation: str) -> None:
    encoder = ReviewEncoder(tiny_tokenizer, 16, truncation)
    texts = [
        # One huge "word" at each end: the cut pieces hold too few tokens.
        "x" * 500 + " good " * 40 + "y" * 500,
        # No space anywhere: nothing can be cut.
        "bad" * 400,
        # Punctuation splits tokens without spaces: many tokens in few characters.
        "!?" * 300 + " fine " + ".," * 300,
    ]
    assert encoder.encode(texts) == [reference_ids(tiny_tokenizer, text, 16, truncation) for text in texts]


_WORDS = st.sampled_from(
    [
        "good",
        "bad",
        "film",
        "unbelievably",
        "naïve",
        "Ünïcödé",
        "[SEP]",
        "[CLS]",
        "日本語",
        "x" * 120,
        "a-b",
        "...",
        # Printable ASCII takes the shortcut past the normalizer (lowered in Python); these must
        # not, or must give the same ids there: upper case, special tokens' text in other cases,
        # control characters and DEL.
        "GOOD",
        "Don't",
        "[cls]",
        "[Sep]",
        "x[MASK]y",
        "\x07",
        "\x7f",
        "a\x00b",
        "\x1b[0m",
    ]
)
_TEXTS = st.lists(
    st.one_of(_WORDS, st.text(min_size=1, max_size=12)),
    min_size=0,
    max_size=120,
).flatmap(
    lambda words: st.lists(
        st.sampled_from([" ", "  ", "\n", "\t", "<br />", " <br /><br /> ", "\u00a0", ""]),
        min_size=len(words),
        max_size=len(words),
    ).map(lambda gaps: "".join(word + gap for word, gap in zip(words, gaps, strict=True)))
)


_TAG_BITS = st.sampled_from(
    [
        "<",
        ">",
        "<br",
        "br",
        "/>",
        "<br />",
        "<BR/>",
        "< br / >",
        "<\tbr\n>",
        "<br >",
        "<<",
        ">>",
        "</",
        "x<y",
        "a>b",
    ]
)
_SPACES = st.sampled_from([" ", "  ", "\n", "\t\t", "\u00a0", " <br /><br /> ", "<br />", ""])
_LONG_TEXTS = st.lists(
    st.tuples(st.one_of(_WORDS, _TAG_BITS, st.text(min_size=1, max_size=6)), _SPACES),
    min_size=60,
    max_size=400,
).map(lambda parts: "".join(word + gap for word, gap in parts))


@pytest.mark.parametrize("tag", ["<br />", "< br\t/ >", "<br>", "<", ">", "  \n  "])
@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_a_tag_anywhere_around_the_cleaned_ends_changes_nothing(
    tiny_tokenizer: Any, tag: str, truncation: str
) -> None:
    encoder = ReviewEncoder(tiny_tokenizer, 12, truncation)
    words = " ".join(f"w{n % 7}" for n in range(400))
    windows = (
        [encoder._head_window, len(words) - encoder._tail_window] if encoder.tail else [encoder._head_window]
    )
    texts = [
        words[:at] + tag + words[at:]
        for edge in windows
        for at in range(max(0, edge - 12), min(len(words), edge + 12))
    ]
    assert encoder.encode(texts) == [reference_ids(tiny_tokenizer, t, 12, truncation) for t in texts]


@hypothesis_settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Short texts, and long ones full of line break tags and whitespace runs, which only their
    # ends are cleaned of: a tag or run can straddle where an end is cut.
    texts=st.lists(st.one_of(_TEXTS, _LONG_TEXTS), min_size=1, max_size=6),
    max_length=st.integers(min_value=3, max_value=40),
    truncation=st.sampled_from(["head", "head_tail"]),
)
def test_any_text_encodes_exactly_as_the_whole_review(
    minilm_tokenizer: Any,
    prototypes: dict[tuple[int, str], ReviewEncoder],
    texts: list[str],
    max_length: int,
    truncation: str,
) -> None:
    if (max_length, truncation) not in prototypes:
        prototypes[max_length, truncation] = ReviewEncoder(minilm_tokenizer, max_length, truncation)
    # A copy remembers no words: every example starts from first sight (and skips building one).
    encoder = copy.copy(prototypes[max_length, truncation])
    assert encoder.encode(texts) == [
        reference_ids(minilm_tokenizer, t, max_length, truncation) for t in texts
    ]


@pytest.fixture(scope="module")
def prototypes() -> dict[tuple[int, str], ReviewEncoder]:
    """Encoders by max length and truncation, built once, for tests that use copies of them."""
    return {}


@hypothesis_settings(max_examples=400, deadline=None)
@given(text=_LONG_TEXTS, window=st.integers(min_value=1, max_value=400))
def test_a_cleaned_window_is_exactly_the_start_or_end_of_the_cleaned_review(text: str, window: int) -> None:
    # What the encoder relies on when it cleans only the ends of a long review: whatever the window
    # cuts (a line break tag, a run of whitespace, a word), nothing in it differs from the whole.
    # The window's cut word (last of the start, first of the end) may be a part of a word only.
    whole = clean_review(text)
    assert whole.startswith(" ".join(_start_words(text[:window])))
    assert whole.endswith(" ".join(_end_words(text[-window:])))


def test_tokenizers_that_do_not_split_at_spaces_tokenize_whole_reviews(tiny_tokenizer: Any) -> None:
    from tokenizers import pre_tokenizers

    backend = tiny_tokenizer.backend_tokenizer
    original = backend.pre_tokenizer
    try:
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        assert not cuts_at_spaces_safely(tiny_tokenizer)
        assert not ReviewEncoder(tiny_tokenizer, 16, "head").cuts_ends
    finally:
        backend.pre_tokenizer = original
    assert cuts_at_spaces_safely(tiny_tokenizer)


@pytest.fixture(scope="module")
def shared_encoders(minilm_tokenizer: Any) -> dict[tuple[int, str], ReviewEncoder]:
    """One encoder per max length and truncation for a whole hypothesis run: the words it remembers
    from earlier examples are looked up in later ones."""
    return {
        (max_length, truncation): ReviewEncoder(minilm_tokenizer, max_length, truncation)
        for max_length in (8, 40)
        for truncation in ("head", "head_tail")
    }


@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.one_of(_TEXTS, _LONG_TEXTS), min_size=1, max_size=6),
    max_length=st.sampled_from([8, 40]),
    truncation=st.sampled_from(["head", "head_tail"]),
)
def test_remembered_words_give_the_whole_reviews_ids(
    minilm_tokenizer: Any,
    shared_encoders: dict[tuple[int, str], ReviewEncoder],
    texts: list[str],
    max_length: int,
    truncation: str,
) -> None:
    encoder = shared_encoders[(max_length, truncation)]
    assert encoder.encode(texts) == [
        reference_ids(minilm_tokenizer, t, max_length, truncation) for t in texts
    ]


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.one_of(_TEXTS, _LONG_TEXTS), min_size=1, max_size=6),
    truncation=st.sampled_from(["head", "head_tail"]),
)
def test_remembered_words_give_the_whole_reviews_ids_at_every_limit(
    minilm_tokenizer: Any,
    shared_small_encoders: dict[str, ReviewEncoder],
    texts: list[str],
    truncation: str,
) -> None:
    # Limits so small that calls replace the remembered words, keep theirs to themselves and skip
    # learning, all with words remembered from earlier examples.
    with (
        mock.patch.object(encoding, "MAX_CACHED_WORDS", 64),
        mock.patch.object(encoding, "MAX_CACHED_BYTES", 12_000),
        mock.patch.object(encoding, "LEARN_ALL_BELOW_WORDS", 16),
    ):
        encoded = shared_small_encoders[truncation].encode(texts)
    assert encoded == [reference_ids(minilm_tokenizer, t, 24, truncation) for t in texts]


@pytest.fixture(scope="module")
def shared_small_encoders(minilm_tokenizer: Any) -> dict[str, ReviewEncoder]:
    return {
        truncation: ReviewEncoder(minilm_tokenizer, 24, truncation) for truncation in ("head", "head_tail")
    }


def test_words_are_remembered_and_looked_up(tiny_tokenizer: Any, imdb_reviews: list[str]) -> None:
    encoder = ReviewEncoder(tiny_tokenizer, 64, "head_tail")
    first = encoder.encode(imdb_reviews[:50])
    assert "the" in encoder._words.ids
    tokenized: list[int] = []
    real = encoding._ids_by_word

    def recording(backend: Any, words: list[str]) -> list[bytes]:
        tokenized.extend(map(len, words))
        return real(backend, words)

    with mock.patch.object(encoding, "_ids_by_word", recording):
        again = encoder.encode(imdb_reviews[:50])
    # Every word of the same reviews is known now: nothing goes to the tokenizer.
    assert again == first and tokenized == []


def test_a_full_word_cache_starts_again_and_stays_exact(
    tiny_tokenizer: Any, imdb_reviews: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "MAX_CACHED_WORDS", 300)
    whole: list[str] = []
    real = ReviewEncoder._tokenize

    def tokenize(self: ReviewEncoder, texts: list[str]) -> list[list[int]]:
        whole.extend(texts)
        return real(self, texts)

    # Only a text holding a word too long to remember is tokenized whole, full cache or not.
    monkeypatch.setattr(ReviewEncoder, "_tokenize", tokenize)
    encoder = ReviewEncoder(tiny_tokenizer, 64, "head_tail")
    started_again = 0
    for start in range(0, 120, 4):
        batch = imdb_reviews[start : start + 4]
        before = encoder._words
        assert encoder.encode(batch) == [reference_ids(tiny_tokenizer, t, 64, "head_tail") for t in batch]
        started_again += encoder._words is not before
        assert len(encoder._words.ids) <= 300
    assert started_again > 3
    assert all(max(map(len, text.split())) > encoding.MAX_CACHED_WORD_CHARS for text in whole)


def test_words_too_long_to_remember_are_tokenized_with_their_review(tiny_tokenizer: Any) -> None:
    long = "supercalifragilistic" * 4
    assert len(long) > encoding.MAX_CACHED_WORD_CHARS
    encoder = ReviewEncoder(tiny_tokenizer, 32, "head")
    texts = [f"good {long} film", long, "plain words", f"{long}!"]
    for _ in range(2):
        assert encoder.encode(texts) == [reference_ids(tiny_tokenizer, t, 32, "head") for t in texts]
    assert "good" in encoder._words.ids and "words" in encoder._words.ids
    assert not any(len(word) > encoding.MAX_CACHED_WORD_CHARS for word in encoder._words.ids)


def test_a_copy_of_an_encoder_starts_without_the_words(tiny_tokenizer: Any, imdb_reviews: list[str]) -> None:
    encoder = ReviewEncoder(tiny_tokenizer, 64, "head_tail")
    ids = encoder.encode(imdb_reviews[:20])
    assert encoder._words.ids
    copied = pickle.loads(pickle.dumps(encoder))
    assert copied._words.ids == {}
    assert copied.encode(imdb_reviews[:20]) == ids


def test_a_copy_of_an_encoder_reads_special_tokens_text_as_the_original_does() -> None:
    from transformers import AutoTokenizer

    from training.base_model import bundled_model_path

    split = AutoTokenizer.from_pretrained(str(bundled_model_path()), split_special_tokens=True)
    texts = ["movie [CLS] here", "[MASK]"]
    copied = pickle.loads(pickle.dumps(ReviewEncoder(split, 32, "head")))
    assert copied.encode(texts) == [reference_ids(split, t, 32, "head") for t in texts]


def test_threads_sharing_an_encoder_get_exact_ids(
    tiny_tokenizer: Any, imdb_reviews: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small limit, so that the dictionary is replaced while other threads look words up.
    monkeypatch.setattr(encoding, "MAX_CACHED_WORDS", 200)
    encoder = ReviewEncoder(tiny_tokenizer, 64, "head_tail")
    batches = [imdb_reviews[start : start + 3] for start in range(0, 90, 3)]
    expected = [[reference_ids(tiny_tokenizer, t, 64, "head_tail") for t in batch] for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(encoder.encode, batches)) == expected


def test_added_tokens_that_take_spaces_along_stay_with_their_word() -> None:
    from transformers import AutoTokenizer

    from training.base_model import bundled_model_path

    extended = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    extended.add_tokens(
        [
            AddedToken("<movie>", lstrip=True, rstrip=True),
            AddedToken("zzq", single_word=True),
            AddedToken("qqz", lstrip=True),
        ]
    )
    encoder = ReviewEncoder(extended, 32, "head_tail")
    assert encoder.cuts_ends
    texts = [
        "a <movie> b",
        "<movie> first and last <movie>",
        "x<movie>y and <movie><movie>",
        "zzq zzqzzq azzq zzq.",
        "one qqz two qqzqqz",
        # Long: only the windows at the ends are cleaned and looked at.
        "<movie> qqz " + "plain words here " * 60 + "qqz <movie>",
    ]
    encoded = encoder.encode(texts)
    assert encoded == [reference_ids(extended, t, 32, "head_tail") for t in texts]
    # Such tokens can take their offsets into the word before (see the next test): no words remembered.
    assert not encoder._words.ids
    assert extended.convert_tokens_to_ids("<movie>") in encoded[0]


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_a_word_cut_by_a_window_is_never_taken(minilm_tokenizer: Any, truncation: str) -> None:
    # Line breaks, then a word that is one token whole and other tokens in part, which a window's
    # edge cuts in two: the whole words in the window give too few tokens, so the review must be
    # looked up whole; the cut part would have made up the count with tokens of another word.
    assert len(minilm_tokenizer.tokenize("beautiful")) == 1
    encoder = ReviewEncoder(minilm_tokenizer, 5, truncation)
    middle = " w" * 60
    texts = [
        *("<br />" * 9 + " " * pad + "beautiful" + middle + " z" for pad in range(16)),
        *("a" + middle + " beautiful" + " " * pad + "<br />" * 7 + " z" for pad in range(16)),
    ]
    assert all(len(text) > encoder._head_window + encoder._tail_window for text in texts)
    assert encoder.encode(texts) == [reference_ids(minilm_tokenizer, t, 5, truncation) for t in texts]


def test_an_added_token_that_takes_spaces_along_never_joins_the_word_before(minilm_tokenizer: Any) -> None:
    extended = with_normalizer(
        minilm_tokenizer,
        {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "lowercase": True},
    )
    extended.add_tokens([AddedToken("qqz", lstrip=True)])
    encoder = ReviewEncoder(extended, 32, "head")
    # Normalized, "qqz日 qqz本" is "qqz 日  qqz 本 ": the second "qqz" takes both spaces along, and
    # the first was put in for "日". So whichever of the two words comes first where they are
    # tokenized together, the "qqz" of the other one must not be taken for part of it.
    first = ["qqz日 qqz本"]
    assert encoder.encode(first) == [reference_ids(extended, t, 32, "head") for t in first]
    texts = ["qqz日", "qqz本", "qqz日 qqz本"]
    assert encoder.encode(texts) == [reference_ids(extended, t, 32, "head") for t in texts]


def test_a_call_of_mostly_new_words_learns_none_once_words_are_known(
    tiny_tokenizer: Any, imdb_reviews: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "LEARN_ALL_BELOW_WORDS", 100)
    encoder = ReviewEncoder(tiny_tokenizer, 64, "head_tail")
    encoder.encode(imdb_reviews[:20])
    known = dict(encoder._words.ids)
    assert len(known) >= 100
    # Random letters: every word new, as an attacker or a foreign language would send.
    rng = random.Random(5)
    noise = [" ".join("".join(rng.choices("bcdfghjkmnpqvwxz", k=7)) for _ in range(40)) for _ in range(6)]
    assert encoder.encode(noise) == [reference_ids(tiny_tokenizer, t, 64, "head_tail") for t in noise]
    assert encoder._words.ids == known
    # Reviews with a few new words among known ones are still learned from.
    fresh = imdb_reviews[20:24]
    assert encoder.encode(fresh) == [reference_ids(tiny_tokenizer, t, 64, "head_tail") for t in fresh]
    assert len(encoder._words.ids) > len(known)


def test_remembered_words_stay_within_their_memory_budget(
    minilm_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "MAX_CACHED_BYTES", 40_000)
    encoder = ReviewEncoder(minilm_tokenizer, 64, "head")
    # Long words of wide characters that give many ids each: few fit in the budget.
    rng = random.Random(3)
    for _ in range(6):
        texts = [" ".join("".join(rng.choices("한국어𠀀𠀁!", k=60)) for _ in range(8)) for _ in range(3)]
        assert encoder.encode(texts) == [reference_ids(minilm_tokenizer, t, 64, "head") for t in texts]
        words = encoder._words
        assert words.size == sum(encoding._entry_bytes(word, ids) for word, ids in words.ids.items())
        assert words.size <= 40_000


def test_a_call_with_more_new_words_than_fit_keeps_them_to_itself(
    tiny_tokenizer: Any, imdb_reviews: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "MAX_CACHED_WORDS", 50)
    encoder = ReviewEncoder(tiny_tokenizer, 128, "head_tail")
    texts = imdb_reviews[:10]
    assert encoder.encode(texts) == [reference_ids(tiny_tokenizer, t, 128, "head_tail") for t in texts]
    assert len(encoder._words.ids) <= 50
