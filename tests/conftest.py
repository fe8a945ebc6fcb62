"""Shared fixtures: a real Redis the tests own, per-test key namespaces, and a tiny BERT folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from sentiq.settings import Settings, load_settings
from stack.embedded_redis import EmbeddedRedis
from stack.namespace import delete_namespace
from tools.tiny_models import build_tiny_model, sample_texts

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "sentiq" / "data"
TRAIN_SAMPLE = SAMPLE_DIR / "imdb_train_sample.csv.gz"
TEST_SAMPLE = SAMPLE_DIR / "imdb_test_sample.csv.gz"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``SENTIQ_TEST_REDIS_URL`` when set (a database the tests own), else a private redis-server."""
    external = os.environ.get("SENTIQ_TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, redis_client: Redis, tiny_model_dir: Path) -> Iterator[Settings]:
    """Settings whose queue name and key prefix are unique to this test; its keys are deleted after.

    Tests never flush a database: on a shared server they only ever delete their own keys.
    """
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    built = load_settings(
        redis={"url": redis_url},
        queue={"name": namespace, "key_prefix": namespace},
        model={"path": tiny_model_dir},
        worker={"device": "cpu", "precision": "fp32", "heartbeat_ttl_s": 5, "maintenance_interval_s": 2},
    )
    yield built
    delete_namespace(redis_client, namespace)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT classifier folder with negative:0 / positive:1 labels."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    return build_tiny_model(folder, sample_texts(TRAIN_SAMPLE))


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT with no label names, standing in for a hub base model."""
    folder = tmp_path_factory.mktemp("tiny-base")
    return build_tiny_model(folder, sample_texts(TRAIN_SAMPLE), with_labels=False)
