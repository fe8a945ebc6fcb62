"""Prometheus metrics of one worker, served over HTTP by prometheus-client.

Every metric lives in the worker's own :class:`~prometheus_client.CollectorRegistry` (never the
library's global one), with the process and platform collectors beside them; nothing here is read
from Redis, so a scrape costs the worker no round trip. The names, labels and meaning of every
metric are listed in :data:`METRICS` (the README's table is checked against it). Queue depths are
not a worker's business: ``python -m producer.exporter`` exports them from Redis.

Recording is cheap (a few counter increments and histogram observations per batch, measured in
``tests/worker/test_metrics.py``); torch is imported only to read GPU memory at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sentiq.metrics_http import MetricsServer, serve_metrics

#: Seconds: from sub-millisecond on a GPU to half a minute for a big batch on a loaded CPU.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds a job waited in the queue: milliseconds when workers keep up, minutes in a backlog.
QUEUE_WAIT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LENGTH_BUCKETS = (8, 16, 32, 64, 96, 128, 192, 256, 320, 384, 512)
#: Why a review was answered with an error: ``review`` (its own fault, or the model failed on it
#: alone) or ``job`` (its whole job was refused, finally failed or abandoned).
FAILURE_REASONS = ("review", "job")


@dataclass(frozen=True)
class MetricDoc:
    """Name, type, labels and meaning of one exported metric."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


#: Every metric a worker exports (besides prometheus-client's ``process_*`` and ``python_info``).
METRICS: tuple[MetricDoc, ...] = (
    MetricDoc("sentiq_reviews_classified_total", "counter", (), "Reviews answered with a label."),
    MetricDoc(
        "sentiq_reviews_failed_total",
        "counter",
        ("reason",),
        "Reviews answered with an error result; reason: review (invalid, or the model failed on it "
        "alone) or job (its job was refused, failed for the last time or was abandoned).",
    ),
    MetricDoc("sentiq_jobs_finished_total", "counter", (), "Jobs whose reviews were all answered."),
    MetricDoc(
        "sentiq_jobs_failed_total",
        "counter",
        (),
        "Jobs that failed for the last time (not counting refused ones); their reviews got error results.",
    ),
    MetricDoc(
        "sentiq_jobs_refused_total",
        "counter",
        (),
        "Jobs refused without running: not a classify job, callbacks, a bad payload, an unreadable record.",
    ),
    MetricDoc("sentiq_jobs_retried_total", "counter", (), "Jobs put back at the front of their queue."),
    MetricDoc("sentiq_batch_jobs", "histogram", (), "Jobs gathered into one batch (shared forward passes)."),
    MetricDoc("sentiq_batch_rows", "histogram", (), "Reviews sent to the model in one batch."),
    MetricDoc(
        "sentiq_batch_padded_length",
        "histogram",
        (),
        "Padded token length of each forward pass (the longest review in the pass).",
    ),
    MetricDoc("sentiq_forward_passes_total", "counter", (), "Forward passes run."),
    MetricDoc(
        "sentiq_padded_tokens_total", "counter", (), "Padded tokens (rows x length) run through the model."
    ),
    MetricDoc(
        "sentiq_forward_seconds",
        "histogram",
        (),
        "Time in the model per batch: tokenizing and every forward pass of the batch.",
    ),
    MetricDoc(
        "sentiq_batch_seconds",
        "histogram",
        (),
        "Time per batch from admitting its jobs to finishing them (model, result writes, RQ bookkeeping; "
        "with overlapping batches also its wait behind the batch before it).",
    ),
    MetricDoc(
        "sentiq_queue_wait_seconds",
        "histogram",
        (),
        "Time a job waited from its enqueued_at to the start of its batch.",
    ),
    MetricDoc(
        "sentiq_redis_reconnects_total",
        "counter",
        ("step",),
        "Redis commands that failed because Redis was unavailable, each followed by a retry with backoff; "
        "step: what the worker was doing (dequeue, heartbeat, maintenance, publish results ...).",
    ),
    MetricDoc(
        "sentiq_worker_model_info",
        "gauge",
        ("worker", "model", "device", "precision", "engine"),
        "Always 1; the labels say which model this worker serves and how.",
    ),
    MetricDoc(
        "sentiq_gpu_memory_allocated_bytes",
        "gauge",
        ("device",),
        "GPU memory held by tensors (CUDA workers only).",
    ),
    MetricDoc(
        "sentiq_gpu_memory_reserved_bytes",
        "gauge",
        ("device",),
        "GPU memory reserved by torch's caching allocator (CUDA workers only).",
    ),
    MetricDoc(
        "sentiq_gpu_memory_peak_allocated_bytes",
        "gauge",
        ("device",),
        "Most GPU memory held by tensors since the worker started (CUDA workers only).",
    ),
    MetricDoc("sentiq_gpu_memory_total_bytes", "gauge", ("device",), "The GPU's memory (CUDA workers only)."),
)
_DOCS = {doc.name: doc for doc in METRICS}


