"""Explanations end to end: a real ``python -m worker`` on a real Redis answers ``explain`` jobs.

The worker serves the tiny BERT that really learnt sentiment words
(:mod:`tests.support.sentiment_words`), so the top word of an explained review must be its
sentiment word. Jobs come from the client and as raw Redis writes (the README's layout); a worker
without Captum answers explained reviews with the install hint and keeps classifying.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from redis import Redis

from producer.client import Client
from sentiq.contract import CLASSIFY_TASK, MAX_EXPLAIN_WORDS, result_key
from sentiq.settings import Settings
from tests.e2e.test_conformance import enqueue_raw
from tests.support.sentiment_words import train_sentiment_words_model
from tests.support.workers import running_workers
from worker.attributions import CAPTUM_MISSING

RESULT_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentiment_words_model(tmp_path_factory.mktemp("explain-model"))


@pytest.fixture
def served_settings(settings: Settings, sentiment_model: Path) -> Settings:
    """The test's namespace, serving the model that learnt sentiment words."""
    return settings.model_copy(update={"model": settings.model.model_copy(update={"path": sentiment_model})})


def raw_job(redis_client: Redis, queue: str, payload: dict[str, object]) -> None:
    """One job written with plain Redis commands, as another language would write it."""
    data = json.dumps([CLASSIFY_TASK, None, [payload], {}])
    fields = {"data": data, "status": "queued", "origin": queue, "retries_left": "0"}
    enqueue_raw(redis_client, queue, uuid.uuid4().hex, fields)


def stored(redis_client: Redis, settings: Settings, review_id: str) -> dict[str, object]:
    raw = redis_client.get(result_key(settings.queue.key_prefix, review_id))
    assert isinstance(raw, bytes)
    result: dict[str, object] = json.loads(raw)
    return result


def test_a_worker_returns_the_top_words_of_jobs_that_ask(
    served_settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = served_settings
    with running_workers(settings, tmp_path, 1), Client.from_settings(settings) as client:
        explained = client.submit(["the movie was great", "so awful and boring"], ["e-1", "e-2"], explain=2)
        plain = client.submit(["the movie was great"], ["p-1"])
        raw_job(
            redis_client,
            settings.queue.name,
            {"v": 1, "reviews": [{"id": "r-1", "text": "awful"}], "explain": 1},
        )
        raw_job(
            redis_client,
            settings.queue.name,
            {"v": 1, "reviews": [{"id": "bad-1", "text": "great"}], "explain": MAX_EXPLAIN_WORDS + 1},
        )
        results = {
            p.id: p for p in client.results([*explained, *plain, "r-1", "bad-1"], timeout=RESULT_TIMEOUT_S)
        }
    great, awful = results["e-1"], results["e-2"]
    assert great.label == "positive" and great.attributions is not None
    assert (
        len(great.attributions) == 2 and great.attributions[0][0] == "great" and great.attributions[0][1] > 0
    )
    assert awful.label == "negative" and awful.attributions is not None
    assert awful.attributions[0][0] in {"awful", "boring"} and awful.attributions[0][1] > 0
    # Not asked: the stored JSON is contract v1's, with no attributions key at all.
    assert results["p-1"].label == "positive" and "attributions" not in stored(redis_client, settings, "p-1")
    raw_pairs = results["r-1"].attributions
    assert raw_pairs is not None and [word for word, _ in raw_pairs] == ["awful"]
    assert stored(redis_client, settings, "r-1")["attributions"] == [list(pair) for pair in raw_pairs]
    refused = results["bad-1"]
    assert refused.label is None and refused.error is not None and "explain must be" in refused.error


def test_a_worker_without_captum_answers_with_the_install_hint(
    served_settings: Settings, tmp_path: Path
) -> None:
    hidden = tmp_path / "no-captum" / "captum"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("captum is hidden from this worker")\n')
    settings = served_settings
    with (
        running_workers(settings, tmp_path, 1, PYTHONPATH=str(hidden.parent)),
        Client.from_settings(settings) as client,
    ):
        explained = client.submit(["the movie was great", "so awful"], explain=3)
        plain = client.submit(["the movie was great"])
        results = client.results([*explained, *plain], timeout=RESULT_TIMEOUT_S)
    for prediction in results[:2]:
        assert prediction.label is None and prediction.error is not None
        assert CAPTUM_MISSING in prediction.error
    assert results[2].label == "positive" and results[2].error is None  # the worker kept going
