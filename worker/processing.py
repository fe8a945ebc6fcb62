"""Turning decoded jobs into predictions: per-review checks, one batched model call, the store.

Reviews of several jobs (often several clients) share forward passes. When a shared pass
raises, the failure is isolated: each job is retried alone, a failing job is bisected down to
the reviews that fail on their own, and only those get an error result. The retries happen
only after a failure, so the normal path is one :meth:`SentimentModel.predict` call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sentiq.contract import JobPayload, Label, Prediction, error_result_id, review_problem
from sentiq.errors import one_line
from sentiq.result_store import ResultStore
from worker.attributions import explain_reviews
from worker.model import PROBE_TEXT, RESOURCE_ERRORS, PassStats, SentimentModel

log = logging.getLogger(__name__)

#: A row's label and probability, or the exception it raised when classified alone.
RowResult = tuple[Label, float] | Exception


@dataclass(frozen=True)
class JobOutcome:
    """One job's predictions, in the order of its reviews."""

    job_id: str
    predictions: list[Prediction]

    @property
    def summary(self) -> dict[str, object]:
        """The small JSON value RQ keeps as the job's return value."""
        errors = [p.id for p in self.predictions if p.error is not None]
        return {"reviews": len(self.predictions), "errors": len(errors), "error_ids": errors[:50]}


def predict_isolated(
    model: SentimentModel,
    texts: Sequence[str],
    groups: Sequence[Sequence[int]],
    on_pass: Callable[[], None] | None = None,
) -> tuple[list[RowResult], PassStats]:
    """Label and probability of every text, or the exception of each text that fails on its own.

    ``groups`` holds each job's row indices into ``texts``. All texts go through shared passes;
    only when that raises are the jobs retried one by one and a failing job bisected down to the
    texts that fail alone. Raises the shared pass's error when the model also fails on a review
    known to be fine (the worker, not a review, is broken), and a memory error even when a single
    text causes it.
    """
    try:
        labels, stats = model.predict(texts, on_pass=on_pass)
    except Exception as error:
        shared_error = error
    else:
        return list(labels), stats
    # Outside the handler, so the culprits' own errors are not chained to the shared one.
    return _isolate(model, texts, groups, shared_error, on_pass)


def _isolate(
    model: SentimentModel,
    texts: Sequence[str],
    groups: Sequence[Sequence[int]],
    shared_error: Exception,
    on_pass: Callable[[], None] | None,
) -> tuple[list[RowResult], PassStats]:
    """Find the rows that fail on their own; every other row gets its label."""
    log.warning(
        "a shared pass over %d review(s) of %d job(s) failed (%s); isolating the review(s) that cause it",
        len(texts),
        len(groups),
        one_line(shared_error),
    )
    results: list[RowResult | None] = [None] * len(texts)
    stats = PassStats()

    def attempt(rows: Sequence[int]) -> Exception | None:
        """Classify ``rows`` together; the error instead when that raises."""
        try:
            labels, part = model.predict([texts[row] for row in rows], on_pass=on_pass)
        except Exception as error:
            return error
        for row, label in zip(rows, labels, strict=True):
            results[row] = label
        stats.add(part)
        return None

    # With a single job, retrying it whole would only repeat the failed pass.
    failed = list(groups) if len(groups) == 1 else [group for group in groups if attempt(group)]
    if len(failed) == len(groups):
        _raise_unless_model_works(model, shared_error)
    # Each failed group is split in halves until the rows that fail alone are found: about
    # 2*log2(n) extra passes for one culprit among n reviews, where review by review would take n.
    pending = [list(group) for group in failed]
    while pending:
        rows = pending.pop()
        if len(rows) == 1:
            error = attempt(rows)
            if isinstance(error, RESOURCE_ERRORS):
                raise error
            if error is not None:
                results[rows[0]] = error
            continue
        middle = len(rows) // 2
        for half in (rows[:middle], rows[middle:]):
            if len(half) == 1 or attempt(half) is not None:
                pending.append(half)
    final = [result for result in results if result is not None]
    # Every row ends in a passing group or alone, so each has a label or its own error.
    assert len(final) == len(texts)
    culprits = sum(1 for result in final if isinstance(result, Exception))
    log.info("isolated the failure: %d of %d review(s) fail on their own", culprits, len(texts))
    return final, stats


def _raise_unless_model_works(model: SentimentModel, error: Exception) -> None:
    """Raise ``error`` when the model also fails on a review known to be fine.

    Then the failure is the worker's (a broken model or device), not the reviews', and the jobs
    must be retried or failed as a whole rather than answered with one error per review.
    """
    try:
        model.predict([PROBE_TEXT])
    except Exception as probe_error:
        log.error("the model fails on a known-good review too (%s)", one_line(probe_error))
        raise error from probe_error


