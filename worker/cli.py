"""``python -m worker``: run one sentiq RQ worker (one per GPU, or on the CPU).

Start-up checks run cheapest first, so a wrong setting fails in a second instead of after the
model has loaded: settings, model folder, Redis, its eviction policy, the worker name, and only
then torch and the model. Every start-up failure is one ``error: ...`` line on stderr and a
non-zero exit status (see :data:`EXIT_STATUS_HELP`); the traceback is logged only at DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from sentiq.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigurationError,
    ModelLoadError,
    RedisAuthenticationError,
    RedisUnavailableError,
    SentiqError,
)
from sentiq.redis_connection import (
    connect,
    credentials_refused,
    eviction_problem,
    redact_secrets,
    redact_url,
    url_has_password,
)
from sentiq.settings import (
    PRECISION_OF_DTYPE,
    PRECISIONS,
    Overlap,
    Settings,
    describe_validation_error,
    load_settings,
)

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics

log = logging.getLogger("worker")

# The scheme of all three command lines (sentiq.errors), with what it means for a worker.
EXIT_STATUS_HELP = f"""\
exit status (the same for python -m worker, producer and training):
  0    stopped on request (SIGTERM, SIGINT) or, with --burst, once the queue was empty
  {EXIT_FAILURE}    runtime failure that may pass: Redis unreachable, or --name still registered
       by a worker that died less than its registration TTL ago; a supervisor may retry
  {EXIT_USAGE}    bad input or configuration: an invalid option or SENTIQ_* setting, a Redis URL
       that is not redis://, rediss:// or unix://, a model folder that is missing or does not
       load, a Redis that may evict keys (see SENTIQ_REDIS_ALLOW_EVICTION), Redis refusing the
       password (at start or later: the password is read once); retrying cannot help
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C) while starting

Every start-up failure is one 'error: ...' line on stderr; --log-level DEBUG adds the traceback.
Pass the Redis password in SENTIQ_REDIS_PASSWORD or SENTIQ_REDIS_PASSWORD_FILE, not in
--redis-url: command lines are visible to every user of the host in `ps`.
"""

PASSWORD_ON_COMMAND_LINE = (
    "warning: --redis-url carries a password, which every user of this host can read in `ps`; "
    "set SENTIQ_REDIS_PASSWORD or SENTIQ_REDIS_PASSWORD_FILE instead and leave it out of the URL"
)


class StartupError(SentiqError):
    """A start-up check failed; ``exit_code`` says whether retrying may help (1) or not (2)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option falls back to its ``SENTIQ_*`` setting."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Classify review jobs from a Redis queue with a fine-tuned model. "
        "Options override the SENTIQ_* environment settings.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, help="model folder (SENTIQ_MODEL_PATH)")
    parser.add_argument(
        "--redis-url",
        help="Redis URL (SENTIQ_REDIS_URL); keep the password out of it, see below",
    )
    parser.add_argument("--queue", help="queue name (SENTIQ_QUEUE_NAME)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (SENTIQ_WORKER_DEVICE)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="weights' precision: auto, fp32, bf16 or fp16 (SENTIQ_WORKER_PRECISION)",
    )
    # The option's former name and values (float32, bfloat16, float16), kept for old command lines.
    parser.add_argument(
        "--dtype",
        choices=list(PRECISION_OF_DTYPE),
        type=str.lower,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "torch", "onnx-int8"],
        help="what runs the forward passes (auto: the int8 copy on CPU when measured faster)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, help="reviews per forward pass (0: set by the token budget)"
    )
    parser.add_argument(
        "--overlap-batches",
        choices=get_args(Overlap),
        help="run the passes on a thread while the next batch starts (auto: on GPUs)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=int,
        help="how long a batch waits for more jobs once the queue runs dry (0: never)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        help="token truncation length; 0 takes the model folder's own (SENTIQ_WORKER_MAX_LENGTH)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port, 0 for any free one (SENTIQ_WORKER_METRICS_PORT; "
        "default: no metrics endpoint)",
    )
    parser.add_argument(
        "--metrics-host",
        help="address of the metrics endpoint (SENTIQ_WORKER_METRICS_HOST, default 127.0.0.1)",
    )
    parser.add_argument("--name", help="worker name (default: a random one)")
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
            "precision": args.precision or (PRECISION_OF_DTYPE[args.dtype] if args.dtype else None),
            "engine": args.engine,
            "max_batch_size": args.max_batch_size,
            "overlap_batches": args.overlap_batches,
            "max_wait_ms": args.max_wait_ms,
            "max_length": args.max_length,
            "log_level": args.log_level,
            "metrics_port": args.metrics_port,
            "metrics_host": args.metrics_host,
        },
    )


