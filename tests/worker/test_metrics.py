"""Prometheus metrics: the worker's registry served over real HTTP, and the queue exporter on a real Redis."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer import Client
from producer.exporter import EXPORTER_METRICS, start_exporter
from sentiq.contract import CLASSIFY_TASK
from sentiq.errors import ConfigurationError
from sentiq.redis_connection import connect
from sentiq.settings import RedisSettings, Settings, WorkerSettings
from tests.support.workers import REPO_ROOT, running_workers, worker_env
from worker.metrics import METRICS, WorkerMetrics, queue_wait_seconds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, keyed by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def record_one_batch(metrics: WorkerMetrics) -> None:
    metrics.set_model_info(worker="w1", model="tiny@1", device="cpu", precision="fp32", engine="torch 2")
    metrics.observe_batch(
        jobs=3,
        classified=40,
        review_errors=2,
        rows=40,
        pass_lengths=[128, 64],
        padded_tokens=32 * 128 + 8 * 64,
        forward_seconds=0.2,
        batch_seconds=0.25,
    )
    metrics.observe_queue_waits([0.01, 3.0, None])
    metrics.job_refused()
    metrics.job_reviews_answered_with_errors(5)
    metrics.job_failed()
    metrics.job_reviews_answered_with_errors(1)
    metrics.job_retried()
    metrics.redis_reconnect("publish results")
    metrics.redis_reconnect("publish results")


def test_worker_metrics_are_served_with_what_was_recorded() -> None:
    metrics = WorkerMetrics()
    record_one_batch(metrics)
    server = metrics.serve("127.0.0.1", 0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    assert value(samples, "sentiq_reviews_classified_total") == 40
    assert value(samples, "sentiq_reviews_failed_total", reason="review") == 2
    assert value(samples, "sentiq_reviews_failed_total", reason="job") == 6
    assert value(samples, "sentiq_jobs_finished_total") == 3
    assert value(samples, "sentiq_jobs_refused_total") == 1
    assert value(samples, "sentiq_jobs_failed_total") == 1
    assert value(samples, "sentiq_jobs_retried_total") == 1
    assert value(samples, "sentiq_batch_jobs_count") == 1
    assert value(samples, "sentiq_batch_rows_sum") == 40
    assert value(samples, "sentiq_batch_padded_length_count") == 2
    assert value(samples, "sentiq_batch_padded_length_bucket", le="64.0") == 1
    assert value(samples, "sentiq_forward_passes_total") == 2
    assert value(samples, "sentiq_padded_tokens_total") == 32 * 128 + 8 * 64
    assert value(samples, "sentiq_forward_seconds_sum") == pytest.approx(0.2)
    assert value(samples, "sentiq_batch_seconds_count") == 1
    assert value(samples, "sentiq_queue_wait_seconds_count") == 2
    assert value(samples, "sentiq_queue_wait_seconds_bucket", le="0.01") == 1
    assert value(samples, "sentiq_redis_reconnects_total", step="publish results") == 2
    info = {"worker": "w1", "model": "tiny@1", "device": "cpu", "precision": "fp32", "engine": "torch 2"}
    assert value(samples, "sentiq_worker_model_info", **info) == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_every_documented_metric_is_exported_and_nothing_else() -> None:
    metrics = WorkerMetrics()
    record_one_batch(metrics)
    exported = {family.name for family in metrics.registry.collect() if family.name.startswith("sentiq_")}
    documented = {doc.name.removesuffix("_total") for doc in METRICS if "gpu" not in doc.name}
    assert exported == documented


def test_model_info_names_one_model_at_a_time() -> None:
    metrics = WorkerMetrics()
    metrics.set_model_info(worker="w", model="old", device="cpu", precision="fp32", engine="torch")
    metrics.set_model_info(worker="w", model="new", device="cpu", precision="fp32", engine="torch")
    (family,) = [f for f in metrics.registry.collect() if f.name == "sentiq_worker_model_info"]
    assert [sample.labels["model"] for sample in family.samples] == ["new"]


def test_recording_a_batch_costs_microseconds() -> None:
    """The per-batch overhead the worker pays for its metrics (reported in the README)."""
    metrics = WorkerMetrics()
    record_one_batch(metrics)
    rounds = 2_000
    started = time.perf_counter()
    for _ in range(rounds):
        metrics.observe_batch(
            jobs=2,
            classified=64,
            review_errors=0,
            rows=64,
            pass_lengths=[128],
            padded_tokens=64 * 128,
            forward_seconds=0.05,
            batch_seconds=0.06,
        )
        metrics.observe_queue_waits([0.01, 0.02])
    per_batch_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"metrics overhead per batch: {per_batch_us:.1f} us")
    # A batch takes milliseconds at the very least; recording must stay far below that.
    assert per_batch_us < 500


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            WorkerMetrics().serve("127.0.0.1", port)


def test_queue_wait_is_enqueue_to_start() -> None:
    started = datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC)
    assert queue_wait_seconds(started - timedelta(seconds=2.5), started) == 2.5
    # RQ may hand back naive UTC times.
    assert queue_wait_seconds(datetime(2026, 11, 28, 10, 0, 4), started) == 1.0
    assert queue_wait_seconds(None, started) is None
    # A producer whose clock runs ahead never makes a negative wait.
    assert queue_wait_seconds(started + timedelta(seconds=3), started) == 0.0


def test_exporter_serves_the_real_queue(settings: Settings, redis_client: Redis) -> None:
    queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
    for index in range(3):
        queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": f"r{index}", "text": "Fine."}]})
    redis_client.xadd(f"{settings.queue.key_prefix}:predictions", {"id": "r0", "result": "{}"})
    connection = connect(settings.redis)
    server = start_exporter(connection, [settings.queue.name], settings.queue.key_prefix, "127.0.0.1", 0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
        connection.close()
    name = settings.queue.name
    assert value(samples, "sentiq_redis_up") == 1
    assert value(samples, "sentiq_queue_jobs", queue=name, state="queued") == 3
    assert value(samples, "sentiq_queue_jobs", queue=name, state="started") == 0
    assert value(samples, "sentiq_queue_jobs", queue=name, state="failed") == 0
    assert value(samples, "sentiq_queue_workers", queue=name) == 0
    assert value(samples, "sentiq_queue_oldest_job_age_seconds", queue=name) >= 0
    assert value(samples, "sentiq_predictions_stream_length", prefix=settings.queue.key_prefix) == 1
    exported = {sample_name for sample_name, _ in samples}
    assert exported <= {metric.name for metric in EXPORTER_METRICS}


def test_exporter_says_redis_is_down_instead_of_failing_the_scrape() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = connect(RedisSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout_s=1), check=False)
    server = start_exporter(connection, ["sentiq"], "sentiq", "127.0.0.1", 0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    assert samples == {("sentiq_redis_up", ()): 0}


@pytest.mark.gpu
def test_gpu_memory_is_exported_for_a_cuda_worker() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    held = torch.ones(1024, 1024, device="cuda:0")
    metrics = WorkerMetrics()
    metrics.watch_gpu_memory("cuda:0")
    metrics.watch_gpu_memory("cpu")  # a CPU worker exports no GPU metrics
    server = metrics.serve("127.0.0.1", 0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    assert value(samples, "sentiq_gpu_memory_allocated_bytes", device="cuda:0") >= held.numel() * 4
    total = value(samples, "sentiq_gpu_memory_total_bytes", device="cuda:0")
    assert total >= value(samples, "sentiq_gpu_memory_reserved_bytes", device="cuda:0") > 0
    assert value(samples, "sentiq_gpu_memory_peak_allocated_bytes", device="cuda:0") >= held.numel() * 4


def test_a_cpu_worker_exports_no_gpu_metrics() -> None:
    metrics = WorkerMetrics()
    metrics.watch_gpu_memory("cpu")
    assert not any(family.name.startswith("sentiq_gpu") for family in metrics.registry.collect())


@pytest.mark.slow
def test_a_running_worker_serves_metrics_of_the_work_it_did(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 8})}
    )
    queue = Queue(settings.queue.name, connection=connect(settings.redis), serializer=JSONSerializer)
    with running_workers(settings, tmp_path, 1, "--metrics-port", "0") as (worker,):
        url = _metrics_url(worker.log)
        with Client.from_settings(settings) as client:
            ids = client.submit([f"Review {index}: good enough." for index in range(40)])
            client.results(ids, timeout=60)
        queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "empty-1", "text": "<br /><br />"}]})
        queue.enqueue("os.system", "echo pwned")  # refused, never run
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            samples = scrape(url)
            # Both jobs may share a batch: the refusal is counted when the batch is admitted, the
            # empty review's failure when the batch is done, so wait for the finished job too.
            if (
                value(samples, "sentiq_jobs_refused_total") == 1
                and value(samples, "sentiq_jobs_finished_total") == 6
            ):
                break
            time.sleep(0.2)
    assert value(samples, "sentiq_reviews_classified_total") == 40
    assert value(samples, "sentiq_reviews_failed_total", reason="review") == 1
    assert value(samples, "sentiq_jobs_finished_total") == 6
    assert value(samples, "sentiq_jobs_refused_total") == 1
    assert value(samples, "sentiq_reviews_failed_total", reason="job") == 0
    assert value(samples, "sentiq_batch_rows_sum") == 40
    # Admitted jobs only: a refused job never starts.
    assert value(samples, "sentiq_queue_wait_seconds_count") == 6
    assert value(samples, "sentiq_forward_seconds_count") >= 1
    assert value(samples, "sentiq_forward_passes_total") >= 1
    info = {
        "worker": worker.name,
        "model": "tiny-bert-test",
        "device": "cpu",
        "precision": settings.worker.precision,
    }
    (engine,) = [
        dict(labels)["engine"]
        for name, labels in samples
        if name == "sentiq_worker_model_info" and dict(labels)["worker"] == worker.name
    ]
    assert value(samples, "sentiq_worker_model_info", **info, engine=engine) == 1
    assert engine.startswith("torch ")
    # Stopped, the worker releases its port.
    worker.stop(signal.SIGTERM)
    with pytest.raises(OSError):
        scrape(url)


def test_metrics_are_off_unless_asked_for_and_a_bad_port_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    env = worker_env(settings, tmp_path / "ready", SENTIQ_WORKER_METRICS_PORT="70000")
    result = subprocess.run(
        [sys.executable, "-m", "worker"],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "worker.metrics_port (SENTIQ_WORKER_METRICS_PORT)" in result.stderr.strip().splitlines()[-1]
    assert WorkerSettings().metrics_port is None and WorkerSettings().metrics_host == "127.0.0.1"


def _metrics_url(log: str) -> str:
    match = re.search(r"metrics on (http://\S+/metrics)", log)
    assert match, log
    return match.group(1)


def test_the_readme_lists_every_metric_with_its_labels() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for metric in (*METRICS, *EXPORTER_METRICS):
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "—"
        assert f"| `{metric.name}` |" in readme and labels in readme, metric.name
