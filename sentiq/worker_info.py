"""What a running worker says about itself, for ``python -m producer status``: one hash per worker.

RQ's own worker hash (``rq:worker:<name>``) already holds the host, pid, state, queues and
heartbeat; what only sentiq knows lives beside it, in a key the worker owns:

``<prefix>:worker:<worker name>`` (``<prefix>`` is ``SENTIQ_QUEUE_KEY_PREFIX``), a hash with a TTL
renewed at every heartbeat, so a worker that dies without a goodbye disappears on its own:

=================  ===============================================================================
``name``           the RQ worker name
``host``, ``pid``  where it runs
``model``          the model id every one of its predictions carries
``device``         ``cpu``, ``cuda:0`` ...
``precision``          ``fp32``, ``bf16``, ``fp16``
``engine``         what runs the model, e.g. ``torch 2.13.0``
``started_at``     Unix time the worker started serving
``updated_at``     Unix time of this record
``reviews_total``  reviews answered since it started (labels and errors)
``recent``         JSON ``[[unix second, reviews], ...]`` for the last :data:`RATE_WINDOW_S` seconds
=================  ===============================================================================

The reader computes "reviews per second over the last minute" from ``recent`` at its own time,
so an idle worker's rate falls to zero even when its record was last written a minute ago. Both
sides use this module: the layout is defined once. Torch-free.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from redis import Redis

_N = TypeVar("_N", int, float)

#: Seconds over which a worker's recent throughput is reported.
RATE_WINDOW_S = 60
#: A busy worker writes its record at most this often (and at once when its queue runs dry, and at
#: each heartbeat while idle).
PUBLISH_INTERVAL_S = 1.0


def worker_info_key(prefix: str, worker_name: str) -> str:
    """Redis key of one worker's sentiq record."""
    return f"{prefix}:worker:{worker_name}"


class ThroughputWindow:
    """Reviews answered per whole second, kept for the last :data:`RATE_WINDOW_S` seconds."""

    def __init__(self, buckets: Mapping[int, int] | None = None) -> None:
        self.buckets: dict[int, int] = dict(buckets or {})

    def add(self, reviews: int, at: float) -> None:
        """Count ``reviews`` answered at Unix time ``at``."""
        second = int(at)
        self.buckets[second] = self.buckets.get(second, 0) + reviews
        self.prune(at)

    def prune(self, now: float) -> None:
        """Forget the seconds that fell out of the window."""
        oldest = int(now) - RATE_WINDOW_S
        for second in [second for second in self.buckets if second <= oldest]:
            del self.buckets[second]

    def rate(self, now: float, started_at: float | None = None) -> float:
        """Reviews per second over the last minute, or over the worker's life when that is shorter.

        The window starts at the whole second that holds its start, so the work of a worker's
        first second (or of the window's first) is never cut off by rounding.
        """
        start = now - RATE_WINDOW_S
        if started_at is not None:
            start = max(start, started_at)
        first = int(start)
        reviews = sum(count for second, count in self.buckets.items() if first <= second <= now)
        return reviews / max(1.0, now - first)

    def to_json(self) -> str:
        """The ``recent`` field: ``[[second, reviews], ...]``, oldest first."""
        return json.dumps(sorted(self.buckets.items()), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> ThroughputWindow:
        """Read a ``recent`` field; anything unreadable counts as no recent work."""
        try:
            pairs = json.loads(raw) if raw else []
            return cls({int(second): int(count) for second, count in pairs})
        except (ValueError, TypeError):
            return cls()


@dataclass
class WorkerInfo:
    """One worker's sentiq record (see the module docstring for the fields)."""

    name: str
    host: str = ""
    pid: int = 0
    model: str = ""
    device: str = ""
    precision: str = ""
    engine: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    reviews_total: int = 0
    recent: ThroughputWindow = field(default_factory=ThroughputWindow)

    def reviews_per_second(self, now: float) -> float:
        """Reviews per second over the last minute, as of ``now``."""
        return self.recent.rate(now, self.started_at or None)

    def to_hash(self) -> dict[str, str]:
        """The Redis hash fields."""
        return {
            "name": self.name,
            "host": self.host,
            "pid": str(self.pid),
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "engine": self.engine,
            "started_at": f"{self.started_at:.3f}",
            "updated_at": f"{self.updated_at:.3f}",
            "reviews_total": str(self.reviews_total),
            "recent": self.recent.to_json(),
        }

    @classmethod
    def from_hash(cls, name: str, raw: Mapping[bytes | str, bytes | str]) -> WorkerInfo:
        """Read a record written by :meth:`to_hash`; missing or malformed fields read as empty."""
        fields = {_text(key): _text(value) for key, value in raw.items()}
        return cls(
            name=fields.get("name") or name,
            host=fields.get("host", ""),
            pid=_number(fields.get("pid"), int, 0),
            model=fields.get("model", ""),
            device=fields.get("device", ""),
            precision=fields.get("precision", ""),
            engine=fields.get("engine", ""),
            started_at=_number(fields.get("started_at"), float, 0.0),
            updated_at=_number(fields.get("updated_at"), float, 0.0),
            reviews_total=_number(fields.get("reviews_total"), int, 0),
            recent=ThroughputWindow.from_json(fields.get("recent")),
        )


class WorkerInfoPublisher:
    """The worker's side: counts answered reviews and writes its record, at most once a second.

    ``ttl_s`` should outlive the worker's heartbeat interval (RQ gives its own worker hash
    ``worker_ttl + 60``); :meth:`publish` is called at every heartbeat to renew it.
    """

    def __init__(self, connection: Redis, prefix: str, info: WorkerInfo, ttl_s: int) -> None:
        self.connection = connection
        self.key = worker_info_key(prefix, info.name)
        self.info = info
        self.ttl_s = ttl_s
        self._published_at = 0.0
        # A worker records from its main thread and its heartbeat thread (overlapping batches).
        self._lock = threading.RLock()

    def record(self, reviews: int, at: float | None = None, *, flush: bool = False) -> None:
        """Count ``reviews`` answered now; writes the record when the last write is a second old.

        ``flush`` writes it now whatever the time (the worker's queue ran dry: without a write, the
        last second of work would show only at the next heartbeat). ``record(0)`` (at each
        heartbeat) renews the record when due. Raises Redis errors (the worker decides how to ride
        out an outage).
        """
        at = time.time() if at is None else at
        with self._lock:
            if reviews:
                self.info.reviews_total += reviews
                self.info.recent.add(reviews, at)
            if flush or at - self._published_at >= PUBLISH_INTERVAL_S:
                self.publish(at)

    def publish(self, at: float | None = None) -> None:
        """Write the whole record and renew its TTL (one round trip)."""
        at = time.time() if at is None else at
        with self._lock:
            self.info.updated_at = at
            self.info.recent.prune(at)
            record = self.info.to_hash()
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping=record)  # type: ignore[arg-type]
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
        with self._lock:
            self._published_at = max(self._published_at, at)

    def remove(self) -> None:
        """Delete the record (a worker stopping cleanly)."""
        self.connection.delete(self.key)


def read_worker_infos(connection: Redis, prefix: str, names: Sequence[str]) -> dict[str, WorkerInfo]:
    """The records of those ``names`` that have one, in one round trip."""
    if not names:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(worker_info_key(prefix, name))
        replies = pipe.execute()
    return {name: WorkerInfo.from_hash(name, raw) for name, raw in zip(names, replies, strict=True) if raw}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(raw: str | None, kind: Callable[[str], _N], default: _N) -> _N:
    try:
        return kind(raw) if raw else default
    except ValueError:
        return default
