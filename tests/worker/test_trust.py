"""The worker as an attacker with Redis write access would try it: every RQ path, not only the dequeue.

Jobs are written straight into Redis (as another service, or an attacker, could) and an in-process
SentiqWorker with the real tiny model runs its normal loop (burst mode runs one maintenance pass
first, which is where RQ cleans its started and intermediate registries).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from sentiq.contract import CLASSIFY_TASK, MAX_JOB_DATA_BYTES, MAX_REVIEWS_PER_JOB
from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from worker.heartbeats import HeartbeatThread
from worker.rq_internals import PUBLISHED_FIELD, intermediate_queue_key, job_key
from worker.worker import SentiqWorker

MARKER_MODULE = "sentiq_foreign_marker"


@pytest.fixture
def worker(batching_worker: SentiqWorker) -> SentiqWorker:
    """Every test here runs one batch at a time and with overlapping batches."""
    return batching_worker


@pytest.fixture
def marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module whose import, or any call into it, leaves a file behind."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (tmp_path / f"{MARKER_MODULE}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(evidence)!r}, 'imported').touch()\n"
        "def hit(*args, **kwargs):\n"
        f"    Path({str(evidence)!r}, 'called').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield evidence
    sys.modules.pop(MARKER_MODULE, None)


class WebhookSink:
    """A local HTTP server that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.requests.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_server() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    try:
        yield sink
    finally:
        sink.close()


def write_raw_job(client: Redis, queue_name: str, reviews: list[dict[str, object]], **fields: str) -> str:
    """A job hash written with plain Redis commands, as another language (or an attacker) would."""
    job_id = str(uuid.uuid4())
    data = json.dumps([CLASSIFY_TASK, None, [{"v": 1, "reviews": reviews}], {}])
    client.hset(
        job_key(job_id),
        mapping={"data": data, "origin": queue_name, "created_at": "2026-11-28T10:00:00.000000Z", **fields},
    )
    return job_id


def reviews(prefix: str, count: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}-{index}", "text": f"review {index} was good"} for index in range(count)]


def foreign_fields(webhook_url: str) -> dict[str, str]:
    return {
        "failure_callback_name": f"{MARKER_MODULE}.hit",
        "success_callback_name": f"{MARKER_MODULE}.hit",
        "stopped_callback_name": f"{MARKER_MODULE}.hit",
        "webhooks": json.dumps(
            [{"url": webhook_url, "job_status": status} for status in ("failed", "finished")]
        ),
    }


def expire_in_started_registry(client: Redis, queue_name: str, job_id: str) -> None:
    """Register ``job_id`` as started by a worker whose heartbeat ran out a minute ago."""
    registry = StartedJobRegistry(queue_name, connection=client)
    client.zadd(registry.key, {f"{job_id}:{uuid.uuid4().hex}": time.time() - 60})


# -- finding 1: nothing a job names is imported, called or fetched ---------------------------------


@pytest.mark.parametrize("retries_left", ["0", "2", None])
def test_abandoned_job_naming_callbacks_and_webhooks_runs_and_fetches_nothing(  # noqa: PLR0917
    worker: SentiqWorker,
    redis_client: Redis,
    settings: Settings,
    store: ResultStore,
    marker_module: Path,
    webhook_server: WebhookSink,
    retries_left: str | None,
) -> None:
    url = webhook_server.url
    extra = {} if retries_left is None else {"retries_left": retries_left}
    job_id = write_raw_job(
        redis_client,
        settings.queue.name,
        reviews("abandoned", 2),
        status="started",
        **foreign_fields(url),
        **extra,
    )
    expire_in_started_registry(redis_client, settings.queue.name, job_id)
    worker.work(burst=True)
    time.sleep(0.2)
    assert not list(marker_module.iterdir()), "a job-named callback was imported or called"
    assert MARKER_MODULE not in sys.modules
    assert webhook_server.requests == [], "a job-named webhook was fetched"
    # Whatever the path, the job ends answered: retried and then refused for naming callbacks, or
    # failed as abandoned; either way each review has an error result and the job is failed.
    assert redis_client.hget(job_key(job_id), "status") == b"failed"
    stored = store.fetch(["abandoned-0", "abandoned-1"])
    assert len(stored) == 2 and all(not p.ok for p in stored.values())


