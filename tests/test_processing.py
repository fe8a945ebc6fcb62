"""Per-review checks and batched classification of several jobs, with a real result store."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from sentiq.contract import JobPayload
from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from worker.model import SentimentModel
from worker.processing import Classifier, error_result_id


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


def test_error_result_id() -> None:
    assert error_result_id("j", 0, "good-id") == "good-id"
    assert error_result_id("j", 3, "../etc") == "invalid:j:3"
    assert error_result_id("j", 1, None) == "invalid:j:1"