class WorkerMetrics:
    """The metrics of one worker process, and the methods the worker records them with."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PROCESS_COLLECTOR)
        self.registry.register(PLATFORM_COLLECTOR)
        self.reviews_classified = self._counter("sentiq_reviews_classified_total")
        self.reviews_failed = self._counter("sentiq_reviews_failed_total")
        for reason in FAILURE_REASONS:
            self.reviews_failed.labels(reason)
        self.jobs_finished = self._counter("sentiq_jobs_finished_total")
        self.jobs_failed = self._counter("sentiq_jobs_failed_total")
        self.jobs_refused = self._counter("sentiq_jobs_refused_total")
        self.jobs_retried = self._counter("sentiq_jobs_retried_total")
        self.batch_jobs = self._histogram("sentiq_batch_jobs", JOB_BUCKETS)
        self.batch_rows = self._histogram("sentiq_batch_rows", ROW_BUCKETS)
        self.padded_length = self._histogram("sentiq_batch_padded_length", LENGTH_BUCKETS)
        self.forward_passes = self._counter("sentiq_forward_passes_total")
        self.padded_tokens = self._counter("sentiq_padded_tokens_total")
        self.forward_seconds = self._histogram("sentiq_forward_seconds", LATENCY_BUCKETS)
        self.batch_seconds = self._histogram("sentiq_batch_seconds", LATENCY_BUCKETS)
        self.queue_wait = self._histogram("sentiq_queue_wait_seconds", QUEUE_WAIT_BUCKETS)
        self.redis_reconnects = self._counter("sentiq_redis_reconnects_total")
        doc = _DOCS["sentiq_worker_model_info"]
        self.model_info = Gauge(doc.name, doc.help, list(doc.labels), registry=self.registry)
        self._gpu: GpuMemoryCollector | None = None

    def _counter(self, name: str) -> Counter:
        doc = _DOCS[name]
        # prometheus-client appends the _total suffix of a counter itself.
        return Counter(name.removesuffix("_total"), doc.help, list(doc.labels), registry=self.registry)

    def _histogram(self, name: str, buckets: Sequence[float]) -> Histogram:
        doc = _DOCS[name]
        return Histogram(name, doc.help, list(doc.labels), buckets=buckets, registry=self.registry)

    # -- what the worker records ------------------------------------------------------------

    def set_model_info(self, *, worker: str, model: str, device: str, precision: str, engine: str) -> None:
        """Say which model this worker serves, on what (the info gauge carries one series)."""
        self.model_info.clear()
        self.model_info.labels(worker, model, device, precision, engine).set(1)

    def watch_gpu_memory(self, device: str) -> None:
        """Export the memory of ``device`` when it is a CUDA device (read at each scrape)."""
        if device.startswith("cuda") and self._gpu is None:
            self._gpu = GpuMemoryCollector(device)
            self.registry.register(self._gpu)

    def observe_batch(
        self,
        *,
        jobs: int,
        classified: int,
        review_errors: int,
        rows: int,
        pass_lengths: Sequence[int],
        padded_tokens: int,
        forward_seconds: float,
        batch_seconds: float,
    ) -> None:
        """Record one finished batch: its outcome, shape and timings."""
        self.jobs_finished.inc(jobs)
        if classified:
            self.reviews_classified.inc(classified)
        if review_errors:
            self.reviews_failed.labels("review").inc(review_errors)
        self.batch_jobs.observe(jobs)
        self.batch_rows.observe(rows)
        for length in pass_lengths:
            self.padded_length.observe(length)
        self.forward_passes.inc(len(pass_lengths))
        self.padded_tokens.inc(padded_tokens)
        self.forward_seconds.observe(forward_seconds)
        self.batch_seconds.observe(batch_seconds)

    def observe_queue_waits(self, waits: Iterable[float | None]) -> None:
        """Record how long each started job waited in its queue (``None``: unknown, skipped)."""
        for wait in waits:
            if wait is not None:
                self.queue_wait.observe(wait)

    def job_refused(self) -> None:
        """A job was refused without running."""
        self.jobs_refused.inc()

    def job_failed(self) -> None:
        """A job failed for the last time (or was abandoned with no retries left)."""
        self.jobs_failed.inc()

    def job_reviews_answered_with_errors(self, reviews: int) -> None:
        """``reviews`` of a refused, failed or abandoned job got an error result."""
        self.reviews_failed.labels("job").inc(reviews)

    def job_retried(self) -> None:
        """A job was put back in its queue to run again."""
        self.jobs_retried.inc()

    def redis_reconnect(self, step: str) -> None:
        """A Redis command failed because Redis was unavailable; the worker retries ``step``."""
        self.redis_reconnects.labels(step).inc()

    # -- serving ----------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a daemon thread."""
        return serve_metrics(self.registry, host, port)


