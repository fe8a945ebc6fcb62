"""Per-review checks and batched classification of several jobs, with a real result store."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from redis import Redis

from sentiq.contract import JobPayload
from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from worker.model import SentimentModel
from worker.processing import Classifier, JobOutcome, predict_isolated

LONE_SURROGATE = "Nice film \ud800"


@pytest.fixture
def classifier(settings: Settings, redis_client: Redis, tiny_model_dir: Path) -> Classifier:
    model = SentimentModel.load(tiny_model_dir, max_batch_size=8)
    store = ResultStore(redis_client, settings.queue.key_prefix, 60, 1000)
    return Classifier(model, store, max_review_chars=200)


def test_bad_reviews_get_errors_while_the_rest_is_classified(classifier: Classifier) -> None:
    payload = JobPayload(
        reviews=[
            {"id": "ok-1", "text": "a fine film"},
            {"id": "empty", "text": "   "},
            {"id": "number", "text": 42},
            {"id": "long", "text": "x" * 201},
            {"id": "bad id!", "text": "fine"},
            {"id": 7, "text": "fine"},
            {"id": "ok-2", "text": "terrible"},
        ]
    )
    outcomes, stats = classifier.classify([("job-1", payload)])
    by_id = {p.id: p for p in outcomes[0].predictions}
    assert by_id["ok-1"].label in {"positive", "negative"} and by_id["ok-1"].error is None
    assert by_id["ok-2"].ok
    assert by_id["empty"].error == "review text is empty"
    assert "must be a string, got int" in (by_id["number"].error or "")
    assert "more than the limit of 200" in (by_id["long"].error or "")
    assert "invalid review id" in (by_id["invalid:job-1:4"].error or "")
    assert "review id must be a string" in (by_id["invalid:job-1:5"].error or "")
    assert stats.rows == 2
    assert outcomes[0].summary["errors"] == 5


def test_several_jobs_share_forward_passes_and_are_published(
    classifier: Classifier, settings: Settings, redis_client: Redis
) -> None:
    jobs = [
        (f"job-{n}", JobPayload(reviews=[{"id": f"r{n}-{i}", "text": f"review {i}"} for i in range(3)]))
        for n in range(4)
    ]
    outcomes, stats = classifier.classify(jobs)
    assert [len(o.predictions) for o in outcomes] == [3, 3, 3, 3]
    assert stats.rows == 12 and stats.passes == 2  # 12 reviews, 8 per pass
    assert classifier.publish(outcomes) == 12
    stored = classifier.store.fetch([f"r{n}-{i}" for n in range(4) for i in range(3)])
    assert len(stored) == 12
    assert all(p.model == classifier.model_id for p in stored.values())
    assert redis_client.xlen(classifier.store.stream) == 12


def test_publish_failure_answers_every_review(classifier: Classifier) -> None:
    payload = JobPayload(reviews=[{"id": "a", "text": "x"}, {"id": "no good", "text": "y"}])
    assert classifier.publish_failure("job-9", payload, "worker error: boom") == 2
    stored = classifier.store.fetch(["a", "invalid:job-9:1"])
    assert {p.error for p in stored.values()} == {"worker error: boom"}


def other_client_job(count: int = 40) -> tuple[str, JobPayload]:
    """Another client's job that shares the batch: every review is fine."""
    texts = ["a fine film", "dull and long", "great acting", "the plot was thin", "loved it"]
    return "other-client", JobPayload(
        reviews=[{"id": f"other-{i}", "text": f"{texts[i % len(texts)]} {i}"} for i in range(count)]
    )


def assert_same_answers(outcome: JobOutcome, reference: JobOutcome) -> None:
    """Same ids, labels and (up to padding noise) probabilities as ``reference``."""
    assert [(p.id, p.label) for p in outcome.predictions] == [(p.id, p.label) for p in reference.predictions]
    scores = [p.score for p in outcome.predictions]
    assert scores == pytest.approx([p.score for p in reference.predictions], abs=1e-4)


def fail_forward_on_word(model: SentimentModel, word: str, error: Callable[[], Exception]) -> list[int]:
    """Make the real model's forward pass raise ``error()`` for any batch holding ``word``.

    Returns a list that grows by one row count per forward call, to count the passes.
    """
    token_id = model.tokenizer.convert_tokens_to_ids(word)
    assert token_id != model.tokenizer.unk_token_id
    real_forward = model.model.forward
    calls: list[int] = []

    def forward(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        calls.append(int(input_ids.shape[0]))
        if token_id in input_ids.flatten().tolist():
            raise error()
        return real_forward(input_ids=input_ids, **kwargs)

    model.model.forward = forward  # type: ignore[method-assign]
    return calls


def culprit_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.exc_info is not None]


