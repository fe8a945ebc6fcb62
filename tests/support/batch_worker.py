"""A real SentiqWorker over a test's queue, and the checks that each review was answered once.

Shared by the adversarial tests of the batched dequeue, start and finish
(``tests/worker/test_rq_internals_adversarial.py``, ``tests/worker/test_dequeue_adversarial.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from sentiq.contract import CLASSIFY_TASK
from sentiq.result_store import ResultStore
from sentiq.settings import QueueSettings, WorkerSettings
from worker.model import SentimentModel
from worker.processing import Classifier
from worker.rq_internals import SentiqJob, intermediate_queue_key
from worker.worker import SentiqWorker


def review_list(prefix: str, count: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}-{index}", "text": f"review {index} was good"} for index in range(count)]


def enqueue(queue: Queue, prefix: str, reviews: int = 2, retries: int = 2) -> SentiqJob:
    job = queue.enqueue(
        CLASSIFY_TASK, {"v": 1, "reviews": review_list(prefix, reviews)}, retry=Retry(max=retries)
    )
    return SentiqJob.fetch(job.id, connection=queue.connection, serializer=JSONSerializer)


def make_worker(
    queue: Queue,
    store: ResultStore,
    model: SentimentModel,
    settings: WorkerSettings,
    queues: QueueSettings,
    *,
    more_queues: Sequence[Queue] = (),
) -> SentiqWorker:
    return SentiqWorker(
        [queue, *more_queues],
        classifier=Classifier(model, store, queues.max_review_chars),
        settings=settings,
        queue_settings=queues,
        connection=queue.connection,
    )


def started_members(client: Redis, queue: Queue) -> list[str]:
    members: list[bytes] = client.zrange(StartedJobRegistry(queue.name, connection=client).key, 0, -1)  # type: ignore[assignment]
    return [member.decode() for member in members]


def streamed_ids(client: Redis, store: ResultStore) -> list[str]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(store.stream)  # type: ignore[assignment]
    return sorted(fields[b"id"].decode() for _, fields in entries)


def assert_answered_once(client: Redis, store: ResultStore, ids: list[str], *, labels: bool = True) -> None:
    """Each review has a stored answer and exactly one stream entry (a label unless ``labels`` is off)."""
    assert streamed_ids(client, store) == sorted(ids)
    stored = store.fetch(ids)
    assert sorted(stored) == sorted(ids)
    if labels:
        assert all(prediction.ok for prediction in stored.values()), stored


def assert_settled(
    client: Redis, queue: Queue, store: ResultStore, jobs: list[SentiqJob], ids: list[str]
) -> None:
    """Answered once, every job finished, nothing left started, dequeued-but-not-started or queued."""
    _assert_answered_and_finished(client, store, jobs, ids)
    _assert_nothing_left(client, queue)


def assert_settled_in(
    client: Redis, queues: Sequence[Queue], store: ResultStore, jobs: list[SentiqJob], ids: list[str]
) -> None:
    """:func:`assert_settled` on several queues, and every job run once (one RQ result each)."""
    _assert_answered_and_finished(client, store, jobs, ids)
    assert one_result_each(client, jobs) == [1] * len(jobs)
    for queue in queues:
        _assert_nothing_left(client, queue)


def settle_first_and_second(
    worker: SentiqWorker, queues: Sequence[Queue], store: ResultStore, jobs: list[SentiqJob]
) -> None:
    """``worker`` serves the queues: the two-review jobs ``first`` and ``second`` are answered once each."""
    worker.work(burst=True)
    ids = [f"{prefix}-{n}" for prefix in ("first", "second") for n in range(2)]
    assert_settled_in(worker.connection, queues, store, jobs, ids)


def one_result_each(client: Redis, jobs: list[SentiqJob]) -> list[int]:
    """How many results (runs) RQ recorded for each job."""
    return [len(Job.fetch(job.id, connection=client, serializer=JSONSerializer).results()) for job in jobs]


def _assert_answered_and_finished(
    client: Redis, store: ResultStore, jobs: list[SentiqJob], ids: list[str]
) -> None:
    assert_answered_once(client, store, ids)
    assert [client.hget(job.key, "status") for job in jobs] == [b"finished"] * len(jobs)


def _assert_nothing_left(client: Redis, queue: Queue) -> None:
    """Nothing of ``queue`` left started, dequeued-but-not-started or queued."""
    assert started_members(client, queue) == []
    assert client.llen(intermediate_queue_key(queue)) == 0
    assert client.llen(queue.key) == 0


def serves_another_job(worker: SentiqWorker, queue: Queue, store: ResultStore) -> bool:
    review_id = f"after-{uuid.uuid4().hex[:8]}"
    queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": review_id, "text": "fine"}]})
    worker.work(burst=True)
    answer = store.fetch([review_id]).get(review_id)
    return answer is not None and answer.ok