class Classifier:
    """Classifies the reviews of several jobs in shared forward passes and publishes the results."""

    def __init__(self, model: SentimentModel, store: ResultStore, max_review_chars: int) -> None:
        self.model = model
        self.store = store
        self.max_review_chars = max_review_chars

    @property
    def model_id(self) -> str:
        """The model version reported in every prediction."""
        return self.model.info.model_id

    def classify(
        self,
        jobs: Sequence[tuple[str, JobPayload]],
        on_pass: Callable[[], None] | None = None,
    ) -> tuple[list[JobOutcome], PassStats]:
        """Predictions for every review of ``jobs``; a bad review gets an error, the rest a label.

        A review the model cannot process (the tokenizer or the forward pass raises on it) gets an
        error result naming the exception, and every other review is still classified. When the
        model fails on a known-good review too, the original error is raised instead: it is the
        worker's problem, not the reviews'. Nothing is published here, so a failure leaves the
        store untouched. Reviews of jobs that ask for ``explain`` words get their ``attributions``
        after the shared passes, one review at a time; a review whose explanation fails gets an
        error result instead, and the other reviews are unaffected.
        """
        slots: list[list[Prediction | None]] = []
        texts: list[str] = []
        positions: list[tuple[int, int]] = []
        groups: list[list[int]] = []
        for job_index, (job_id, payload) in enumerate(jobs):
            row: list[Prediction | None] = []
            group: list[int] = []
            for review_index, review in enumerate(payload.reviews):
                review_id, text = review.get("id"), review.get("text")
                problem = review_problem(review_id, text, self.max_review_chars)
                if problem is None:
                    assert isinstance(review_id, str) and isinstance(text, str)
                    group.append(len(texts))
                    positions.append((job_index, review_index))
                    texts.append(text)
                    row.append(None)
                else:
                    row.append(
                        Prediction(
                            id=error_result_id(job_id, review_index, review_id),
                            model=self.model_id,
                            error=problem,
                        )
                    )
            slots.append(row)
            if group:
                groups.append(group)
        results, stats = predict_isolated(self.model, texts, groups, on_pass)
        for (job_index, review_index), result in zip(positions, results, strict=True):
            job_id = jobs[job_index][0]
            review_id = jobs[job_index][1].reviews[review_index]["id"]
            if isinstance(result, Exception):
                log.warning("review %s of job %s could not be classified", review_id, job_id, exc_info=result)
                prediction = Prediction(
                    id=review_id,
                    model=self.model_id,
                    error=f"could not classify this review: {one_line(result)}",
                )
            else:
                label, score = result
                prediction = Prediction(id=review_id, label=label, score=round(score, 6), model=self.model_id)
            slots[job_index][review_index] = prediction
        self._explain(jobs, slots, positions, texts, on_pass)
        outcomes = [
            JobOutcome(job_id, [p for p in row if p is not None])
            for (job_id, _), row in zip(jobs, slots, strict=True)
        ]
        return outcomes, stats

    def _explain(
        self,
        jobs: Sequence[tuple[str, JobPayload]],
        slots: list[list[Prediction | None]],
        positions: Sequence[tuple[int, int]],
        texts: Sequence[str],
        on_pass: Callable[[], None] | None,
    ) -> None:
        """Give the classified reviews of jobs asking for ``explain`` words their ``attributions``."""
        wanted: list[tuple[int, int, int, Prediction, Label]] = []  # job, review, text row, result, label
        for row, (job_index, review_index) in enumerate(positions):
            prediction = slots[job_index][review_index]
            if jobs[job_index][1].explain and prediction is not None and prediction.label is not None:
                wanted.append((job_index, review_index, row, prediction, prediction.label))
        if not wanted:
            return
        results = explain_reviews(
            self.model,
            [texts[row] for _, _, row, _, _ in wanted],
            [jobs[job_index][1].explain for job_index, *_ in wanted],
            labels=[label for *_, label in wanted],
            on_pass=on_pass,
        )
        for (job_index, review_index, _, prediction, _), result in zip(wanted, results, strict=True):
            if isinstance(result, Exception):
                review_id, job_id = prediction.id, jobs[job_index][0]
                log.warning("review %s of job %s could not be explained", review_id, job_id, exc_info=result)
                slots[job_index][review_index] = Prediction(
                    id=review_id,
                    model=self.model_id,
                    error=f"could not explain this review: {one_line(result)}",
                )
            else:
                slots[job_index][review_index] = prediction.model_copy(update={"attributions": result})

    def publish(self, outcomes: Sequence[JobOutcome]) -> int:
        """Write every prediction of ``outcomes`` to the result store and the stream."""
        return self.store.publish(p for outcome in outcomes for p in outcome.predictions)

    def publish_failure(self, job_id: str, payload: JobPayload, message: str) -> int:
        """Give every review of a job that finally failed an explicit error result."""
        return self.store.publish(
            Prediction(
                id=error_result_id(job_id, index, review.get("id")),
                model=self.model_id,
                error=message,
            )
            for index, review in enumerate(payload.reviews)
        )