def test_a_review_that_fails_the_forward_pass_fails_alone(
    classifier: Classifier, caplog: pytest.LogCaptureFixture
) -> None:
    other = other_client_job()
    mixed = (
        "mixed",
        JobPayload(
            reviews=[
                {"id": "m-1", "text": "good film"},
                {"id": "m-2", "text": "an awful film"},
                {"id": "m-3", "text": "great plot"},
            ]
        ),
    )
    clean, _ = classifier.classify([other, ("clean", JobPayload(reviews=[mixed[1].reviews[0]]))])
    fail_forward_on_word(classifier.model, "awful", lambda: RuntimeError("injected\nfailure"))
    with caplog.at_level(logging.INFO, logger="worker.processing"):
        outcomes, stats = classifier.classify([other, mixed])
    # The other client's reviews get exactly the answers they get without the culprit in the batch.
    assert_same_answers(outcomes[0], clean[0])
    by_id = {p.id: p for p in outcomes[1].predictions}
    assert by_id["m-1"].ok and by_id["m-3"].ok
    assert by_id["m-1"].score == pytest.approx(clean[1].predictions[0].score, abs=1e-4)
    assert by_id["m-2"].error == "could not classify this review: RuntimeError: injected failure"
    assert outcomes[1].summary["error_ids"] == ["m-2"]
    assert stats.rows >= 42
    # The culprit is logged once, with its traceback; nothing else is.
    warned = culprit_warnings(caplog)
    assert [r.getMessage() for r in warned] == ["review m-2 of job mixed could not be classified"]


def test_lone_surrogate_does_not_fail_another_clients_reviews(classifier: Classifier) -> None:
    # The reproduction from the issue: a lone surrogate shared a batch with 40 other reviews.
    other = other_client_job()
    bad = (
        "bad-client",
        JobPayload(reviews=[{"id": "s-1", "text": LONE_SURROGATE}, {"id": "s-2", "text": "fine"}]),
    )
    outcomes, _ = classifier.classify([other, bad])
    assert all(p.ok for p in outcomes[0].predictions) and len(outcomes[0].predictions) == 40
    by_id = {p.id: p for p in outcomes[1].predictions}
    assert by_id["s-2"].ok
    assert by_id["s-1"].error is not None and "Traceback" not in by_id["s-1"].error


def test_isolation_with_the_real_tokenizer_raising(classifier: Classifier) -> None:
    # Straight to the model, past review_problem (which rejects lone surrogates up front): the
    # real tokenizer raises TypeError on one, and isolation must not depend on a check before it.
    model = classifier.model
    texts = [f"a fine film {i}" for i in range(20)] + ["good", LONE_SURROGATE, "bad"]
    groups = [list(range(20)), [20, 21, 22]]
    expected, _ = model.predict([t for t in texts if t != LONE_SURROGATE])
    results, _ = predict_isolated(model, texts, groups)
    assert isinstance(results[21], TypeError)
    labelled = results[:21] + results[22:]
    assert all(isinstance(r, tuple) for r in labelled)
    assert [r[0] for r in labelled] == [e[0] for e in expected]  # type: ignore[index]
    assert [r[1] for r in labelled] == pytest.approx([e[1] for e in expected])  # type: ignore[index]


def test_bisection_finds_the_culprit_in_few_passes(classifier: Classifier) -> None:
    reviews = [{"id": f"r-{i}", "text": f"a fine film {i}"} for i in range(64)]
    reviews[37] = {"id": "r-37", "text": "an awful film"}
    calls = fail_forward_on_word(classifier.model, "awful", lambda: RuntimeError("injected"))
    outcomes, _ = classifier.classify([("big", JobPayload(reviews=reviews))])
    assert outcomes[0].summary["error_ids"] == ["r-37"]
    # 8 passes for the shared attempt, then one probe and a bisection: about 2*log2(64) attempts,
    # not one per review.
    assert len(calls) <= 8 + 1 + 2 * (2 * math.log2(64))


def test_a_job_whose_only_review_fails_gets_an_error_result(classifier: Classifier) -> None:
    # Alone in its batch, the culprit cannot be told apart by its neighbours: a known-good probe
    # review shows the model works, so the review gets its error instead of failing the job.
    fail_forward_on_word(classifier.model, "awful", lambda: ValueError("injected"))
    outcomes, _ = classifier.classify([("solo", JobPayload(reviews=[{"id": "x", "text": "awful"}]))])
    assert outcomes[0].predictions[0].error == "could not classify this review: ValueError: injected"


def test_a_model_broken_for_every_review_raises(
    classifier: Classifier, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    def always_fail(*args: object, **kwargs: object) -> object:
        raise RuntimeError("device lost")

    classifier.model.model.forward = always_fail  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.INFO, logger="worker.processing"),
        pytest.raises(RuntimeError, match="device lost"),
    ):
        classifier.classify(
            [other_client_job(5), ("second", JobPayload(reviews=[{"id": "y", "text": "fine"}]))]
        )
    # Not one error result per review, and no review blamed for it.
    assert culprit_warnings(caplog) == []
    assert redis_client.xlen(classifier.store.stream) == 0


def test_running_out_of_memory_is_never_blamed_on_a_review(classifier: Classifier) -> None:
    fail_forward_on_word(classifier.model, "awful", lambda: torch.OutOfMemoryError("out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        classifier.classify([other_client_job(4), ("m", JobPayload(reviews=[{"id": "z", "text": "awful"}]))])
