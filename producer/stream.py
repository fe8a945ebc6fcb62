"""The streaming demo client: enqueue reviews, print each prediction as it arrives, then a summary.

:func:`stream_reviews` is what ``python -m producer stream FILE`` and the local demo run. Latency
is measured per review on the client's clock, from the moment its job was in Redis (the end of
the enqueue round trip that carried it) to the moment its prediction reached the client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from producer.client import Client
from sentiq.contract import Label, Prediction
from sentiq.errors import InvalidReviewError
from sentiq.text import clean_review

PREVIEW_CHARS = 60


@dataclass(frozen=True)
class StreamSummary:
    """What one streaming run measured."""

    count: int
    errors: int
    #: Predictions compared with a known label (errors and unlabelled reviews are not).
    labelled: int
    correct: int
    #: From the start of the enqueue to the arrival of the last prediction.
    elapsed_s: float
    latency_p50_s: float
    latency_p95_s: float

    @property
    def accuracy(self) -> float | None:
        """Share of labelled predictions that match their label; ``None`` without labels."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def reviews_per_s(self) -> float:
        """Reviews classified per second, end to end."""
        return self.count / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def format(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"reviews:     {self.count:,} ({self.errors:,} error(s))",
            f"throughput:  {self.reviews_per_s:,.1f} reviews/s end to end ({self.elapsed_s:.2f} s)",
            f"latency:     p50 {1000 * self.latency_p50_s:,.0f} ms, p95 {1000 * self.latency_p95_s:,.0f} ms",
        ]
        if self.accuracy is not None:
            lines.append(f"accuracy:    {self.accuracy:.1%} ({self.correct:,}/{self.labelled:,} labelled)")
        return "\n".join(lines)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The start of ``text`` on one line, whitespace collapsed, cut at ``limit`` characters."""
    flat = clean_review(text)
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (linear interpolation); 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def format_prediction(prediction: Prediction, text: str, expected: Label | None = None) -> str:
    """One line for a prediction: id, label, score, match against ``expected`` and a text preview."""
    if prediction.error is not None:
        return f"{prediction.id}  ERROR  {prediction.error}  | {preview(text)}"
    verdict = "" if expected is None else ("  right" if prediction.label == expected else "  WRONG")
    return f"{prediction.id}  {prediction.label:<8} {prediction.score or 0.0:.3f}{verdict}  | {preview(text)}"


def stream_reviews(
    client: Client,
    reviews: Sequence[str],
    labels: Sequence[Label | None] | None = None,
    out: TextIO | None = None,
    *,
    ids: Sequence[str | None] | None = None,
    timeout: float | None = None,
    on_enqueued: Callable[[int], None] | None = None,
) -> StreamSummary:
    """Enqueue ``reviews``, write one line per prediction to ``out`` as it arrives, and summarize.

    ``labels`` (one per review, ``None`` where unknown) turn on the accuracy check. ``out=None``
    prints nothing per prediction. Raises :class:`~sentiq.errors.ResultsTimeoutError` when the
    predictions do not all arrive within ``timeout`` (default: the client's result timeout).
    """
    if labels is not None and len(labels) != len(reviews):
        raise InvalidReviewError(f"got {len(reviews)} reviews but {len(labels)} labels")
    submitted_at: list[float] = []

    def enqueued(done: int) -> None:
        submitted_at.extend([time.monotonic()] * (done - len(submitted_at)))
        if on_enqueued is not None:
            on_enqueued(done)

    started = time.monotonic()
    review_ids = client.submit(reviews, ids, on_enqueued=enqueued)
    index_of = {review_id: index for index, review_id in enumerate(review_ids)}
    latencies: list[float] = []
    errors = labelled = correct = 0
    finished = started
    for prediction in client.iter_results(review_ids, timeout=timeout):
        finished = time.monotonic()
        index = index_of[prediction.id]
        latencies.append(finished - submitted_at[index])
        expected = labels[index] if labels is not None else None
        if prediction.error is not None:
            errors += 1
        elif expected is not None:
            labelled += 1
            correct += prediction.label == expected
        if out is not None:
            out.write(format_prediction(prediction, reviews[index], expected) + "\n")
            out.flush()
    return StreamSummary(
        count=len(review_ids),
        errors=errors,
        labelled=labelled,
        correct=correct,
        elapsed_s=finished - started,
        latency_p50_s=percentile(latencies, 0.5),
        latency_p95_s=percentile(latencies, 0.95),
    )
