"""``python -m worker``: run one sentiq RQ worker (one per GPU, or on the CPU)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rq import Queue
from rq.serializers import JSONSerializer

from sentiq.errors import SentiqError
from sentiq.redis_connection import connect, redact_url
from sentiq.settings import Settings, load_settings
from worker.runtime import build_classifier
from worker.worker import SentiqWorker, touch_ready_file

log = logging.getLogger("worker")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option falls back to its ``SENTIQ_*`` setting."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Classify review jobs from a Redis queue with a fine-tuned model. "
        "Options override the SENTIQ_* environment settings.",
    )
    parser.add_argument("--model", type=Path, help="model folder (SENTIQ_MODEL_PATH)")
    parser.add_argument("--redis-url", help="Redis URL (SENTIQ_REDIS_URL)")
    parser.add_argument("--queue", help="queue name (SENTIQ_QUEUE_NAME)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (SENTIQ_WORKER_DEVICE)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (SENTIQ_WORKER_DTYPE)",
    )
    parser.add_argument("--max-batch-size", type=int, help="reviews per forward pass")
    parser.add_argument("--max-wait-ms", type=int, help="how long to gather queued jobs into a batch")
    parser.add_argument("--name", help="worker name (default: RQ's host.pid-based name)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (SENTIQ_WORKER_LOG_LEVEL)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment settings with the given options laid over them."""
    return load_settings(
        redis={"url": args.redis_url},
        queue={"name": args.queue},
        model={"path": args.model},
        worker={
            "device": args.device,
            "dtype": args.dtype,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "log_level": args.log_level,
        },
    )


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> int:
    """Load the model, then work the queue until stopped (or until empty with ``burst``)."""
    connection = connect(settings.redis)
    log.info("redis %s, queue %r", redact_url(settings.redis.url), settings.queue.name)
    classifier = build_classifier(settings, connection)
    queue = Queue(settings.queue.name, connection=connection, serializer=JSONSerializer)
    worker = SentiqWorker([queue], classifier=classifier, settings=settings.worker, name=name)
    touch_ready_file(settings.worker.ready_file)
    worker.work(burst=burst, logging_level=settings.worker.log_level.upper())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m worker`` and ``sentiq-worker``."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"error: invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.worker.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(settings, burst=args.burst, name=args.name)
    except SentiqError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
