"""Test helpers for the producer's tests: a worker stand-in and a round-trip counter.

The producer's unit tests have no model and no worker process, so :class:`FakeWorker` plays the
worker's part on the wire: it pops the real RQ jobs the producer wrote, decodes them with the
real contract and publishes predictions through the real :class:`ResultStore`. The end-to-end
tests with real worker processes live with the worker's tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from redis import ConnectionPool, Redis
from redis.connection import Connection
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from sentiq.contract import JobPayload, Label, Prediction
from sentiq.result_store import ResultStore
from sentiq.settings import Settings

FAKE_MODEL = "fake-worker"


def fake_prediction(review: dict[str, Any]) -> Prediction:
    """A deterministic answer: an error for texts containing FAIL, else positive iff 'good'."""
    text = str(review.get("text", ""))
    if "FAIL" in text:
        return Prediction(id=review["id"], model=FAKE_MODEL, error="fake failure for this review")
    label: Label = "positive" if "good" in text.lower() else "negative"
    return Prediction(id=review["id"], label=label, score=0.875, model=FAKE_MODEL)


def store_for(settings: Settings, client: Redis) -> ResultStore:
    """The result store that ``settings`` name, on ``client``."""
    return ResultStore(
        client, settings.queue.key_prefix, settings.queue.result_ttl_s, settings.queue.stream_maxlen
    )


class FakeWorker:
    """A thread that answers the producer's jobs on one queue with :func:`fake_prediction`."""

    def __init__(
        self,
        settings: Settings,
        answer: Callable[[dict[str, Any]], Prediction] = fake_prediction,
    ) -> None:
        self.client = Redis.from_url(settings.redis.url)
        self.queue = Queue(settings.queue.name, connection=self.client, serializer=JSONSerializer)
        self.store = store_for(settings, self.client)
        self.answer = answer
        self.jobs_done = 0
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-worker", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            popped = self.client.blpop([self.queue.key], timeout=0.1)
            if popped is None:
                continue
            try:
                job_id = popped[1].decode() if isinstance(popped[1], bytes) else str(popped[1])
                job = Job.fetch(job_id, connection=self.client, serializer=JSONSerializer)
                payload = JobPayload.decode(job.args, job.kwargs)
                self.store.publish(self.answer(review) for review in payload.reviews)
                # The popped job is in no registry, so the tests' namespace cleanup cannot find it.
                job.delete()
                self.jobs_done += 1
            except BaseException as error:  # reported by stop(), so a broken job fails the test
                self.failures.append(error)

    def __enter__(self) -> FakeWorker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()
        if self.failures and exc is None:
            raise AssertionError(f"fake worker failed: {self.failures[0]!r}") from self.failures[0]


def publish_later(settings: Settings, predictions: Iterable[Prediction], delay_s: float) -> threading.Thread:
    """Publish ``predictions`` from a thread after ``delay_s`` (join the returned thread)."""
    batch = list(predictions)

    def publish() -> None:
        time.sleep(delay_s)
        client = Redis.from_url(settings.redis.url)
        try:
            store_for(settings, client).publish(batch)
        finally:
            client.close()

    thread = threading.Thread(target=publish, name="publish-later", daemon=True)
    thread.start()
    return thread


class CountingConnection(Connection):
    """A redis-py connection that counts round trips (each command or pipeline is one send)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def counting_redis(url: str) -> tuple[Redis, type[CountingConnection]]:
    """A client on ``url`` whose round trips are counted in the returned class's ``sends``."""
    counter = type("Counter", (CountingConnection,), {"sends": 0})
    return Redis(connection_pool=ConnectionPool.from_url(url, connection_class=counter)), counter
