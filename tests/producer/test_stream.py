"""producer.stream: the streaming demo's per-prediction lines and its summary."""

from __future__ import annotations

import io

import pytest

from producer import Client, InvalidReviewError, Prediction
from producer.stream import StreamSummary, format_prediction, percentile, preview, stream_reviews
from sentiq.contract import Label
from sentiq.settings import Settings
from tests.support.producer_fakes import FakeWorker


def test_stream_reviews_prints_each_prediction_and_summarizes(settings: Settings) -> None:
    texts = ["a good film", "a bad film", "good <br />again", "FAIL here"]
    labels: list[Label | None] = ["positive", "positive", "positive", "negative"]
    out = io.StringIO()
    enqueued: list[int] = []
    with Client.from_settings(settings) as client, FakeWorker(settings):
        summary = stream_reviews(
            client, texts, labels, out, ids=["r1", "r2", "r3", "r4"], timeout=10, on_enqueued=enqueued.append
        )
    lines = sorted(out.getvalue().splitlines())
    assert len(lines) == 4
    assert lines[0].startswith("r1  positive 0.875  right  | a good film")
    assert lines[1].startswith("r2  negative 0.875  WRONG  | a bad film")
    assert lines[2].endswith("| good again")
    assert lines[3].startswith("r4  ERROR  fake failure")
    assert enqueued == [4]
    assert (summary.count, summary.errors, summary.labelled, summary.correct) == (4, 1, 3, 2)
    assert summary.accuracy == pytest.approx(2 / 3)
    assert summary.elapsed_s > 0 and summary.reviews_per_s > 0
    assert 0 <= summary.latency_p50_s <= summary.latency_p95_s <= summary.elapsed_s


def test_stream_without_labels_or_output(settings: Settings) -> None:
    with Client.from_settings(settings) as client, FakeWorker(settings):
        summary = stream_reviews(client, ["good", "bad"], timeout=10)
    assert summary.count == 2 and summary.labelled == 0 and summary.accuracy is None
    assert "accuracy" not in summary.format()


def test_labels_must_match_reviews(settings: Settings) -> None:
    with Client.from_settings(settings) as client, pytest.raises(InvalidReviewError, match="2 reviews but 1"):
        stream_reviews(client, ["a", "b"], ["positive"])


def test_summary_format() -> None:
    summary = StreamSummary(
        count=500, errors=2, labelled=498, correct=440, elapsed_s=2.5, latency_p50_s=0.12, latency_p95_s=0.4
    )
    text = summary.format()
    assert "reviews:     500 (2 error(s))" in text
    assert "200.0 reviews/s end to end (2.50 s)" in text
    assert "p50 120 ms, p95 400 ms" in text
    assert "accuracy:    88.4% (440/498 labelled)" in text


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([float(n) for n in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_preview_flattens_and_cuts() -> None:
    assert preview("  one<br />two\n\tthree ") == "one two three"
    assert preview("word " * 40, limit=20) == "word word word wo..."
    assert len(preview("x" * 100)) == 60


def test_format_prediction_without_expected_label() -> None:
    line = format_prediction(Prediction(id="z", label="negative", score=0.5), "text")
    assert line == "z  negative 0.500  | text"
