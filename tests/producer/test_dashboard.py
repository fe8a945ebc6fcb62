"""rq-dashboard's pages load while a real sentiq worker is busy (``producer.dashboard``).

The worker is a real ``python -m worker`` process, stopped with SIGSTOP while it holds a job, so
that "busy" is a fact when the pages are read rather than a race; the dashboard is rq-dashboard's
own Flask app, in-process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from producer import Client
from producer.dashboard import create_app
from sentiq.settings import Settings
from tests.support.workers import WorkerProcess, running_workers

pytestmark = pytest.mark.slow

LONG_REVIEW = "A long, winding and mostly pleasant film about nothing much at all. " * 60


@contextlib.contextmanager
def frozen_while_busy(worker: WorkerProcess, connection: Redis, timeout_s: float = 60) -> Iterator[str]:
    """SIGSTOP the worker while it runs a job; yields that job's id, and always resumes it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rq_worker = Worker.find_by_key(
            Worker.redis_worker_namespace_prefix + worker.name,
            connection=connection,
            serializer=JSONSerializer,
        )
        if rq_worker is not None and rq_worker.get_current_job_id():
            os.kill(worker.process.pid, signal.SIGSTOP)
            try:
                # It may have finished that job between the read and the stop: read again, stopped.
                rq_worker.get_current_executions(refresh=True)
                job_id = rq_worker.get_current_job_id()
                if job_id and rq_worker.get_state() == "busy":
                    yield job_id
                    return
            finally:
                os.kill(worker.process.pid, signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"worker {worker.name} was never seen busy:\n{worker.log}")


def test_dashboard_pages_load_while_a_worker_is_busy(
    settings: Settings, redis_client: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq_dashboard import web

    app = create_app(settings)
    client = app.test_client()
    queue = settings.queue.name
    with running_workers(settings, tmp_path, 1) as (worker,), Client.from_settings(settings) as producer:
        done = producer.submit(["A fine film."] * 4)
        producer.results(done, timeout=60)
        producer.submit([LONG_REVIEW] * 800)
        with frozen_while_busy(worker, redis_client) as job_id:
            pages = [
                "/",
                "/0/view/workers",
                f"/0/view/jobs/{queue}/queued/8/asc/1",
                f"/0/view/job/{job_id}",
                "/0/data/queues.json",
                "/0/data/workers.json",
                f"/0/data/jobs/{queue}/queued/8/asc/1.json",
                f"/0/data/jobs/{queue}/started/8/asc/1.json",
                f"/0/data/jobs/{queue}/finished/8/asc/1.json",
                f"/0/data/job/{job_id}.json",
            ]
            statuses = {page: client.get(page).status_code for page in pages}
            workers = client.get("/0/data/workers.json").get_json()["workers"]
            job = client.get(f"/0/data/job/{job_id}.json").get_json()
            finished = client.get(f"/0/data/jobs/{queue}/finished/8/asc/1.json").get_json()["jobs"]
            # rq-dashboard's own JSON switch alone (--json) leaves its workers data failing.
            monkeypatch.setattr(web, "Worker", Worker)
            unfixed = client.get("/0/data/workers.json").status_code
            monkeypatch.undo()
    assert statuses == dict.fromkeys(pages, 200), statuses
    (shown,) = [entry for entry in workers if entry["name"] == worker.name]
    assert shown["state"] == "busy"
    assert shown["current_job"]["job_id"] == job_id
    assert "worker.tasks.classify_reviews" in shown["current_job"]["call_string"]
    # Caught between RQ's execution record and the job's start, it may still read as queued.
    assert job["status"] in ("queued", "started") and job["origin"] == queue
    assert finished and finished[0]["id"], finished
    assert unfixed == 500


def test_dashboard_hides_delete_unless_allowed(settings: Settings) -> None:
    client = create_app(settings).test_client()
    assert client.post(f"/queue/{settings.queue.name}/queued/empty").get_json() == {"status": "DISABLED"}
