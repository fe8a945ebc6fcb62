"""The queue exporter: sentiq's queues, workers and result store as Prometheus metrics.

:func:`run` (``python -m producer exporter``) serves ``/metrics``; every scrape reads one
:func:`~producer.status.gather_status` snapshot from Redis (without counting result keys, whose
cost grows with the database). Run one per Redis, not one per worker: it is what an autoscaler
scales on (``sentiq_queue_jobs{state="queued"}``). Torch-free.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError

from producer.status import Status, gather_status
from sentiq.metrics_http import INSTALL_HINT, MetricsServer, serve_metrics
from sentiq.redis_connection import connect, redact_url
from sentiq.settings import Settings

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

#: Port the exporter listens on unless told otherwise.
DEFAULT_PORT = 9310
#: The registry states of each queue exported in ``sentiq_queue_jobs``.
QUEUE_STATES = ("queued", "started", "failed", "finished")


@dataclass(frozen=True)
class ExportedMetric:
    """Name, labels and meaning of one exported metric."""

    name: str
    labels: tuple[str, ...]
    help: str


#: Every metric the exporter serves (all gauges).
EXPORTER_METRICS: tuple[ExportedMetric, ...] = (
    ExportedMetric("sentiq_redis_up", (), "1 when the last scrape could read Redis, else 0."),
    ExportedMetric(
        "sentiq_queue_jobs",
        ("queue", "state"),
        "Jobs of a queue by state: queued (waiting), started (running), failed (RQ's failed registry, "
        "refused jobs included), finished (RQ's finished registry, kept for the job's result_ttl).",
    ),
    ExportedMetric("sentiq_queue_workers", ("queue",), "Registered workers serving the queue."),
    ExportedMetric(
        "sentiq_queue_oldest_job_age_seconds",
        ("queue",),
        "How long the job at the head of the queue has waited (0 when the queue is empty).",
    ),
    ExportedMetric(
        "sentiq_workers",
        ("state",),
        "Registered workers on the exported queues by RQ state (busy, idle, suspended ...).",
    ),
    ExportedMetric(
        "sentiq_worker_reviews_per_second",
        ("worker", "model"),
        "Reviews a sentiq worker answered per second over the last minute, from its own record.",
    ),
    ExportedMetric("sentiq_predictions_stream_length", ("prefix",), "Entries in the predictions stream."),
    ExportedMetric("sentiq_redis_used_memory_bytes", (), "Redis used_memory (INFO memory)."),
)
_HELP = {metric.name: metric.help for metric in EXPORTER_METRICS}


def status_metrics(status: Status) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    from prometheus_client.core import GaugeMetricFamily

    def family(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, _HELP[name], labels=list(labels))

    up = family("sentiq_redis_up")
    up.add_metric([], 1)
    yield up
    jobs = family("sentiq_queue_jobs", ("queue", "state"))
    workers = family("sentiq_queue_workers", ("queue",))
    oldest = family("sentiq_queue_oldest_job_age_seconds", ("queue",))
    for queue in status.queues:
        for state in QUEUE_STATES:
            jobs.add_metric([queue.name, state], getattr(queue, state))
        workers.add_metric([queue.name], queue.workers)
        oldest.add_metric([queue.name], queue.oldest_queued_s or 0.0)
    yield from (jobs, workers, oldest)
    states: dict[str, int] = {}
    rates = family("sentiq_worker_reviews_per_second", ("worker", "model"))
    for worker in status.workers:
        states[worker.state] = states.get(worker.state, 0) + 1
        if worker.reviews_per_s is not None:
            rates.add_metric([worker.name, worker.model], worker.reviews_per_s)
    by_state = family("sentiq_workers", ("state",))
    for state, count in sorted(states.items()):
        by_state.add_metric([state], count)
    yield from (by_state, rates)
    stream = family("sentiq_predictions_stream_length", ("prefix",))
    stream.add_metric([status.store.prefix], status.store.stream_length)
    yield stream
    if status.store.redis_used_memory_bytes is not None:
        memory = family("sentiq_redis_used_memory_bytes")
        memory.add_metric([], status.store.redis_used_memory_bytes)
        yield memory


class StatusCollector:
    """A prometheus-client collector that reads a fresh snapshot at every scrape."""

    def __init__(self, connection: Redis, queue_names: Sequence[str], prefix: str) -> None:
        self.connection = connection
        self.queue_names = list(queue_names)
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """The metrics of this moment; only ``sentiq_redis_up 0`` while Redis cannot be read."""
        try:
            status = gather_status(self.connection, self.queue_names, self.prefix, count_results=False)
        except RedisError as error:
            log.warning("scrape without Redis: %s: %s", type(error).__name__, error)
            from prometheus_client.core import GaugeMetricFamily

            down = GaugeMetricFamily("sentiq_redis_up", _HELP["sentiq_redis_up"])
            down.add_metric([], 0)
            yield down
            return
        yield from status_metrics(status)


def start_exporter(
    connection: Redis, queue_names: Sequence[str], prefix: str, host: str, port: int
) -> MetricsServer:
    """Serve the exporter's ``/metrics`` on ``host:port`` from a daemon thread."""
    from sentiq.errors import ConfigurationError

    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise ConfigurationError(f"the exporter needs prometheus-client: {INSTALL_HINT}") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(connection, queue_names, prefix))  # type: ignore[arg-type]
    return serve_metrics(registry, host, port)


def run(settings: Settings, queue_names: Sequence[str], host: str, port: int) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status."""
    connection = connect(settings.redis)
    server = start_exporter(connection, queue_names, settings.queue.key_prefix, host, port)
    print(f"exporting {redact_url(settings.redis.url)} on {server.url}", file=sys.stderr, flush=True)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    server.close()
    connection.close()
    return 0