def test_job_stuck_in_the_intermediate_queue_runs_and_fetches_nothing(  # noqa: PLR0917
    worker: SentiqWorker,
    redis_client: Redis,
    settings: Settings,
    queue: Queue,
    store: ResultStore,
    marker_module: Path,
    webhook_server: WebhookSink,
) -> None:
    job_id = write_raw_job(
        redis_client,
        settings.queue.name,
        reviews("stuck", 1),
        status="queued",
        **foreign_fields(webhook_server.url),
    )
    redis_client.rpush(intermediate_queue_key(queue), job_id)
    # Stranded for longer than a heartbeat TTL: the sweep puts it back in the queue, and the worker
    # refuses it (it names callbacks) without running or fetching anything.
    redis_client.set(queue.intermediate_queue.get_first_seen_key(job_id), time.time() - 120, ex=600)
    worker.work(burst=True)
    time.sleep(0.2)
    assert not list(marker_module.iterdir())
    assert webhook_server.requests == []
    assert redis_client.hget(job_key(job_id), "status") == b"failed"
    assert not store.fetch(["stuck-0"])["stuck-0"].ok


def test_a_plain_rq_worker_would_import_what_the_job_names(
    redis_client: Redis, settings: Settings, marker_module: Path
) -> None:
    """Why the README warns against pointing a plain `rq worker` at sentiq's queue."""
    from rq import SimpleWorker

    job_id = write_raw_job(
        redis_client,
        settings.queue.name,
        reviews("plain", 1),
        status="started",
        failure_callback_name=f"{MARKER_MODULE}.hit",
        retries_left="0",
    )
    expire_in_started_registry(redis_client, settings.queue.name, job_id)
    plain = SimpleWorker([settings.queue.name], connection=redis_client, serializer=JSONSerializer)
    plain.clean_registries()
    assert (marker_module / "called").exists()


# -- finding 5: records that cannot be read fail alone, visibly, for the failure TTL ---------------


@pytest.mark.parametrize(
    ("kind", "write"),
    [
        ("string", lambda client, key: client.set(key, "not a hash")),
        ("list", lambda client, key: client.rpush(key, "a", "b")),
        (
            "hash without data",
            lambda client, key: client.hset(key, mapping={"status": "queued", "origin": "x"}),
        ),
        (
            "bad field",
            lambda client, key: client.hset(key, mapping={"data": "[]", "created_at": "not a date"}),
        ),
    ],
)
def test_unreadable_records_fail_alone_and_stay_visible(  # noqa: PLR0917
    worker: SentiqWorker,
    redis_client: Redis,
    settings: Settings,
    queue: Queue,
    store: ResultStore,
    kind: str,
    write: object,
) -> None:
    bad_id = str(uuid.uuid4())
    write(redis_client, job_key(bad_id))  # type: ignore[operator]
    redis_client.rpush(queue.key, bad_id)
    redis_client.sadd("rq:queues", queue.key)
    good = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews(f"after-{kind.replace(' ', '-')}", 1)})
    worker.work(burst=True)  # returns normally: the worker did not end on the bad record
    good.refresh()
    assert good.get_status() == JobStatus.FINISHED
    failed = FailedJobRegistry(settings.queue.name, connection=redis_client)
    score = redis_client.zscore(failed.key, bad_id)
    assert score is not None
    ttl = settings.queue.failure_ttl_s
    assert time.time() + ttl - 60 < score <= time.time() + ttl
    record = redis_client.hgetall(job_key(bad_id))
    assert record[b"status"] == b"failed"
    assert b"refused by sentiq" in record[b"exc_info"]
    assert ttl - 60 < redis_client.ttl(job_key(bad_id)) <= ttl
    assert not redis_client.lrange(intermediate_queue_key(queue), 0, -1)


def test_an_unreadable_abandoned_record_does_not_strand_the_jobs_behind_it(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, store: ResultStore
) -> None:
    bad_id = str(uuid.uuid4())
    redis_client.set(job_key(bad_id), "garbage")
    expire_in_started_registry(redis_client, settings.queue.name, bad_id)
    good_id = write_raw_job(
        redis_client, settings.queue.name, reviews("behind", 2), status="started", retries_left="1"
    )
    expire_in_started_registry(redis_client, settings.queue.name, good_id)
    worker.work(burst=True)
    stored = store.fetch(["behind-0", "behind-1"])
    assert len(stored) == 2 and all(p.ok for p in stored.values())
    assert redis_client.zscore(FailedJobRegistry(settings.queue.name, connection=redis_client).key, bad_id)