def check_model_folder(path: Path) -> None:
    """Refuse a model path that is not there before anything slow happens."""
    if not path.exists():
        raise StartupError(
            f"model folder {path} does not exist (--model / SENTIQ_MODEL_PATH); train one with "
            "`python -m training train --output-dir DIR` or point --model at a folder it wrote",
            EXIT_USAGE,
        )
    if not path.is_dir():
        raise StartupError(
            f"model path {path} is a file, not a model folder (--model / SENTIQ_MODEL_PATH)", EXIT_USAGE
        )


def connect_checked(settings: Settings) -> Redis:
    """A pinged client whose server cannot silently evict queued jobs (unless allowed)."""
    url = redact_url(settings.redis.url)
    connection = connect(settings.redis)
    problem = eviction_problem(connection)
    if problem is not None:
        if not settings.redis.allow_eviction:
            connection.close()
            raise StartupError(
                f"Redis at {url}: {problem}; queued jobs and results could vanish. Set "
                "maxmemory-policy to noeviction, or SENTIQ_REDIS_ALLOW_EVICTION=true to start anyway",
                EXIT_USAGE,
            )
        log.warning("Redis at %s: %s; starting anyway (SENTIQ_REDIS_ALLOW_EVICTION is set)", url, problem)
    return connection


def wait_for_redis(settings: Settings) -> Redis:
    """:func:`connect_checked`, retried with capped backoff while Redis cannot be reached.

    A worker started before its Redis, or while Redis restarts, waits up to
    ``SENTIQ_WORKER_REDIS_STARTUP_WAIT_S`` instead of crash-looping; a refused password fails at once.
    """
    deadline = time.monotonic() + settings.worker.redis_startup_wait_s
    delay = 0.5
    while True:
        try:
            return connect_checked(settings)
        except RedisAuthenticationError:
            raise  # a refused password will not pass on retry
        except (RedisUnavailableError, RedisConnectionError, RedisTimeoutError) as error:
            if isinstance(error, AuthenticationError) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s; trying again in %.1fs", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def name_in_use(connection: Redis, name: str) -> str | None:
    """Why ``name`` cannot be registered now (an earlier worker's registration is alive), or None.

    RQ refuses a name whose worker record has no death date; a worker killed with SIGKILL never
    writes one, so its record blocks the name until it expires.
    """
    existing = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
    if existing is None or existing.death_date is not None:
        return None
    seen = "never sent a heartbeat"
    if existing.last_heartbeat is not None:
        age = (datetime.now(UTC) - existing.last_heartbeat).total_seconds()
        seen = f"was last seen {max(age, 0):.0f}s ago ({existing.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC)"
    owner = f" (pid {existing.pid} on {existing.hostname})" if existing.pid and existing.hostname else ""
    ttl = int(connection.ttl(existing.key))
    expiry = f"its registration expires in {ttl}s" if ttl > 0 else "its registration does not expire"
    return (
        f"worker name {name!r} is taken: the worker registered under it{owner} {seen} and {expiry}. "
        f"If it is still running, start this one with another --name; if it was killed, "
        f"choose another --name or wait {max(ttl, 0)}s"
    )


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> int:
    """Check everything, load the model, then work the queue until stopped (or empty with ``burst``)."""
    check_model_folder(settings.model.path)
    connection = wait_for_redis(settings)
    log.info("redis %s, queue %r", redact_url(settings.redis.url), settings.queue.name)
    if name is not None and (taken := name_in_use(connection, name)) is not None:
        raise StartupError(taken, EXIT_FAILURE)
    from worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    # Bound before the model loads: a taken port fails in a second, and Prometheus sees the
    # process (process_* metrics) while it loads.
    server = None
    if settings.worker.metrics_port is not None:
        server = metrics.serve(settings.worker.metrics_host, settings.worker.metrics_port)
    try:
        return _serve(settings, connection, metrics, burst=burst, name=name)
    finally:
        if server is not None:
            server.close()


