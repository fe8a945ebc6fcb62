"""Real ``python -m worker`` processes serving one model folder on a private queue, for a benchmark.

Every run gets a queue and key prefix of its own, so it can share a Redis with others; its keys
are deleted afterwards. The workers' peak memory is read just before they are stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.machine import peak_rss_mib
from producer import Client
from sentiq.settings import Settings, load_settings
from stack.embedded_redis import EmbeddedRedis
from stack.namespace import delete_namespace
from stack.worker_processes import WorkerProcesses


@dataclass
class Serving:
    """Workers that are ready, the settings that reach them, and (after exit) their peak memory."""

    settings: Settings
    pids: list[int]
    worker_peak_rss_mib: list[float] = field(default_factory=list)

    def client(self) -> Client:
        """A producer client on this run's queue (close it, or use it as a context manager)."""
        return Client.from_settings(self.settings)


@contextlib.contextmanager
def serving(
    model_dir: Path,
    redis_url: str,
    *,
    workers: int = 1,
    device: str = "cpu",
    precision: str = "auto",
    worker_env: Mapping[str, str] | None = None,
) -> Iterator[Serving]:
    """Start ``workers`` workers on ``model_dir`` and a fresh queue; stop them and delete its keys after.

    ``worker_env`` adds ``SENTIQ_WORKER_*`` (or any other) variables, for trying settings without
    code changes.
    """
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    settings = load_settings(
        redis={"url": redis_url},
        queue={"name": name, "key_prefix": name},
        model={"path": model_dir},
        worker={"device": device, "precision": precision},
        # The client must never wait for room: the benchmark measures the path, not back-pressure.
        producer={"max_queue_depth": 0},
    )
    pool = WorkerProcesses("bench", quiet=True)
    run = Serving(settings, [])
    try:
        pool.start(workers, settings, env=worker_env)
        run.pids = list(pool.pids)
        yield run
    finally:
        run.worker_peak_rss_mib = [rss for pid in pool.pids if (rss := peak_rss_mib(pid)) is not None]
        pool.stop()
        with Client.from_settings(settings) as client:
            # The one namespace clean-up the tests use too: queue, registries, jobs, result store.
            delete_namespace(client.redis, name)


@contextlib.contextmanager
def redis_url_or_private(url: str | None) -> Iterator[str]:
    """``url`` when given, else the URL of a private Redis server started here and stopped after."""
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


def submit_and_wait(client: Client, texts: Sequence[str], timeout_s: float = 1800) -> tuple[float, float]:
    """Seconds to submit ``texts`` and seconds from submit to the last result read back."""
    started = time.perf_counter()
    ids = client.submit(texts)
    submitted = time.perf_counter()
    predictions = client.results(ids, timeout=timeout_s)
    finished = time.perf_counter()
    failed = [p for p in predictions if p.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} review(s) came back with an error, first: {failed[0].error}")
    return submitted - started, finished - started