# -- finding 6: bounds ---------------------------------------------------------------------------


def test_a_job_over_the_review_limit_is_refused_and_every_review_answered(
    worker: SentiqWorker, queue: Queue, store: ResultStore
) -> None:
    big = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews("big", MAX_REVIEWS_PER_JOB + 1)})
    worker.work(burst=True)
    big.refresh()
    assert big.get_status() == JobStatus.FAILED
    assert str(MAX_REVIEWS_PER_JOB) in (big.latest_result().exc_string or "")
    ids = [f"big-{index}" for index in range(MAX_REVIEWS_PER_JOB + 1)]
    stored = store.fetch(ids)
    assert len(stored) == len(ids)
    assert all(not p.ok and str(MAX_REVIEWS_PER_JOB) in (p.error or "") for p in stored.values())


def test_a_job_over_the_size_limit_is_refused_unread(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, queue: Queue
) -> None:
    job_id = write_raw_job(
        redis_client, settings.queue.name, [{"id": "huge", "text": "x" * MAX_JOB_DATA_BYTES}]
    )
    redis_client.rpush(queue.key, job_id)
    redis_client.sadd("rq:queues", queue.key)
    worker.work(burst=True)
    record = redis_client.hgetall(job_key(job_id))
    assert record[b"status"] == b"failed"
    assert b"more than the limit" in record[b"exc_info"]
    assert redis_client.zscore(FailedJobRegistry(settings.queue.name, connection=redis_client).key, job_id)


# -- findings 7 and 8: recovery at the front; every review answered --------------------------------


def test_an_abandoned_job_is_retried_ahead_of_the_backlog(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, queue: Queue
) -> None:
    backlog = [queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews(f"backlog{n}", 1)}) for n in range(3)]
    job_id = write_raw_job(
        redis_client, settings.queue.name, reviews("recovered", 1), status="started", retries_left="2"
    )
    expire_in_started_registry(redis_client, settings.queue.name, job_id)
    worker.run_maintenance_tasks()
    assert queue.get_job_ids()[0] == job_id
    assert queue.get_job_ids()[1:] == [job.id for job in backlog]


def test_an_abandoned_job_without_a_retry_count_answers_every_review(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, store: ResultStore
) -> None:
    job_id = write_raw_job(redis_client, settings.queue.name, reviews("lost", 3), status="started")
    expire_in_started_registry(redis_client, settings.queue.name, job_id)
    worker.run_maintenance_tasks()
    stored = store.fetch([f"lost-{index}" for index in range(3)])
    assert len(stored) == 3
    assert all("no retries left" in (p.error or "") for p in stored.values())


def test_missing_retry_count_is_filled_in_at_admission(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, queue: Queue
) -> None:
    job_id = write_raw_job(redis_client, settings.queue.name, reviews("filled", 1), status="queued")
    redis_client.rpush(queue.key, job_id)
    redis_client.sadd("rq:queues", queue.key)
    worker.work(burst=True)
    assert int(redis_client.hget(job_key(job_id), "retries_left") or 0) == settings.queue.job_retries
    assert int(redis_client.hget(job_key(job_id), "failure_ttl") or 0) == settings.queue.failure_ttl_s


def test_results_of_a_job_are_published_once_however_often_it_runs(
    worker: SentiqWorker, queue: Queue, redis_client: Redis, store: ResultStore
) -> None:
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews("once", 2)}, retry=Retry(max=2))
    worker.work(burst=True)
    assert redis_client.hget(job.key, PUBLISHED_FIELD)
    # RQ runs it again, as after a worker died between publishing and finishing.
    queue.enqueue_job(job)
    worker.work(burst=True)
    entries = redis_client.xrange(store.stream)
    assert sorted(fields[b"id"].decode() for _, fields in entries) == ["once-0", "once-1"]


def test_publish_once_writes_a_guarded_job_a_single_time(redis_client: Redis, store: ResultStore) -> None:
    from sentiq.contract import Prediction

    guard = f"{store.prefix}:guard"
    redis_client.hset(guard, "x", "1")
    predictions = [Prediction(id="g-1", label="positive", score=0.9)]
    assert store.publish_once([(guard, predictions)], "published", "run-1") == [1]
    assert store.publish_once([(guard, predictions)], "published", "run-2") == [-1]
    assert redis_client.hget(guard, "published") == b"run-1"
    assert redis_client.xlen(store.stream) == 1
    redis_client.delete(guard)