def _serve(
    settings: Settings, connection: Redis, metrics: WorkerMetrics, *, burst: bool, name: str | None
) -> int:
    # torch comes in with these (seconds): only once every cheap check above has passed.
    from worker.assembly import build_classifier
    from worker.worker import SentiqWorker, until_redis_answers

    classifier = build_classifier(settings, connection)
    queue = Queue(settings.queue.name, connection=connection, serializer=JSONSerializer)
    # RQ's constructor asks Redis for this client's address: a Redis lost while the model loaded is
    # waited for here as everywhere else in a worker's life.
    worker = until_redis_answers(
        "create the worker",
        lambda: SentiqWorker(
            [queue],
            classifier=classifier,
            settings=settings.worker,
            queue_settings=settings.queue,
            metrics=metrics,
            name=name,
        ),
    )
    # No ready file yet: the worker's first heartbeat writes it, after RQ has installed its SIGTERM
    # handler, so a stop right after "ready" is a warm shutdown rather than the default kill.
    try:
        worker.work(burst=burst, logging_level=settings.worker.log_level.upper())
        if worker.credentials_refused is not None:
            # RQ's loop ends on it without raising: exit 2, as at start-up.
            raise worker.credentials_refused
    except ValueError:
        # RQ's register_birth refuses a taken name with a ValueError; another worker can take the
        # name while this one loads its model.
        if settings.worker.ready_file is not None:
            settings.worker.ready_file.unlink(missing_ok=True)
        if name is not None and (taken := name_in_use(connection, name)) is not None:
            raise StartupError(taken, EXIT_FAILURE) from None
        raise
    return 0


def describe_failure(error: Exception, settings: Settings) -> tuple[str, int]:
    """The one-line message and exit status for an exception that ended the worker.

    The message goes through :func:`redact_secrets` whatever raised it: a redis-py or library
    message may quote a URL.
    """
    code = EXIT_FAILURE
    if isinstance(error, StartupError):
        message, code = str(error), error.exit_code
    elif isinstance(error, ModelLoadError):
        message, code = f"cannot load the model: {error}", EXIT_USAGE
    elif isinstance(error, ConfigurationError):
        message, code = str(error), EXIT_USAGE
    elif isinstance(error, SentiqError):
        message = str(error)
    elif isinstance(error, AuthenticationError):
        # Refused by a step after the first PING (CONFIG GET, registering the worker).
        message, code = str(credentials_refused(error, settings.redis)), EXIT_USAGE
    elif isinstance(error, RedisError):
        message = f"Redis at {redact_url(settings.redis.url)}: {type(error).__name__}: {error}"
    else:
        message = f"unexpected {type(error).__name__}: {error} (--log-level DEBUG shows the traceback)"
    return redact_secrets(message, settings.redis), code


def fail(message: str, code: int) -> int:
    """Print ``error: message`` as a single line on stderr and return ``code``."""
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m worker`` and ``sentiq-worker``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.redis_url and url_has_password(args.redis_url):
        print(PASSWORD_ON_COMMAND_LINE, file=sys.stderr, flush=True)
    try:
        settings = settings_from_args(args)
    except ValidationError as error:
        return fail(describe_validation_error(error), EXIT_USAGE)
    except ValueError as error:
        # pydantic-settings' SettingsError: a SENTIQ_* value that does not even parse.
        return fail(f"invalid settings: {error}", EXIT_USAGE)
    level = settings.worker.log_level.upper()
    if not isinstance(logging.getLevelName(level), int):
        return fail(
            f"invalid setting --log-level (SENTIQ_WORKER_LOG_LEVEL): unknown level {level!r}; "
            "use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            EXIT_USAGE,
        )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(settings, burst=args.burst, name=args.name)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        log.debug("worker stopped by %s", type(error).__name__, exc_info=True)
        return fail(*describe_failure(error, settings))
