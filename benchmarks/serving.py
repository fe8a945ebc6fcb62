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

from redis import Redis

from benchmarks.machine import peak_rss_mib
from producer import Client
from sentiq.settings import Settings, load_settings
from sentiq.worker_processes import WorkerProcesses


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
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block: worker processes inherit this environment."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def serving(
    model_dir: Path,
    redis_url: str,
    *,
    workers: int = 1,
    device: str = "cpu",
    dtype: str = "auto",
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
        # The client must never wait for room: the benchmark measures the path, not back-pressure.
        producer={"max_queue_depth": 0},
    )
    env = {"SENTIQ_WORKER_DEVICE": device, "SENTIQ_WORKER_DTYPE": dtype, **(worker_env or {})}
    pool = WorkerProcesses("bench", quiet=True)
    run = Serving(settings, [])
    try:
        with _environment(env):
            pool.start(workers, settings)
        run.pids = list(pool.pids)
        yield run
    finally:
        run.worker_peak_rss_mib = [rss for pid in pool.pids if (rss := peak_rss_mib(pid)) is not None]
        pool.stop()
        with Client.from_settings(settings) as client:
            # The one namespace clean-up the tests use too: queue, registries, jobs, result store.
            delete_namespace(client.redis, name)


def delete_namespace(client: Redis, namespace: str) -> None:
    """Delete the result store, the RQ queue, its registries and its jobs of one queue/prefix name.

    Never a flush: on a shared server only this run's own keys go.
    """
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    queue = Queue(namespace, connection=client)
    job_ids = set(queue.get_job_ids())
    for registry_class in (FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry):
        job_ids.update(registry_class(namespace, connection=client).get_job_ids())
    keys = [f"rq:job:{job_id}" for job_id in job_ids] + [f"rq:results:{job_id}" for job_id in job_ids]
    for pattern in (f"{namespace}:*", f"rq:*:{namespace}", f"rq:*:{namespace}:*"):
        keys.extend(key.decode() for key in client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.srem("rq:queues", f"rq:queue:{namespace}")


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
