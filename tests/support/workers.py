"""Real ``python -m worker`` subprocesses for end-to-end tests, always stopped afterwards.

A thin layer over :mod:`stack.worker_processes`: one CPU thread per worker (two workers share two
cores), a log file per worker, and extra variables given as keyword arguments.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from sentiq.settings import Settings
from stack import worker_processes

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, ready_file: Path, **extra: str) -> dict[str, str]:
    """The environment a worker subprocess gets: the test's settings as SENTIQ_* variables."""
    return worker_processes.worker_environment(settings, ready_file, threads=1, extra=extra)


class WorkerProcess(worker_processes.WorkerProcess):
    """One worker subprocess with its log file and ready file; ``env`` given as keyword arguments.

    Its name ends with the test's queue name: RQ worker names are global on a Redis, and
    ``make test`` runs tests side by side (two tests' ``victim`` workers would collide).
    """

    def __init__(self, settings: Settings, folder: Path, name: str, *args: str, **env: str) -> None:
        namespace = settings.queue.name
        unique = name if name.endswith(namespace) else f"{name}-{namespace}"
        super().__init__(settings, folder, unique, *args, env=env, cwd=REPO_ROOT)


@contextlib.contextmanager
def running_workers(
    settings: Settings, folder: Path, count: int, *args: str, **env: str
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` workers, wait until each has loaded its model, and stop them all on exit."""
    workers: list[WorkerProcess] = []
    try:
        for index in range(count):
            workers.append(WorkerProcess(settings, folder, f"w{index}-{settings.queue.name}", *args, **env))
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop(signal.SIGTERM, timeout_s=15)
