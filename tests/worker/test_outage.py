"""A Redis restart while a worker is busy: the worker waits it out and loses nothing.

The test owns its Redis (append-only on, on a free port): it kills it with SIGKILL while a batch is
being classified, so that the batch's writes meet a dead server, and restarts it seconds later.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from sentiq.contract import CLASSIFY_TASK
from sentiq.result_store import ResultStore
from sentiq.settings import QueueSettings, WorkerSettings
from stack.embedded_redis import EmbeddedRedis
from worker.model import SentimentModel
from worker.processing import Classifier
from worker.worker import SentiqWorker

OUTAGE_S = 4.0


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_redis_restart_mid_batch_is_ridden_out(
    own_redis: EmbeddedRedis, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Redis.from_url(own_redis.url, socket_timeout=5, socket_connect_timeout=1)
    queue = Queue("outage", connection=client, serializer=JSONSerializer)
    store = ResultStore(client, "outage", 600, 10_000)
    model = SentimentModel.load(tiny_model_dir)
    worker = SentiqWorker(
        [queue],
        classifier=Classifier(model, store, 50_000),
        settings=WorkerSettings(device="cpu", precision="fp32", heartbeat_ttl_s=30),
        queue_settings=QueueSettings(),
        connection=client,
    )
    real_classify = worker.classifier.classify
    restarted = threading.Event()

    def classify_during_an_outage(*args: object, **kwargs: object) -> object:
        if not restarted.is_set():
            own_redis.kill()

            def restart() -> None:
                time.sleep(OUTAGE_S)
                own_redis.start()
                restarted.set()

            threading.Thread(target=restart, daemon=True).start()
        return real_classify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.classifier, "classify", classify_during_an_outage)
    ids = [f"outage-{index}" for index in range(6)]
    job = queue.enqueue(
        CLASSIFY_TASK, {"v": 1, "reviews": [{"id": i, "text": f"text {i}"} for i in ids]}, retry=Retry(max=2)
    )
    started = time.monotonic()
    worker.work(burst=True)  # returns only once the queue is empty: the worker did not quit
    assert restarted.is_set()
    assert time.monotonic() - started >= OUTAGE_S
    stored = store.fetch(ids)
    assert sorted(stored) == ids and all(p.ok for p in stored.values())
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    # Each result was published once, even though the publish met a dead server first.
    assert client.xlen(store.stream) == len(ids)

    # And the same worker keeps serving after the restart.
    after = [f"after-{uuid.uuid4().hex[:6]}"]
    queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": after[0], "text": "fine"}]})
    worker.work(burst=True)
    assert store.fetch(after)[after[0]].ok
    client.close()
