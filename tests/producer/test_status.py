"""``producer.status`` and ``sentiq.worker_info``: the snapshot behind ``python -m producer status``."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer import Client
from producer.status import count_results, gather_status, render_text, watch
from sentiq.contract import CLASSIFY_TASK, result_key
from sentiq.settings import Settings
from sentiq.worker_info import (
    RATE_WINDOW_S,
    ThroughputWindow,
    WorkerInfo,
    WorkerInfoPublisher,
    read_worker_infos,
    worker_info_key,
)
from tests.support.workers import REPO_ROOT, running_workers


def test_throughput_window_counts_the_last_minute_only() -> None:
    window = ThroughputWindow()
    window.add(120, at=1_000.2)
    window.add(60, at=1_030.9)
    assert window.rate(1_031.0) == pytest.approx(3.0)
    # A minute after the first batch only the second is left; after two minutes, nothing.
    assert window.rate(1_000 + RATE_WINDOW_S + 1.5) == pytest.approx(60 / 60.5)
    assert window.rate(1_200.0) == 0.0
    # A worker that started 10 s ago is measured over its 10 s, not a minute ...
    assert window.rate(1_031.0, started_at=1_021.0) == pytest.approx(6.0)
    # ... and work in its first, partial second counts.
    young = ThroughputWindow()
    young.add(10, at=100.95)
    assert young.rate(101.5, started_at=100.9) == pytest.approx(10 / 1.5)
    window.prune(1_200.0)
    assert window.buckets == {}
    assert ThroughputWindow.from_json(b"not json").buckets == {}
    assert ThroughputWindow.from_json(young.to_json()).buckets == {100: 10}


def test_a_worker_record_round_trips_and_expires(settings: Settings, redis_client: Redis) -> None:
    prefix = settings.queue.key_prefix
    info = WorkerInfo(
        name="w-info", host="box", pid=42, model="tiny@1", device="cpu", precision="fp32", engine="torch 2"
    )
    info.started_at = time.time() - 120
    publisher = WorkerInfoPublisher(redis_client, prefix, info, ttl_s=30)
    publisher.record(10)
    # Within a second of the last write only the counts move: one write a second at most.
    publisher.record(5)
    stored = read_worker_infos(redis_client, prefix, ["w-info", "w-none"])
    assert list(stored) == ["w-info"]
    assert stored["w-info"].reviews_total == 10
    publisher.publish()
    read = read_worker_infos(redis_client, prefix, ["w-info"])["w-info"]
    assert (read.host, read.pid, read.model, read.device, read.reviews_total) == (
        "box",
        42,
        "tiny@1",
        "cpu",
        15,
    )
    assert read.reviews_per_second(time.time()) == pytest.approx(15 / RATE_WINDOW_S, rel=0.02)
    assert 0 < redis_client.ttl(worker_info_key(prefix, "w-info")) <= 30
    publisher.remove()
    assert read_worker_infos(redis_client, prefix, ["w-info"]) == {}


def test_status_shows_the_real_queue_and_workers(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 8})}
    )
    name, prefix = settings.queue.name, settings.queue.key_prefix
    with running_workers(settings, tmp_path, 1) as (worker,), Client.from_settings(settings) as client:
        ids = client.submit([f"Review number {index}, rather good." for index in range(40)])
        client.results(ids, timeout=60)
        # Results are published before RQ's bookkeeping finishes each job and the worker goes idle.
        deadline = time.monotonic() + 10
        busy = gather_status(redis_client, [name], prefix)
        while time.monotonic() < deadline and (
            busy.queues[0].finished < 5 or any(w.state != "idle" for w in busy.workers)
        ):
            time.sleep(0.05)
            busy = gather_status(redis_client, [name], prefix)
    assert worker.stop(signal.SIGTERM) == 0
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    for index in range(2):
        queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": f"late-{index}", "text": "Good."}]})
    time.sleep(0.05)
    idle = gather_status(redis_client, [name], prefix)

    (queue_status,) = busy.queues
    assert (queue_status.name, queue_status.queued, queue_status.started) == (name, 0, 0)
    assert queue_status.finished == 5 and queue_status.failed == 0 and queue_status.workers == 1
    (shown,) = [w for w in busy.workers if w.name == worker.name]
    assert shown.pid == worker.process.pid and shown.host
    assert shown.state == "idle" and name in shown.queues
    assert shown.heartbeat_age_s is not None and shown.heartbeat_age_s < 60
    assert busy.store.stream_length == 40
    assert (busy.store.results, busy.store.results_exact) == (40, True)

    (queue_after,) = idle.queues
    assert (queue_after.queued, queue_after.workers) == (2, 0)
    assert queue_after.oldest_queued_s is not None and queue_after.oldest_queued_s >= 0.05
    assert all(w.name != worker.name for w in idle.workers)

    as_json = json.loads(busy.to_json())
    assert as_json["queues"][0]["finished"] == 5 and as_json["store"]["stream_length"] == 40
    text = render_text(busy)
    assert name in text and worker.name in text and "40 results" in text


def test_results_are_counted_exactly_or_as_a_lower_bound(settings: Settings, redis_client: Redis) -> None:
    prefix = settings.queue.key_prefix
    redis_client.mset({result_key(prefix, f"r{index}"): "{}" for index in range(30)})
    assert count_results(redis_client, prefix) == (30, True)
    found, exact = count_results(redis_client, prefix, scan_limit=1)
    assert found <= 30
    assert exact == (redis_client.dbsize() <= 1_000)


def test_watch_redraws_a_terminal_and_appends_to_a_pipe() -> None:
    for clear, expected in (
        (True, "\x1b[H\x1b[2Jview 1\n\x1b[H\x1b[2Jview 2\n"),
        (False, "view 1\nview 2\n"),
    ):
        views = iter(["view 1", "view 2", "view 3"])
        pauses: list[float] = []
        out = io.StringIO()
        watch(views.__next__, out, 2.0, clear=clear, iterations=2, sleep=pauses.append)
        assert out.getvalue() == expected
        assert pauses == [2.0]


def test_status_json_from_the_command_line_names_each_workers_model_and_rate(
    settings: Settings, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SENTIQ_")}
    env |= {"SENTIQ_REDIS_URL": settings.redis.url, "SENTIQ_QUEUE_NAME": settings.queue.name}
    env["SENTIQ_QUEUE_KEY_PREFIX"] = settings.queue.key_prefix
    with running_workers(settings, tmp_path, 1) as (worker,), Client.from_settings(settings) as client:
        ids = client.submit([f"Review {index}: fine." for index in range(30)])
        client.results(ids, timeout=60)
        result, text = run_status(env, "--json"), run_status(env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    (queue,) = status["queues"]
    assert queue["name"] == settings.queue.name and queue["queued"] == 0 and queue["workers"] == 1
    (shown,) = [w for w in status["workers"] if w["name"] == worker.name]
    assert shown["model"] == "tiny-bert-test" and shown["device"] == "cpu" and shown["precision"] == "fp32"
    assert shown["engine"].startswith("torch ") and shown["pid"] == worker.process.pid
    assert shown["reviews_total"] == 30 and shown["reviews_per_s"] > 0
    assert status["store"]["stream_length"] == 30
    assert text.returncode == 0 and worker.name in text.stdout and "tiny-bert-test" in text.stdout


def run_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m producer status ARGS`` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "status", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_record_counts_every_review_recorded_from_two_threads(
    settings: Settings, redis_client: Redis
) -> None:
    # With overlapping batches the main thread records answers while the heartbeat thread renews
    # the record: no count may be lost and no window change may break a write.
    import threading

    info = WorkerInfo(name="w-race", host="box", pid=1, model="m", device="cpu", precision="fp32", engine="t")
    publisher = WorkerInfoPublisher(redis_client, settings.queue.key_prefix, info, ttl_s=30)
    errors: list[BaseException] = []

    def record(step: float) -> None:
        try:
            for n in range(8_000):
                # A new second every few calls, so the window adds and prunes while the other writes.
                publisher.record(1, at=1_000_000 + n * step, flush=n % 2_000 == 0)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=record, args=(step,)) for step in (0.25, 0.5)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads switch as often as they can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert info.reviews_total == 2 * 8_000
    publisher.remove()
