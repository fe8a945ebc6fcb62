"""Pins every RQ internal that worker/rq_internals.py relies on: a new RQ that changes one fails here.

When this file fails after an RQ upgrade, read the new RQ's code for the named behaviour, adapt
worker/rq_internals.py (and only it), then update the pin.
"""

from __future__ import annotations

import inspect
import time
import zlib

import pytest
import rq
import rq.utils
from redis import Redis
from rq import Queue, SimpleWorker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry, clean_registries
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from sentiq.contract import CLASSIFY_TASK
from worker.rq_internals import PINNED_RQ_VERSION, SentiqJob, intermediate_queue_key, job_key


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_rq_is_the_pinned_release() -> None:
    assert rq.__version__ == PINNED_RQ_VERSION


def test_key_layout() -> None:
    queue = Queue("q", connection=Redis(), serializer=JSONSerializer)
    assert job_key("abc") == "rq:job:abc"
    assert queue.key == "rq:queue:q"
    assert intermediate_queue_key(queue) == "rq:queue:q:intermediate"
    assert StartedJobRegistry("q", connection=queue.connection).key == "rq:wip:q"
    assert FailedJobRegistry("q", connection=queue.connection).key == "rq:failed:q"
    assert Queue.redis_queues_keys == "rq:queues"


def test_private_methods_the_worker_calls() -> None:
    assert parameters(BaseWorker._finalize_success) == ["self", "job", "queue", "execution", "return_value"]
    assert parameters(BaseWorker._finalize_failure) == ["self", "job", "queue", "execution", "exc_info"]
    assert parameters(Queue._enqueue_job) == ["self", "job", "pipeline", "at_front", "unique"]
    assert parameters(BaseWorker.handle_job_failure) == [
        "self",
        "job",
        "queue",
        "started_job_registry",
        "exc_string",
        "execution",
    ]
    assert hasattr(BaseWorker, "max_connection_wait_time")


def test_job_fields_sentiq_job_neutralises() -> None:
    job = Job(connection=Redis())
    for attribute in (
        "_success_callback_name",
        "_failure_callback_name",
        "_stopped_callback_name",
        "webhooks",
        "repeats_left",
        "retries_left",
        "failure_ttl",
        "origin",
    ):
        assert hasattr(job, attribute), attribute
    source = inspect.getsource(Job.restore)
    for field in (
        "success_callback_name",
        "failure_callback_name",
        "stopped_callback_name",
        "webhooks",
        "data",
    ):
        assert f"'{field}'" in source, field


def test_every_path_that_runs_callbacks_or_webhooks_fetches_through_the_job_class() -> None:
    """The paths SentiqJob makes safe: each must fetch jobs with the registry's or queue's job class."""
    cleanup = inspect.getsource(StartedJobRegistry.cleanup)
    assert "self.job_class.fetch" in cleanup
    assert "execute_failure_callback" in cleanup and "send_webhooks" in cleanup and "job.retry(" in cleanup
    assert "call_exception_handlers" in cleanup
    assert "job_class=queue.job_class" in inspect.getsource(clean_registries)
    intermediate = inspect.getsource(IntermediateQueue.cleanup)
    assert "queue.fetch_job" in intermediate and "worker.handle_job_failure" in intermediate
    fetch = inspect.getsource(Queue._fetch_dequeued_job)
    assert "job_cls.fetch" in fetch and "e.job_id = job_id" in fetch
    assert "def refresh" in inspect.getsource(Job) and "self.restore(" in inspect.getsource(Job.refresh)
    assert "import_attribute" in inspect.getsource(Job.failure_callback.fget)  # type: ignore[attr-defined]


def test_failed_registry_score_is_the_expiry_time(redis_client: Redis) -> None:
    name = f"pin-{time.time_ns()}"
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "a", "text": "b"}]})
    registry = FailedJobRegistry(name, connection=redis_client)
    try:
        registry.add(job, ttl=1000)
        score = redis_client.zscore(registry.key, job.id)
        assert score is not None and abs(score - (time.time() + 1000)) < 5
    finally:
        redis_client.delete(registry.key, job.key, queue.key)
        redis_client.srem("rq:queues", queue.key)


def test_sentiq_job_never_resolves_callbacks_or_functions(redis_client: Redis) -> None:
    job = SentiqJob(connection=redis_client, serializer=JSONSerializer)
    job._failure_callback_name = "os.abort"
    assert job.failure_callback is None and job.success_callback is None and job.stopped_callback is None
    assert SimpleWorker.job_class is not SentiqJob  # the plain worker is untouched; only sentiq's is safe


def test_rq_recompresses_job_data_in_to_dict() -> None:
    # Why SentiqJob.to_dict writes the stored bytes back: RQ compresses self.data on every save.
    source = inspect.getsource(Job.to_dict)
    assert "'data': zlib.compress(self.data)" in source
    assert "mapping = self.to_dict(" in inspect.getsource(Job.save)


def test_a_fetched_job_is_saved_with_its_data_bytes_unchanged_and_not_recompressed(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"pin-{time.time_ns()}"
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    reviews = [{"id": f"r{i}", "text": f"review number {i} " * 40} for i in range(300)]
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews})
    try:
        stored = redis_client.hget(job.key, "data")
        fetched = SentiqJob.fetch(job.id, connection=redis_client, serializer=JSONSerializer)
        assert fetched.args[0]["reviews"] == reviews
        compressed: list[int] = []
        real_compress = zlib.compress
        monkeypatch.setattr(
            zlib, "compress", lambda data, *a: compressed.append(len(data)) or real_compress(data, *a)
        )
        fetched.started_at = rq.utils.now()
        fetched.save()
        assert redis_client.hget(job.key, "data") == stored
        assert max(compressed, default=0) < 1000  # meta and the like; never the reviews
        # A job whose data was changed after reading is written with the new data.
        fetched.data = JSONSerializer.dumps((CLASSIFY_TASK, None, ({"v": 1, "reviews": reviews[:1]},), {}))
        fetched.save()
        again = SentiqJob.fetch(job.id, connection=redis_client, serializer=JSONSerializer)
        assert again.args[0]["reviews"] == reviews[:1]
    finally:
        redis_client.delete(job.key, queue.key)
        redis_client.srem("rq:queues", queue.key)