class GpuMemoryCollector(Collector):
    """GPU memory of one CUDA device, read from torch when Prometheus scrapes."""

    def __init__(self, device: str) -> None:
        self.device = device

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Allocated, reserved, peak and total bytes of the device."""
        import torch

        if not torch.cuda.is_available():
            return []
        index = torch.device(self.device).index or 0
        readings = {
            "sentiq_gpu_memory_allocated_bytes": torch.cuda.memory_allocated(index),
            "sentiq_gpu_memory_reserved_bytes": torch.cuda.memory_reserved(index),
            "sentiq_gpu_memory_peak_allocated_bytes": torch.cuda.max_memory_allocated(index),
            "sentiq_gpu_memory_total_bytes": torch.cuda.get_device_properties(index).total_memory,
        }
        families = []
        for name, value in readings.items():
            family = GaugeMetricFamily(name, _DOCS[name].help, labels=["device"])
            family.add_metric([self.device], float(value))
            families.append(family)
        return families


def queue_wait_seconds(enqueued_at: datetime | None, started_at: datetime) -> float | None:
    """Seconds from a job's ``enqueued_at`` to ``started_at``; ``None`` when it has no enqueue time.

    RQ reads its times as UTC, with or without a time zone; a negative wait (clocks of producer and
    worker hosts disagree) counts as 0.
    """
    if enqueued_at is None:
        return None
    enqueued = enqueued_at if enqueued_at.tzinfo else enqueued_at.replace(tzinfo=UTC)
    started = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
    return max(0.0, (started - enqueued).total_seconds())


def engine_label(int8_version: str | None = None) -> str:
    """The ``engine`` label: ``torch 2.13.0``, or ``onnxruntime 1.32.0 int8`` for the int8 engine."""
    if int8_version is not None:
        return f"onnxruntime {int8_version} int8"
    import torch

    return f"torch {torch.__version__}"
