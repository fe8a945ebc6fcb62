"""``python -m training explain`` and :func:`training.explain.explain` on a tiny model that really learnt.

The model (:mod:`tests.support.sentiment_words`) is a tiny random BERT trained for a few seconds on
synthetic reviews whose label is carried only by sentiment words, so an attribution method that
works must point at those words. The worker's side is tested in ``tests/worker/test_attributions.py``.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from sentiq.errors import ConfigurationError
from tests.support.sentiment_words import train_sentiment_words_model
from tests.training.test_cli import run_cli
from training.cli import main
from training.explain import Explanation, explanation_html
from worker import attributions
from worker.model import SentimentModel


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment_words_model(tmp_path_factory.mktemp("explain-model"))


@pytest.fixture(scope="module")
def served(sentiment_model: Path) -> SentimentModel:
    return SentimentModel.load(sentiment_model)


def run_explain(served: SentimentModel, text: str, **options: object) -> Explanation:
    return attributions.explain(served, text, **options)  # type: ignore[arg-type]


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
