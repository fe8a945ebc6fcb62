"""sentiq.contract: what producer and worker both check before a review or a job is accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sentiq.contract import MAX_REVIEWS_PER_JOB, JobPayload, error_result_id, review_problem, validate_reviews
from sentiq.errors import InvalidReviewError, MalformedJobError
from sentiq.settings import ProducerSettings, QueueSettings, load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Nice film \ud800",
            "review text is not valid Unicode: surrogates not allowed '\\ud800' at character 10",
        ),
        ("\udfffbad", "at character 0"),
        ("<br /><br />", "review text is empty"),
        (" <BR>\n<br/>\t< br / > ", "review text is empty"),
        ("   ", "review text is empty"),
        ("", "review text is empty"),
    ],
)
def test_review_problem_rejects_text_no_tokenizer_can_take(text: str, expected: str) -> None:
    problem = review_problem("r-1", text, max_chars=1000)
    assert problem is not None and expected in problem


@pytest.mark.parametrize(
    "text", ["Nice film", "<br />A fine film.<br /><br />", "<b>bold</b>", "Emoji 😀 and accents: é ü", "<"]
)
def test_review_problem_accepts_ordinary_text(text: str) -> None:
    assert review_problem("r-1", text, max_chars=1000) is None


def test_validate_reviews_names_the_index_of_a_lone_surrogate() -> None:
    with pytest.raises(InvalidReviewError, match=r"review #1: review text is not valid Unicode"):
        validate_reviews(["fine", "Nice film \ud800"], None, max_chars=1000)


def test_decode_refuses_more_reviews_than_the_limit_naming_count_and_limit() -> None:
    too_many = [{"id": f"r{n}", "text": "x"} for n in range(MAX_REVIEWS_PER_JOB + 1)]
    with pytest.raises(MalformedJobError) as caught:
        JobPayload.decode([{"v": 1, "reviews": too_many}], {})
    message = str(caught.value)
    assert f"{MAX_REVIEWS_PER_JOB + 1} reviews" in message and f"limit of {MAX_REVIEWS_PER_JOB}" in message
    at_limit = JobPayload.decode([{"v": 1, "reviews": too_many[:MAX_REVIEWS_PER_JOB]}], {})
    assert len(at_limit.reviews) == MAX_REVIEWS_PER_JOB


def test_reviews_per_job_cannot_exceed_what_workers_accept() -> None:
    assert ProducerSettings(reviews_per_job=MAX_REVIEWS_PER_JOB).reviews_per_job == MAX_REVIEWS_PER_JOB
    with pytest.raises(ValidationError, match="reviews_per_job"):
        ProducerSettings(reviews_per_job=MAX_REVIEWS_PER_JOB + 1)


def test_error_result_id() -> None:
    assert error_result_id("j", 0, "good-id") == "good-id"
    assert error_result_id("j", 3, "../etc") == "invalid:j:3"
    assert error_result_id("j", 1, None) == "invalid:j:1"


def test_one_review_length_limit_for_producer_and_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().queue.max_review_chars == 50_000
    # The two former settings still set the one limit, and the new name wins over them.
    monkeypatch.setenv("SENTIQ_WORKER_MAX_REVIEW_CHARS", "123")
    assert load_settings().queue.max_review_chars == 123
    monkeypatch.setenv("SENTIQ_QUEUE_MAX_REVIEW_CHARS", "77")
    assert load_settings().queue.max_review_chars == 77
    with pytest.raises(ValidationError):
        QueueSettings(max_review_chars=1_000_001)