# -- finding 4: heartbeats do not depend on how long a pass takes ---------------------------------


def test_a_pass_longer_than_the_heartbeat_ttl_keeps_its_jobs(
    worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ttl = settings.worker.heartbeat_ttl_s
    registry = StartedJobRegistry(settings.queue.name, connection=redis_client)
    expired_during_pass: list[list[str]] = []
    real_classify = worker.classifier.classify

    def slow_classify(*args: object, **kwargs: object) -> object:
        time.sleep(ttl * 1.6)
        expired_during_pass.append(registry.get_expired_job_ids())
        return real_classify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.classifier, "classify", slow_classify)
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews("slow", 2)}, retry=Retry(max=3))
    worker.work(burst=True)
    job.refresh()
    assert expired_during_pass == [[]]
    assert job.get_status() == JobStatus.FINISHED and job.retries_left == 3


def test_heartbeat_thread_beats_on_and_survives_failures() -> None:
    calls: list[float] = []

    def beat() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise ConnectionError("Redis away")

    thread = HeartbeatThread(interval_s=0.05)
    try:
        with thread.beating(beat):
            time.sleep(0.4)
        assert len(calls) >= 4
        assert thread.beats == len(calls) - 1
        # Between batches nothing is beaten; the next batch is, by the same thread.
        between = len(calls)
        time.sleep(0.2)
        assert len(calls) == between
        later: list[float] = []
        with thread.beating(lambda: later.append(time.monotonic())):
            time.sleep(0.2)
        assert later and len(calls) == between
    finally:
        thread.stop()


def test_no_beat_of_a_batch_runs_after_its_block_ends() -> None:
    running = threading.Event()
    release = threading.Event()
    ended: list[str] = []

    def slow_beat() -> None:
        running.set()
        release.wait(5)
        ended.append("beat")

    thread = HeartbeatThread(interval_s=0.01)
    try:
        with thread.beating(slow_beat):
            assert running.wait(5)
            threading.Timer(0.2, release.set).start()
        # Leaving the block waited for the beat in flight: it ended before the batch is finalized.
        ended.append("block")
        assert ended[:2] == ["beat", "block"]
        count = len(ended)
        time.sleep(0.1)
        assert len(ended) == count
    finally:
        thread.stop()


def test_batches_running_at_once_are_each_beaten_until_released() -> None:
    first: list[float] = []
    second: list[float] = []
    thread = HeartbeatThread(interval_s=0.02)
    try:
        one = thread.keep(lambda: first.append(time.monotonic()))
        two = thread.keep(lambda: second.append(time.monotonic()))
        time.sleep(0.2)
        thread.release(one)
        after_release = len(first)
        time.sleep(0.2)
        assert after_release >= 3 and len(first) == after_release
        assert len(second) >= 2 * after_release - 2
        thread.release(two)
        count = len(second)
        time.sleep(0.1)
        assert len(second) == count
    finally:
        thread.stop()


def test_a_job_dequeued_by_a_worker_that_died_before_starting_it_is_requeued_at_the_front(
    worker: SentiqWorker, redis_client: Redis, settings: Settings, queue: Queue
) -> None:
    stranded = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews("stranded", 1)}, retry=Retry(max=2))
    # A worker's dequeue (LMOVE to the intermediate list), then SIGKILL before it marked the job started.
    redis_client.lmove(queue.key, intermediate_queue_key(queue), "LEFT", "RIGHT")
    backlog = [queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews(f"later{n}", 1)}) for n in range(2)]
    worker.run_maintenance_tasks()
    # First seen now: a live worker may still be starting it.
    assert queue.get_job_ids() == [job.id for job in backlog]
    first_seen_key = queue.intermediate_queue.get_first_seen_key(stranded.id)
    redis_client.set(first_seen_key, time.time() - settings.worker.heartbeat_ttl_s - 1)
    worker.last_cleaned_at = None
    worker.run_maintenance_tasks()
    assert queue.get_job_ids() == [stranded.id] + [job.id for job in backlog]
    assert not redis_client.lrange(intermediate_queue_key(queue), 0, -1)
    stranded.refresh()
    assert stranded.retries_left == 2, "a job that never ran spends no retry"
