"""``python -m producer status``: sentiq's queues, workers and result store at a glance.

Everything is read, never changed, with RQ's public API (queue lengths, registry counts without
their clean-up, the workers' own hashes) and sentiq's key layout (each worker's record from
:mod:`sentiq.worker_info`, the result store of :mod:`sentiq.result_store`). No job is fetched or
deserialized. The same snapshot feeds the queue exporter (:mod:`producer.exporter`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO

from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from sentiq.contract import result_key, stream_key
from sentiq.worker_info import read_worker_infos

#: Most keys :func:`count_results` examines (``SCAN``, 1,000 per round trip) before it gives up and
#: reports a lower bound: counting result keys walks the whole database.
RESULT_SCAN_LIMIT = 200_000
_SCAN_BATCH = 1_000


@dataclass
class QueueStatus:
    """One RQ queue: jobs waiting, running, failed and finished, and the workers serving it."""

    name: str
    queued: int
    started: int
    failed: int
    finished: int
    workers: int
    #: Seconds since the job at the head of the queue was enqueued (``None``: empty or unknown).
    oldest_queued_s: float | None


@dataclass
class WorkerStatus:
    """One worker, from RQ's worker hash and, for sentiq workers, sentiq's own record."""

    name: str
    host: str
    pid: int | None
    state: str
    queues: list[str]
    #: Seconds since its last heartbeat.
    heartbeat_age_s: float | None
    successful_jobs: int
    failed_jobs: int
    #: Empty for an RQ worker that is not a sentiq worker (it has no sentiq record).
    model: str = ""
    device: str = ""
    precision: str = ""
    engine: str = ""
    #: Reviews answered per second over the last minute (``None``: not a sentiq worker).
    reviews_per_s: float | None = None
    reviews_total: int | None = None


@dataclass
class StoreStatus:
    """The result store and the Redis it lives in."""

    prefix: str
    stream: str
    stream_length: int
    #: Result keys found (``None``: not counted); a lower bound when ``results_exact`` is false.
    results: int | None
    results_exact: bool
    redis_used_memory_bytes: int | None
    redis_maxmemory_bytes: int | None


@dataclass
class Status:
    """A snapshot of sentiq on one Redis."""

    taken_at: float
    redis: str
    queues: list[QueueStatus]
    workers: list[WorkerStatus]
    store: StoreStatus

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready data."""
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON (``--json``; one line per refresh with ``--watch``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def gather_status(
    connection: Redis,
    queue_names: Sequence[str],
    prefix: str,
    *,
    redis_label: str = "",
    count_results: bool = True,
    result_scan_limit: int = RESULT_SCAN_LIMIT,
    now: float | None = None,
) -> Status:
    """Read a :class:`Status`: ``queue_names`` plus every queue a sentiq worker serves.

    ``redis_label`` is what to show for the server (a redacted URL). ``count_results`` counts the
    result keys with ``SCAN`` (at most ``result_scan_limit`` keys examined): the one part whose
    cost grows with the database.
    """
    taken_at = time.time() if now is None else now
    rq_workers = Worker.all(connection=connection, serializer=JSONSerializer)
    infos = read_worker_infos(connection, prefix, [worker.name for worker in rq_workers])
    wanted = set(queue_names)
    workers: list[WorkerStatus] = []
    for worker in rq_workers:
        served = [queue.name for queue in worker.queues]
        info = infos.get(worker.name)
        if info is None and not wanted.intersection(served):
            continue  # another application's RQ worker on the same Redis
        heartbeat = worker.last_heartbeat
        status = WorkerStatus(
            name=worker.name,
            host=worker.hostname or "",
            pid=worker.pid,
            state=str(worker.get_state()),
            queues=served,
            heartbeat_age_s=_age(heartbeat, taken_at),
            successful_jobs=worker.successful_job_count,
            failed_jobs=worker.failed_job_count,
        )
        if info is not None:
            status.model, status.device, status.precision, status.engine = (
                info.model,
                info.device,
                info.precision,
                info.engine,
            )
            status.reviews_per_s = round(info.reviews_per_second(taken_at), 2)
            status.reviews_total = info.reviews_total
        workers.append(status)
    names = sorted(wanted.union(*(set(worker.queues) for worker in workers if worker.model)))
    queues = [_queue_status(connection, name, workers, taken_at) for name in names]
    store = _store_status(connection, prefix, count_results, result_scan_limit)
    workers.sort(key=lambda worker: worker.name)
    return Status(taken_at=taken_at, redis=redis_label, queues=queues, workers=workers, store=store)


def _queue_status(connection: Redis, name: str, workers: Sequence[WorkerStatus], now: float) -> QueueStatus:
    queue = Queue(name, connection=connection, serializer=JSONSerializer)
    # cleanup=False: RQ's clean-up would fetch (and so deserialize) jobs; a status reads only.
    head = queue.get_job_ids(0, 1)
    oldest = None
    if head:
        enqueued = connection.hget(Job.key_for(head[0]), "enqueued_at")
        oldest = _age(_parse_time(enqueued), now)
    return QueueStatus(
        name=name,
        queued=queue.count,
        started=queue.started_job_registry.get_job_count(cleanup=False),
        failed=queue.failed_job_registry.get_job_count(cleanup=False),
        finished=queue.finished_job_registry.get_job_count(cleanup=False),
        workers=sum(1 for worker in workers if name in worker.queues),
        oldest_queued_s=oldest,
    )


def _store_status(connection: Redis, prefix: str, count: bool, scan_limit: int) -> StoreStatus:
    stream = stream_key(prefix)
    results, exact = count_results(connection, prefix, scan_limit) if count else (None, False)
    used = maxmemory = None
    try:
        memory = connection.info("memory")
        used = int(memory["used_memory"])
        maxmemory = int(memory.get("maxmemory", 0)) or None
    except (ResponseError, KeyError, ValueError):
        pass  # INFO may be forbidden by an ACL; the rest of the status still stands
    return StoreStatus(
        prefix=prefix,
        stream=stream,
        stream_length=int(connection.xlen(stream)),
        results=results,
        results_exact=exact,
        redis_used_memory_bytes=used,
        redis_maxmemory_bytes=maxmemory,
    )


def count_results(connection: Redis, prefix: str, scan_limit: int = RESULT_SCAN_LIMIT) -> tuple[int, bool]:
    """How many results are stored, and whether that is exact (else a lower bound).

    ``SCAN`` walks the whole database, so it stops after about ``scan_limit`` keys.
    """
    pattern = result_key(prefix, "*")
    cursor, found, examined = 0, 0, 0
    while True:
        cursor, keys = connection.scan(cursor=cursor, match=pattern, count=_SCAN_BATCH)
        found += len(keys)
        examined += _SCAN_BATCH
        if cursor == 0:
            return found, True
        if examined >= scan_limit:
            return found, False


def render_text(status: Status) -> str:
    """The human view: a queue table, a worker table and one line for the result store."""
    taken = datetime.fromtimestamp(status.taken_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"sentiq status of {status.redis or 'Redis'} at {taken}", ""]
    lines += _table(
        ["QUEUE", "QUEUED", "STARTED", "FAILED", "FINISHED", "WORKERS", "OLDEST"],
        [
            [q.name, q.queued, q.started, q.failed, q.finished, q.workers, _seconds(q.oldest_queued_s)]
            for q in status.queues
        ],
        right=range(1, 7),
    )
    lines.append("")
    if status.workers:
        lines += _table(
            ["WORKER", "HOST", "PID", "STATE", "MODEL", "DEVICE", "PRECISION", "REVIEWS/S", "HEARTBEAT"],
            [
                [
                    w.name,
                    w.host,
                    w.pid if w.pid is not None else "-",
                    w.state,
                    w.model or "(not a sentiq worker)",
                    w.device or "-",
                    w.precision or "-",
                    "-" if w.reviews_per_s is None else f"{w.reviews_per_s:.1f}",
                    f"{_seconds(w.heartbeat_age_s)} ago" if w.heartbeat_age_s is not None else "-",
                ]
                for w in status.workers
            ],
            right=[2, 7],
        )
    else:
        lines.append("no workers")
    lines.append("")
    store = status.store
    if store.results is None:
        results = "results not counted"
    else:
        results = f"{'' if store.results_exact else 'at least '}{store.results:,} results"
    memory = ""
    if store.redis_used_memory_bytes is not None:
        limit = _mib(store.redis_maxmemory_bytes) if store.redis_maxmemory_bytes else "no limit"
        memory = f"; Redis memory {_mib(store.redis_used_memory_bytes)} ({limit})"
    stream = f"stream {store.stream} {store.stream_length:,} entries"
    lines.append(f"result store {store.prefix}: {results}, {stream}{memory}")
    return "\n".join(lines)


def watch(
    view: Callable[[], str],
    out: IO[str],
    interval_s: float,
    *,
    clear: bool,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print a fresh ``view()`` every ``interval_s`` seconds (``iterations`` times, or until interrupted).

    ``clear`` redraws in place (for a terminal); otherwise each view is appended (for a pipe or a
    log, e.g. JSON lines).
    """
    count = 0
    while iterations is None or count < iterations:
        out.write(("\x1b[H\x1b[2J" if clear else "") + view() + "\n")
        out.flush()
        count += 1
        if iterations is None or count < iterations:
            sleep(interval_s)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Iterable[int] = ()) -> list[str]:
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    aligned = set(right)
    return [
        "  ".join(
            cell.rjust(width) if column in aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def _age(moment: datetime | None, now: float) -> float | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return round(max(0.0, now - aware.timestamp()), 3)


def _parse_time(raw: object) -> datetime | None:
    if not raw:
        return None
    try:
        return utcparse(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"
