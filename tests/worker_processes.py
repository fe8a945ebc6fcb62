"""Real ``python -m worker`` subprocesses for end-to-end tests, always stopped afterwards."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sentiq.settings import Settings
from sentiq.worker_processes import worker_environment

REPO_ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings: Settings, ready_file: Path, **extra: str) -> dict[str, str]:
    """The environment a worker subprocess gets: the test's settings as SENTIQ_* variables."""
    # Two workers share two cores: one thread each avoids oversubscription.
    env = worker_environment(settings, ready_file, threads=1)
    env.update(
        {
            "SENTIQ_WORKER_DEVICE": "cpu",
            "SENTIQ_WORKER_DTYPE": settings.worker.dtype,
            "SENTIQ_WORKER_HEARTBEAT_TTL_S": str(settings.worker.heartbeat_ttl_s),
            "SENTIQ_WORKER_MAINTENANCE_INTERVAL_S": str(settings.worker.maintenance_interval_s),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """One worker subprocess with its log file and ready file."""

    def __init__(self, settings: Settings, folder: Path, name: str, *args: str, **env: str) -> None:
        self.name = name
        self.ready_file = folder / f"{name}.ready"
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--name", name, *args],
            cwd=REPO_ROOT,
            env=worker_env(settings, self.ready_file, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited early:\n{self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} not ready after {timeout_s}s:\n{self.log}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


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
