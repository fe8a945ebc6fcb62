"""worker.attributions.explain_reviews: the top words the worker returns for jobs that ask for them.

Judged on a tiny BERT that really learnt sentiment words (:mod:`tests.support.sentiment_words`),
and for shapes and long reviews on the random tiny model every worker test uses.
"""

from __future__ import annotations

import sys

import pytest
import torch

from sentiq.contract import Prediction
from sentiq.errors import ConfigurationError
from tests.support.sentiment_words import NEGATIVE_WORDS, POSITIVE_WORDS, train_sentiment_words_model
from worker import attributions
from worker.attributions import CAPTUM_MISSING, MAX_WORD_CHARS, CaptumMissingError, explain_reviews
from worker.model import SentimentModel

TEXTS = [
    "the movie was great",
    "i thought the plot was really boring and so very slow",
    "The story was wonderful, the actors quite terrible.",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> SentimentModel:
    return SentimentModel.load(train_sentiment_words_model(tmp_path_factory.mktemp("explain-model")))


def test_top_words_are_the_sentiment_words_strongest_first(served: SentimentModel) -> None:
    labels = [label for label, _ in served.predict(TEXTS)[0]]
    assert labels[:2] == ["positive", "negative"]
    results = explain_reviews(served, TEXTS, 3, labels=labels)
    sentiment = set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
    for text, result in zip(TEXTS, results, strict=True):
        assert not isinstance(result, Exception)
        assert len(result) == 3
        magnitudes = [abs(value) for _, value in result]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert all(word in text for word, _ in result)
        word, value = result[0]
        assert word in sentiment and value > 0  # pushed towards the label the worker reports
    assert results[0][0][0] == "great"  # type: ignore[index]
    assert results[1][0][0] == "boring"  # type: ignore[index]


def test_attributions_are_towards_the_label_given(served: SentimentModel) -> None:
    results = explain_reviews(served, ["the movie was great"] * 2, 1, labels=["positive", "negative"])
    (towards_positive,), (towards_negative,) = results  # type: ignore[misc]
    assert towards_positive[0] == towards_negative[0] == "great"
    assert towards_positive[1] > 0 > towards_negative[1]  # "great" argues against negative


def test_deterministic_whatever_else_is_explained_alongside(served: SentimentModel) -> None:
    alone = explain_reviews(served, TEXTS[2:], 5)
    together = explain_reviews(served, TEXTS, 5)
    again = explain_reviews(served, list(reversed(TEXTS)), 5)
    assert alone[0] == together[2] == again[0]
    assert together == explain_reviews(served, TEXTS, 5)


def test_works_inside_the_workers_inference_mode(served: SentimentModel) -> None:
    expected = explain_reviews(served, TEXTS[:1], 2)
    with torch.inference_mode():
        assert explain_reviews(served, TEXTS[:1], 2) == expected
    with torch.no_grad():
        assert explain_reviews(served, TEXTS[:1], 2) == expected


def test_a_count_per_review_and_pairs_fit_a_prediction(served: SentimentModel) -> None:
    short, longer = explain_reviews(served, TEXTS[:2], [1, 50])
    assert isinstance(short, list) and isinstance(longer, list)
    assert len(short) == 1
    assert len(longer) == len(TEXTS[1].split())  # every seen word, no more
    stored = Prediction(id="r-1", label="positive", score=0.9, attributions=short).to_json()
    assert '"attributions":[["great",' in stored
    assert Prediction.from_json(stored).attributions == short
    with pytest.raises(ValueError, match="2 texts, 3 top_k"):
        explain_reviews(served, TEXTS[:2], [1, 2, 3])


def test_a_review_that_cannot_be_explained_harms_no_other(served: SentimentModel) -> None:
    results = explain_reviews(served, ["the movie was great", "<br /> <br />", "so awful"], 1)
    assert results[0] == explain_reviews(served, ["the movie was great"], 1)[0]
    assert isinstance(results[1], ConfigurationError) and "empty" in str(results[1])
    assert results[2] == explain_reviews(served, ["so awful"], 1)[0]


def test_memory_errors_are_the_workers(served: SentimentModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(attributions, "_explain_prepared", out_of_memory)
    with pytest.raises(MemoryError):
        explain_reviews(served, TEXTS, 1)


def test_without_captum_every_review_gets_the_install_hint(
    served: SentimentModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # makes `import captum.attr` raise ImportError
    results = explain_reviews(served, TEXTS, 2)
    assert all(isinstance(result, CaptumMissingError) for result in results)
    assert str(results[0]) == CAPTUM_MISSING == "explanations need captum: pip install 'sentiq[worker]'"
    with pytest.raises(CaptumMissingError):
        attributions.explain(served, TEXTS[0])


def test_long_review_on_the_tiny_model(tiny_model: SentimentModel) -> None:
    # Longer than the tiny model's 128 tokens: words cut by truncation are never returned, a
    # giant "word" is shortened on the wire, and a small token budget only splits the steps.
    giant = "x" * 300
    text = f"{giant} " + " ".join(f"w{index}" for index in range(400)) + " final"
    explanation = attributions.explain(tiny_model, text, n_steps=8)
    assert list(explanation.token_ids) == tiny_model.encode(text)
    assert len(explanation.token_attributions) == len(explanation.token_ids) == 128
    seen_words = [word for word in explanation.words if word.attribution is not None]
    seen = {word.word for word in seen_words}
    assert "final" not in seen and "w399" not in seen  # head truncation cut them
    (pairs,) = explain_reviews(tiny_model, [text], 50, n_steps=8)
    # Word pieces ("w", "##3", "##9") are summed into words: fewer seen words than tokens.
    assert isinstance(pairs, list) and len(pairs) == min(50, len(seen_words)) < 126
    words = [word for word, _ in pairs]
    assert all(word in seen or word.endswith("…") for word in words)
    assert all(len(word) <= MAX_WORD_CHARS for word in words)
    assert {word.word for word in explanation.top(50)} - seen == set()
    small_budget = SentimentModel(
        tiny_model.model,
        tiny_model.tokenizer,
        tiny_model.info,
        device="cpu",
        precision="fp32",
        max_batch_size=8,
        max_batch_tokens=3 * 128,  # 3 steps per pass
    )
    split = attributions.explain(small_budget, text, n_steps=8)
    assert split.token_attributions == pytest.approx(explanation.token_attributions, abs=1e-4)


def test_a_giant_word_is_cut_on_the_wire(tiny_model: SentimentModel) -> None:
    giant = "y" * 300
    explanation = attributions.explain(tiny_model, f"{giant} ok", n_steps=4)
    shortened = [word for word, _ in explanation.top_pairs(10) if word.startswith("y")]
    assert shortened == ["y" * (MAX_WORD_CHARS - 1) + "…"]


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two or more torch threads")
def test_explaining_uses_every_thread_after_a_short_pass_used_one(served: SentimentModel) -> None:
    served.single_thread_tokens = 10_000
    threads_seen: list[int] = []
    hook = served.model.register_forward_pre_hook(
        lambda _module, _args: threads_seen.append(torch.get_num_threads())
    )
    try:
        served.predict(["great"])
        assert threads_seen == [1]
        threads_seen.clear()
        explain_reviews(served, ["great"], 1, labels=["positive"])
    finally:
        hook.remove()
        served.single_thread_tokens = 0
        served.use_all_threads()
        torch.set_num_threads(served.threads)
    assert threads_seen and set(threads_seen) == {served.threads}
