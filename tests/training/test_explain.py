"""``python -m training explain`` and :func:`training.explain.explain` on a tiny model that really learnt.

The model is a tiny random BERT trained for a few seconds on synthetic reviews whose label is
carried only by sentiment words ("great", "awful", ...) among neutral filler, so an attribution
method that works must point at those words.
"""

from __future__ import annotations

import io
import json
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from sentiq.errors import ConfigurationError
from sentiq.model_folder import label2id
from tests.training.test_cli import run_cli
from tools.tiny_models import build_tiny_model
from training.cli import main
from training.encoding import ReviewEncoder
from training.explain import Explanation, explain, explanation_html
from worker.model import SentimentModel

POSITIVE_WORDS = ("great", "wonderful", "excellent", "superb")
NEGATIVE_WORDS = ("awful", "terrible", "boring", "dreadful")
MAX_LENGTH = 24
FILLER = [
    "the",
    "movie",
    "film",
    "was",
    "is",
    "a",
    "plot",
    "story",
    "actors",
    "and",
    "it",
    "this",
    "really",
    "quite",
    "i",
    "thought",
    "so",
    "very",
]


def synthetic_reviews(count: int, seed: int) -> pd.DataFrame:
    """Filler sentences; the majority of their sentiment words decides the label.

    Mixed sentences (three sentiment words) make the model weigh positive and negative words
    against each other, and filler-only sentences, once with each label, teach it that no
    sentiment word means 50/50, so neither class becomes a default that needs no evidence.
    """
    chooser = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        majority, minority = (
            (POSITIVE_WORDS, NEGATIVE_WORDS) if positive else (NEGATIVE_WORDS, POSITIVE_WORDS)
        )
        kind = index // 2 % 4
        if kind == 0:
            sentiment: list[str] = []
        elif kind == 1:
            sentiment = [chooser.choice(majority), chooser.choice(majority), chooser.choice(minority)]
        else:
            sentiment = [chooser.choice(majority)]
        words = chooser.choices(FILLER, k=chooser.randint(3, 8))
        for word in sentiment:
            words.insert(chooser.randint(0, len(words)), word)
        rows.append({"review": " ".join(words), "sentiment": "positive" if positive else "negative"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random BERT trained for a few seconds until the sentiment words decide its predictions.

    A plain seeded loop on one thread (the Trainer's schedule needs far more steps for this), then
    saved as a model folder with the ``metrics.json`` fields the worker reads.
    """
    folder = tmp_path_factory.mktemp("explain-model")
    reviews = synthetic_reviews(512, seed=1)
    texts = reviews["review"].tolist()
    labels = torch.tensor([label2id()[name] for name in reviews["sentiment"]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread, alone on a busy CPU
    try:
        torch.manual_seed(0)
        build_tiny_model(folder, texts)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = BertForSequenceClassification.from_pretrained(folder)
        encoded = ReviewEncoder(tokenizer, MAX_LENGTH, "head_tail").encode(texts)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rows_of = torch.Generator().manual_seed(0)
        model.train()
        for step in range(160):
            if step == 60:
                optimizer.param_groups[0]["lr"] = 1e-3
            rows = torch.randint(len(encoded), (32,), generator=rows_of).tolist()
            batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt")
            model(**batch, labels=labels[rows]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        metrics = {"model_id": "synthetic-sentiment", "max_length": MAX_LENGTH, "truncation": "head_tail"}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        # It learnt the task (on unseen sentences with sentiment words): attributions can be judged.
        held_out = synthetic_reviews(200, seed=2)
        held_out = held_out[held_out.index // 2 % 4 != 0]
        predicted, _ = SentimentModel.load(folder).predict(held_out["review"].tolist())
        accuracy = sum(
            label == expected for (label, _), expected in zip(predicted, held_out["sentiment"], strict=True)
        ) / len(held_out)
        assert accuracy >= 0.95
        yield folder
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def served(sentiment_model: Path) -> SentimentModel:
    return SentimentModel.load(sentiment_model)


def run_explain(served: SentimentModel, text: str, **options: object) -> Explanation:
    return explain(
        served.model,
        served.tokenizer,
        text,
        max_length=served.info.max_length,
        truncation=served.info.truncation,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("text", "label", "word"),
    [
        ("the movie was great", "positive", "great"),
        ("the movie was awful", "negative", "awful"),
        ("i thought the plot was really boring and so very slow", "negative", "boring"),
    ],
)
def test_attributions_point_at_the_sentiment_word(
    served: SentimentModel, text: str, label: str, word: str
) -> None:
    explanation = run_explain(served, text)
    assert explanation.label == label
    top = explanation.top(3)
    assert top[0].word == word
    assert top[0].attribution is not None and top[0].attribution > 0  # pushed towards the predicted label
    # Completeness of integrated gradients: attributions add up to the log-odds gap, up to the delta.
    assert explanation.convergence_delta < 0.05 * abs(sum(explanation.token_attributions))


def test_attributions_are_deterministic(served: SentimentModel) -> None:
    text = "The story was wonderful, the actors quite terrible."
    assert run_explain(served, text) == run_explain(served, text)


def test_input_is_what_the_worker_feeds_the_model(served: SentimentModel) -> None:
    # Longer than max_length (24): the head+tail or head cut must match the worker's exactly.
    text = "Great<br />  " + " ".join(["the film was really quite so very"] * 6) + " and awful"
    explanation = run_explain(served, text)
    assert list(explanation.token_ids) == served.encode(text)
    assert explanation.text.startswith("Great the film")  # cleaned like the worker cleans
    unseen = [word for word in explanation.words if word.attribution is None]
    assert unseen, "words cut by truncation are reported as unseen"
    assert len(explanation.token_attributions) == len(explanation.token_ids)
    labels, _ = served.predict([text])
    assert labels[0][0] == explanation.label and labels[0][1] == pytest.approx(explanation.score, abs=1e-5)


def test_word_pieces_are_summed_into_words(served: SentimentModel) -> None:
    # "plotmovie" is not in the tiny vocabulary: "plot" and ## pieces, one word.
    explanation = run_explain(served, "the plot was plotmovie!")
    assert [word.word for word in explanation.words] == ["the", "plot", "was", "plotmovie", "!"]
    pieces = len(served.tokenizer("plotmovie", add_special_tokens=False)["input_ids"])
    assert pieces > 1
    plotmovie = explanation.words[3]
    start = 1 + 3  # [CLS] the plot was
    assert plotmovie.attribution == pytest.approx(sum(explanation.token_attributions[start : start + pieces]))


def test_bad_input(served: SentimentModel) -> None:
    with pytest.raises(ConfigurationError, match="text to explain is empty"):
        run_explain(served, "  <br /> ")
    with pytest.raises(ConfigurationError, match="--steps must be at least 1"):
        run_explain(served, "great", n_steps=0)
    with pytest.raises(ConfigurationError, match="unknown baseline"):
        run_explain(served, "great", baseline="zeros")


def test_html_highlights_words_by_direction(served: SentimentModel) -> None:
    explanation = run_explain(served, "great <b>story</b> but awful actors")
    page = explanation_html(explanation)
    assert page.startswith("<!doctype html>")
    assert "&lt;" in page and "<b>story" not in page  # the review's text is escaped
    green, red = r"rgba\(22, 163, 74, [0-9.]+\)", r"rgba\(220, 38, 38, [0-9.]+\)"
    assert re.search(green + r'" title="[+-][0-9.]+">great</span>', page)
    assert re.search(red + r'" title="[+-][0-9.]+">awful</span>', page)
    strongest = explanation.top(1)[0]
    assert f'0.850)" title="{strongest.attribution:+.4f}">{strongest.word}</span>' in page


def test_cli_prints_the_top_words_and_writes_html_and_png(sentiment_model: Path, tmp_path: Path) -> None:
    html_file, png_file = tmp_path / "e.html", tmp_path / "e.png"
    completed = run_cli(
        "explain",
        "--model",
        str(sentiment_model),
        "the movie was great",
        "--top",
        "2",
        "--html",
        str(html_file),
        "--png",
        str(png_file),
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("label      positive (")
    assert lines[3].split()[1] == "great" and lines[3].split()[0].startswith("+")
    assert "convergence delta" in completed.stdout
    assert "great" in html_file.read_text()
    assert png_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_from_stdin(
    sentiment_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("the movie was awful\n"))
    assert main(["explain", "--model", str(sentiment_model), "-", "--json", "--top", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] == "negative"
    assert [word["word"] for word in result["top_words"]] == ["awful"]
    assert result["model_id"] == "synthetic-sentiment"
    assert result["n_steps"] == 50 and result["convergence_delta"] >= 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "{missing}", "great"], "not a model folder"),
        (["--model", "{model}", "   "], "the text to explain is empty"),
        (["--model", "{model}", "great", "--top", "0"], "--top must be at least 1"),
        (["--model", "{model}", "great", "--html", "{missing}/e.html"], "cannot write"),
    ],
)
def test_cli_bad_input_is_one_error_line(
    sentiment_model: Path,
    tmp_path: Path,
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    filled = [arg.format(model=sentiment_model, missing=tmp_path / "missing") for arg in arguments]
    assert main(["explain", *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1
