"""Local ``python -m worker`` subprocesses, for the demo and the benchmark.

Each worker gets the given settings as ``SENTIQ_*`` variables, an even share of the CPU cores
and a ready file; :meth:`WorkerProcesses.start` returns once every model is loaded, and
:meth:`WorkerProcesses.stop` always stops them, by pid. Torch-free: it only starts processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sentiq.errors import SentiqError
from sentiq.settings import Settings

START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30


def worker_environment(settings: Settings, ready_file: Path, threads: int) -> dict[str, str]:
    """This process's environment plus what a worker needs to serve ``settings``' queue and model."""
    env = dict(os.environ)
    env.update(
        SENTIQ_REDIS_URL=settings.redis.url,
        SENTIQ_QUEUE_NAME=settings.queue.name,
        SENTIQ_QUEUE_KEY_PREFIX=settings.queue.key_prefix,
        SENTIQ_MODEL_PATH=str(settings.model.path),
        SENTIQ_WORKER_READY_FILE=str(ready_file),
        OMP_NUM_THREADS=str(threads),
    )
    return env


class WorkerProcesses:
    """A group of worker subprocesses on one queue."""

    def __init__(self, name_prefix: str, *, log_level: str = "WARNING", quiet: bool = False) -> None:
        self.name_prefix = name_prefix
        self.log_level = log_level
        self.quiet = quiet
        self.processes: list[subprocess.Popen[bytes]] = []
        self.folder = Path(tempfile.mkdtemp(prefix="sentiq-workers-"))

    @property
    def pids(self) -> list[int]:
        """The process ids of the started workers."""
        return [process.pid for process in self.processes]

    def start(self, count: int, settings: Settings, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start ``count`` workers serving ``settings``' Redis, queue and model; wait until all are ready."""
        threads = max(1, (os.cpu_count() or 1) // count)
        for index in range(count):
            env = worker_environment(settings, self._ready_file(index), threads)
            env["SENTIQ_WORKER_LOG_LEVEL"] = self.log_level
            command = [sys.executable, "-m", "worker", "--name", f"{self.name_prefix}-{os.getpid()}-{index}"]
            # Sessions of their own: a terminal's Ctrl-C reaches only the owner, which stops them.
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL if self.quiet else None,
                    stderr=subprocess.DEVNULL if self.quiet else None,
                )
            )
        deadline = time.monotonic() + timeout_s
        while not all(self._ready_file(index).exists() for index in range(count)):
            if any(process.poll() is not None for process in self.processes):
                raise SentiqError("a worker exited while loading the model (see its log)")
            if time.monotonic() > deadline:
                raise SentiqError(f"workers not ready after {timeout_s:g}s")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM (each finishes its batch), SIGKILL whatever is left after 30 s; returns how many."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stopped = len(self.processes)
        self.processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        return stopped

    def _ready_file(self, index: int) -> Path:
        return self.folder / f"worker-{index}.ready"
