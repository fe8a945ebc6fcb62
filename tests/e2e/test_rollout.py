"""A rolling model upgrade with real worker processes: no queued review lost, each result names its model.

The README's procedure: start a second worker group on the new model folder (same queue), stop the
old group warm with SIGTERM (each worker finishes its in-flight batch and exits 0), and watch
every result name the model that produced it. A new folder the workers do not understand never
joins: the worker refuses it at start-up, and the old group keeps serving.
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from producer import Client
from sentiq.result_store import STREAM_FIELD_ID, STREAM_FIELD_RESULT
from sentiq.settings import Settings
from tests.support.workers import REPO_ROOT, WorkerProcess, worker_env

pytestmark = pytest.mark.slow

OLD_MODEL, NEW_MODEL = "tiny-bert-test", "tiny-bert-test-v2"


def model_folder(source: Path, target: Path, model_id: str) -> Path:
    """A copy of ``source`` whose metrics.json names ``model_id``."""
    shutil.copytree(source, target)
    metrics_file = target / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    metrics["model_id"] = model_id
    metrics_file.write_text(json.dumps(metrics), encoding="utf-8")
    return target


def published(redis_client: Redis, settings: Settings) -> dict[str, list[dict[str, object]]]:
    """Every result in the predictions stream, by review id (a list, to catch duplicates)."""
    by_id: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for _, fields in redis_client.xrange(f"{settings.queue.key_prefix}:predictions"):
        by_id[fields[STREAM_FIELD_ID.encode()].decode()].append(
            json.loads(fields[STREAM_FIELD_RESULT.encode()])
        )
    return by_id


def test_rolling_upgrade_loses_nothing_and_attributes_every_result(
    settings: Settings, redis_client: Redis, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 4})}
    )
    new_folder = model_folder(tiny_model_dir, tmp_path / "model-v2", NEW_MODEL)
    texts = [f"Review {index}: a film with a few good scenes and a weak ending." for index in range(150)]
    old = WorkerProcess(settings, tmp_path, "old-0")
    new: WorkerProcess | None = None
    try:
        old.wait_ready()
        with Client.from_settings(settings) as client:
            before = client.submit(texts)
            client.results(before, timeout=60)
            new = WorkerProcess(settings, tmp_path, "new-0", SENTIQ_MODEL_PATH=str(new_folder))
            new.wait_ready()
            # Work is queued and running while the old group is told to stop.
            during = client.submit(texts)
            old_exit = old.stop(signal.SIGTERM)
            after = client.submit(texts)
            client.results(during + after, timeout=120)
    finally:
        old.stop(signal.SIGKILL)
        if new is not None:
            new.stop(signal.SIGTERM)

    assert old_exit == 0, old.log
    results = published(redis_client, settings)
    every = before + during + after
    assert set(results) == set(every), "a review was lost or a stranger appeared"
    assert all(len(entries) == 1 for entries in results.values()), "a review was answered twice"
    assert all(entries[0]["error"] is None for entries in results.values())
    assert {results[review_id][0]["model"] for review_id in before} == {OLD_MODEL}
    assert {results[review_id][0]["model"] for review_id in after} == {NEW_MODEL}
    # Each job's results name the model of the worker that ran it (RQ records the worker's name).
    expected = {old.name: OLD_MODEL, new.name: NEW_MODEL}  # type: ignore[union-attr]
    ran_by: collections.Counter[str] = collections.Counter()
    for job_id in _job_ids(redis_client, settings):
        job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
        review_ids = [review["id"] for review in job.args[0]["reviews"]]
        assert job.worker_name in expected, job.worker_name
        ran_by[job.worker_name] += 1
        assert {results[review_id][0]["model"] for review_id in review_ids} == {expected[job.worker_name]}
    assert ran_by[new.name] > 0 and ran_by[old.name] > 0  # type: ignore[union-attr]


def _job_ids(redis_client: Redis, settings: Settings) -> list[str]:
    from rq.registry import FinishedJobRegistry

    return [
        str(job_id)
        for job_id in FinishedJobRegistry(settings.queue.name, connection=redis_client).get_job_ids(
            cleanup=False
        )
    ]


def test_a_folder_with_labels_the_worker_does_not_know_never_joins(
    settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = model_folder(tiny_model_dir, tmp_path / "model-3way", "three-way")
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["id2label"] = {"0": "negative", "1": "neutral"}
    config["label2id"] = {"negative": 0, "neutral": 1}
    config_file.write_text(json.dumps(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--model", str(folder), "--burst"],
        cwd=REPO_ROOT,
        env=worker_env(settings, tmp_path / "ready"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load the model:") and "neutral" in last, last
    assert not (tmp_path / "ready").exists()
