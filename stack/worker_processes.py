"""Local ``python -m worker`` subprocesses, for the demo, the tests, the benchmarks and the chaos run.

:class:`WorkerProcess` is one worker with its ready file (and log file), that can be signalled and
stopped; :class:`WorkerProcesses` is a group on one queue that :meth:`~WorkerProcesses.start`
returns from once every model is loaded, and that :meth:`~WorkerProcesses.stop` always stops,
by pid. Each worker gets the given settings as ``SENTIQ_*`` variables. Torch-free: it only
starts processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from sentiq.errors import SentiqError
from sentiq.settings import Settings

START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
#: Where a worker's stdout and stderr go: its log file, this process's terminal, or nowhere.
Output = Literal["log", "inherit", "discard"]


def worker_environment(
    settings: Settings, ready_file: Path, threads: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment plus what a worker needs to serve ``settings``, then ``extra``.

    The Redis URL, queue, key prefix and model folder, the device and precision, and the
    heartbeat and maintenance timing come from ``settings``; a password stays in the inherited
    environment. ``threads`` caps the worker's CPU threads (several workers share the cores).
    """
    env = dict(os.environ)
    env.update(
        SENTIQ_REDIS_URL=settings.redis.url,
        SENTIQ_QUEUE_NAME=settings.queue.name,
        SENTIQ_QUEUE_KEY_PREFIX=settings.queue.key_prefix,
        SENTIQ_MODEL_PATH=str(settings.model.path),
        SENTIQ_WORKER_DEVICE=settings.worker.device,
        SENTIQ_WORKER_PRECISION=settings.worker.precision,
        SENTIQ_WORKER_HEARTBEAT_TTL_S=str(settings.worker.heartbeat_ttl_s),
        SENTIQ_WORKER_MAINTENANCE_INTERVAL_S=str(settings.worker.maintenance_interval_s),
        SENTIQ_WORKER_READY_FILE=str(ready_file),
        OMP_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """One ``python -m worker --name NAME [ARGS]`` subprocess with its ready file and log file."""

    def __init__(
        self,
        settings: Settings,
        folder: Path,
        name: str,
        *args: str,
        threads: int = 1,
        env: Mapping[str, str] | None = None,
        output: Output = "log",
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.ready_file = folder / f"{name}.ready"
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("wb") if output == "log" else None
        stdout = {"log": self._log, "inherit": None, "discard": subprocess.DEVNULL}[output]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--name", name, *args],
            cwd=cwd,
            env=worker_environment(settings, self.ready_file, threads, env),
            stdout=stdout,
            stderr=subprocess.STDOUT if output != "inherit" else None,
            # A session of its own: a terminal's Ctrl-C reaches only the owner, which stops it.
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        """What the worker wrote so far (empty unless its output goes to its log file)."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Wait until the model is loaded and warm (the ready file exists); raise if it exits first."""
        deadline = time.monotonic() + timeout_s
        while not self.ready_file.exists():
            if self.process.poll() is not None:
                raise SentiqError(f"worker {self.name} exited while loading the model:\n{self.log}")
            if time.monotonic() > deadline:
                raise SentiqError(f"worker {self.name} not ready after {timeout_s:g}s:\n{self.log}")
            time.sleep(0.1)

    def send(self, sig: int) -> None:
        """Send ``sig`` unless the worker has exited."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` (None: already sent) and wait for the exit code (SIGKILL after ``timeout_s``)."""
        if sig is not None:
            self.send(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode)


class WorkerProcesses:
    """A group of worker subprocesses on one queue."""

    def __init__(self, name_prefix: str, *, log_level: str = "WARNING", quiet: bool = False) -> None:
        self.name_prefix = name_prefix
        self.log_level = log_level
        self.quiet = quiet
        self.workers: list[WorkerProcess] = []
        self.folder = Path(tempfile.mkdtemp(prefix="sentiq-workers-"))

    @property
    def pids(self) -> list[int]:
        """The process ids of the started workers."""
        return [worker.process.pid for worker in self.workers]

    def start(
        self,
        count: int,
        settings: Settings,
        timeout_s: float = START_TIMEOUT_S,
        *,
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
    ) -> None:
        """Start ``count`` workers serving ``settings``' Redis, queue and model; wait until all are ready.

        ``env`` adds variables (``SENTIQ_WORKER_*`` to try settings without code changes);
        ``threads`` is each worker's CPU thread count, by default an even share of the cores.
        """
        threads = threads or max(1, (os.cpu_count() or 1) // count)
        extra = {"SENTIQ_WORKER_LOG_LEVEL": self.log_level, **(env or {})}
        first = len(self.workers)
        for index in range(first, first + count):
            name = f"{self.name_prefix}-{os.getpid()}-{index}"
            # Quiet workers write to their log file, which a failed start shows.
            output: Output = "log" if self.quiet else "inherit"
            self.workers.append(
                WorkerProcess(settings, self.folder, name, threads=threads, env=extra, output=output)
            )
        deadline = time.monotonic() + timeout_s
        while not all(worker.ready_file.exists() for worker in self.workers):
            exited = [worker for worker in self.workers if worker.process.poll() is not None]
            if exited:
                log = exited[0].log.strip()[-2000:] if self.quiet else "(see its output above)"
                raise SentiqError(f"worker {exited[0].name} exited while loading the model: {log}")
            if time.monotonic() > deadline:
                raise SentiqError(f"workers not ready after {timeout_s:g}s")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM (each finishes its batch), SIGKILL whatever is left after 30 s; returns how many."""
        # All signalled first: each shutdown takes a while, and they can overlap. Never a second
        # SIGTERM: RQ takes that as a cold stop, abandoning the batch.
        for worker in self.workers:
            worker.send(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(None)
        stopped = len(self.workers)
        self.workers.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        return stopped
