"""Fixtures of the in-process worker tests: the tiny model loaded once, and the test's own queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from sentiq.settings import Settings
from worker.model import SentimentModel


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir, max_batch_size=64)


@pytest.fixture
def queue(settings: Settings, redis_client: Redis) -> Queue:
    return Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
