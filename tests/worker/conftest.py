"""Fixtures of the in-process worker tests: the tiny model loaded once, the test's own queue and result
store, and (for files that do not build their own) workers of that queue."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from tests.support.batch_worker import make_worker
from worker.model import SentimentModel
from worker.worker import SentiqWorker


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir, max_batch_size=64)


@pytest.fixture
def queue(settings: Settings, redis_client: Redis) -> Queue:
    return Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)


@pytest.fixture
def store(settings: Settings, redis_client: Redis) -> ResultStore:
    return ResultStore(redis_client, settings.queue.key_prefix, 600, 10_000)


@pytest.fixture
def worker(settings: Settings, queue: Queue, store: ResultStore, tiny_model: SentimentModel) -> SentiqWorker:
    """A worker of the test's queue, as :func:`tests.support.batch_worker.make_worker` builds it."""
    return make_worker(queue, store, tiny_model, settings.worker, settings.queue)


@pytest.fixture
def other_worker(
    settings: Settings, queue: Queue, store: ResultStore, tiny_model: SentimentModel
) -> SentiqWorker:
    """Another worker of the same queue, whose maintenance the tests run while ``worker`` is busy."""
    return make_worker(queue, store, tiny_model, settings.worker, settings.queue)


@pytest.fixture(params=["off", "on"], ids=["one-batch-at-a-time", "overlapping-batches"])
def batching_worker(
    request: pytest.FixtureRequest,
    settings: Settings,
    queue: Queue,
    store: ResultStore,
    tiny_model: SentimentModel,
) -> SentiqWorker:
    """``worker``, in one test run one batch at a time and in another with overlapping batches."""
    overlap = settings.worker.model_copy(update={"overlap_batches": request.param})
    return make_worker(queue, store, tiny_model, overlap, settings.queue)


@pytest.fixture(autouse=True)
def signal_handlers_kept() -> Iterator[None]:
    """Put back the SIGTERM and SIGINT handlers that a worker's ``request_stop`` (and ``work``) swap."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)
