"""Turning decoded jobs into predictions: per-review checks, one batched model call, the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sentiq.contract import REVIEW_ID_PATTERN, JobPayload, Prediction, review_problem
from sentiq.result_store import ResultStore
from worker.model import PassStats, SentimentModel


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


def error_result_id(job_id: str, index: int, review_id: object) -> str:
    """The id an error result is stored under: the review's own when it is valid, else a stand-in.

    A review whose id breaks the contract cannot be stored under that id (it could name any key),
    so its error goes under ``invalid:<job id>:<index>``.
    """
    if isinstance(review_id, str) and REVIEW_ID_PATTERN.fullmatch(review_id):
        return review_id
    return f"invalid:{job_id}:{index}"


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

        Nothing is published here, so a failure leaves the store untouched.
        """
        slots: list[list[Prediction | None]] = []
        texts: list[str] = []
        positions: list[tuple[int, int]] = []
        for job_index, (job_id, payload) in enumerate(jobs):
            row: list[Prediction | None] = []
            for review_index, review in enumerate(payload.reviews):
                review_id, text = review.get("id"), review.get("text")
                problem = review_problem(review_id, text, self.max_review_chars)
                if problem is None:
                    assert isinstance(review_id, str) and isinstance(text, str)
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
        labels, stats = self.model.predict(texts, on_pass=on_pass)
        for (job_index, review_index), (label, score) in zip(positions, labels, strict=True):
            review_id = jobs[job_index][1].reviews[review_index]["id"]
            slots[job_index][review_index] = Prediction(
                id=review_id, label=label, score=round(score, 6), model=self.model_id
            )
        outcomes = [
            JobOutcome(job_id, [p for p in row if p is not None])
            for (job_id, _), row in zip(jobs, slots, strict=True)
        ]
        return outcomes, stats

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
