"""``python -m producer``: enqueue reviews, read results, classify, and stream the demo.

Exit codes (the scheme of all three command lines, :mod:`sentiq.errors`): 0 on success; 2 for
usage and input errors (bad options, unreadable or malformed files, invalid reviews, invalid
settings); 1 for what went wrong at run time and may pass on a retry (Redis unreachable, results
that did not arrive in time, ids with no result, reviews that came back with an error from
``classify``, a queue still full after ``SENTIQ_PRODUCER_QUEUE_FULL_TIMEOUT_S``, a Redis out of
memory); 130 on Ctrl-C. Errors are one ``error: ...`` line on stderr, and never show a password.

Pass the Redis password in ``SENTIQ_REDIS_PASSWORD`` or ``SENTIQ_REDIS_PASSWORD_FILE`` rather than
in ``--redis-url``: command lines are visible to every user of the host in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis.exceptions import RedisError

from producer.client import Client
from producer.progress import Progress
from producer.reading import INPUT_FORMATS, STDIN, InputFormat, InputReview, read_reviews
from producer.stream import preview, stream_reviews
from producer.writing import OUTPUT_FORMATS, ResultWriter
from sentiq.contract import MAX_EXPLAIN_WORDS, explain_problem, review_problem
from sentiq.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_STATUS_SUMMARY,
    EXIT_SUCCESS,
    EXIT_USAGE,
    InvalidReviewError,
    SentiqError,
    exit_code_for,
)
from sentiq.redis_connection import connect, redact_secrets, redact_url, url_has_password
from sentiq.settings import Settings, describe_validation_error, load_settings

PASSWORD_ON_COMMAND_LINE = (
    "warning: --redis-url carries a password, which every user of this host can read in `ps`; "
    "set SENTIQ_REDIS_PASSWORD or SENTIQ_REDIS_PASSWORD_FILE instead and leave it out of the URL"
)


class CommandError(Exception):
    """Raised by a command to exit with ``code`` after printing ``message`` as an error."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m producer``."""
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="Send reviews to sentiq's workers over Redis and read their sentiment predictions.",
        epilog="Settings come from SENTIQ_* environment variables (and .env); the options override them.\n\n"
        + EXIT_STATUS_SUMMARY
        + "\n1: Redis unreachable, results missing after the timeout, a queue still full, Redis out of"
        " memory, reviews answered with an error (classify); 2: a bad option or setting, an"
        " unreadable or malformed file, an invalid review.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--redis-url",
        help="Redis URL (redis://, rediss://, unix://); env SENTIQ_REDIS_URL. Keep the password out of "
        "it (visible in `ps`): use SENTIQ_REDIS_PASSWORD or SENTIQ_REDIS_PASSWORD_FILE",
    )
    parser.add_argument("--queue", help="RQ queue name; env SENTIQ_QUEUE_NAME")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue the reviews of a file and print their ids (or wait for the results)",
        description=(
            "Enqueue the reviews of FILE: CSV with a 'review' column (optional 'id'), JSON Lines with "
            "'review' or 'text' (optional 'id'), or plain text with one review per line; by extension "
            "(.csv, .jsonl, .ndjson, .txt, each optionally .gz). '-' reads plain text from stdin. "
            "Prints the review ids, one per line, unless --wait."
        ),
    )
    enqueue.add_argument("file", metavar="FILE|-", help="input file, or - for stdin")
    _add_format_option(enqueue)
    enqueue.add_argument("--wait", action="store_true", help="wait for the results and write them")
    enqueue.add_argument(
        "--output", metavar="FILE", help="with --wait: write results to FILE (.csv or .jsonl, optionally .gz)"
    )
    enqueue.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        help="with --wait: output format (default: by --output's extension; jsonl on stdout)",
    )
    _add_timeout_option(enqueue)
    _add_explain_option(enqueue)
    enqueue.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    get = commands.add_parser(
        "get",
        help="print stored results as JSON lines",
        description="Print the stored result of each ID as a JSON line; ids with no result exit 1.",
    )
    get.add_argument("ids", nargs="+", metavar="ID")

    classify = commands.add_parser(
        "classify",
        help="classify texts given on the command line",
        description="Submit each TEXT, wait, and print 'label score text-preview' lines.",
    )
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--json", action="store_true", help="print full results as JSON lines")
    _add_timeout_option(classify)
    _add_explain_option(classify)

    stream = commands.add_parser(
        "stream",
        help="the demo: enqueue a file and print predictions as they arrive, then a summary",
        description=(
            "Enqueue FILE's reviews, print each prediction as it arrives (with a right/WRONG check "
            "when the file has a 'sentiment' column), then count, errors, accuracy, reviews per "
            "second and latency p50/p95."
        ),
    )
    stream.add_argument("file", metavar="FILE|-", help="input file, or - for stdin")
    _add_format_option(stream)
    stream.add_argument("--limit", type=_positive_int, metavar="N", help="stream only the first N reviews")
    stream.add_argument("--quiet", action="store_true", help="print only the summary")
    _add_timeout_option(stream)

    status = commands.add_parser(
        "status",
        help="queues, workers and the result store at a glance",
        description=(
            "Show each queue's depth, started, failed and finished counts; each worker's host, pid, "
            "state, model, device and reviews per second over the last minute; the result store's "
            "size and stream length. Queues: --queue (SENTIQ_QUEUE_NAME) and every queue a sentiq "
            "worker serves."
        ),
    )
    status.add_argument("--json", action="store_true", help="one JSON object (a line per refresh)")
    status.add_argument(
        "--watch",
        type=_positive_float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted",
    )

    exporter = commands.add_parser(
        "exporter",
        help="serve queue depths, worker counts and the result store as Prometheus metrics",
        description="Serve /metrics for Prometheus: queues, workers and result store, read from Redis "
        'at each scrape. One per Redis; an autoscaler scales on sentiq_queue_jobs{state="queued"}.',
    )
    _add_listen_options(exporter, 9310)

    dashboard = commands.add_parser(
        "dashboard",
        help="rq-dashboard, reading sentiq's JSON jobs and workers (needs rq-dashboard)",
        description="rq-dashboard on this Redis with JSON jobs and workers. No authentication: keep it "
        "on 127.0.0.1 or behind an authenticating proxy.",
    )
    _add_listen_options(dashboard, 9181)
    dashboard.add_argument(
        "--allow-delete", action="store_true", help="show rq-dashboard's delete and empty buttons"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "enqueue" and args.output and not args.wait:
        parser.error("--output needs --wait")
    if args.redis_url and url_has_password(args.redis_url):
        sys.stderr.write(PASSWORD_ON_COMMAND_LINE + "\n")
    settings: Settings | None = None
    try:
        settings = load_settings(redis={"url": args.redis_url}, queue={"name": args.queue})
        return int(_COMMANDS[args.command](args, settings))
    except CommandError as error:
        return _fail(str(error), error.code)
    except ValidationError as error:
        return _fail(describe_validation_error(error), EXIT_USAGE)
    except SettingsError as error:
        # A SENTIQ_* value that does not even parse (e.g. a list that is not JSON).
        return _fail(f"invalid settings: {error}", EXIT_USAGE)
    except SentiqError as error:
        return _fail(str(error), exit_code_for(error))
    except RedisError as error:
        reason = str(error) if settings is None else redact_secrets(str(error), settings.redis)
        return _fail(f"Redis error: {type(error).__name__}: {reason}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    reviews = _read_checked(args.file, args.format, settings)
    show_progress = not args.no_progress
    with Client.from_settings(settings) as client:
        with Progress(len(reviews), "enqueue", enabled=show_progress) as progress:
            ids = client.submit(
                [review.text for review in reviews],
                [review.id for review in reviews],
                on_enqueued=progress.update,
                explain=args.explain,
            )
        if not args.wait:
            sys.stdout.writelines(f"{review_id}\n" for review_id in ids)
            return EXIT_SUCCESS
        with (
            ResultWriter(args.output, args.output_format) as writer,
            Progress(len(ids), "results", enabled=show_progress) as progress,
        ):
            for prediction in client.iter_results(ids, timeout=args.timeout):
                writer.write(prediction)
                progress.update(writer.count)
    return EXIT_SUCCESS


def _get(args: argparse.Namespace, settings: Settings) -> int:
    ids: list[str] = list(dict.fromkeys(args.ids))
    with Client.from_settings(settings) as client:
        found = client.fetch(ids)
    for review_id in ids:
        if review_id in found:
            sys.stdout.write(found[review_id].to_json() + "\n")
    missing = [review_id for review_id in ids if review_id not in found]
    if missing:
        sys.stdout.flush()
        raise CommandError(f"no result for {len(missing)} id(s): {', '.join(missing)}")
    return EXIT_SUCCESS


def _classify(args: argparse.Namespace, settings: Settings) -> int:
    texts: list[str] = args.texts
    with Client.from_settings(settings) as client:
        predictions = client.classify(texts, timeout=args.timeout, explain=args.explain)
    for prediction, text in zip(predictions, texts, strict=True):
        if args.json:
            sys.stdout.write(prediction.to_json() + "\n")
        elif prediction.error is not None:
            sys.stdout.write(f"error  {prediction.error}  {preview(text)}\n")
        else:
            sys.stdout.write(f"{prediction.label}  {prediction.score or 0.0:.3f}  {preview(text)}\n")
            if prediction.attributions:
                words = ", ".join(f"{word} {value:+.2f}" for word, value in prediction.attributions)
                sys.stdout.write(f"       words: {words}\n")
    failed = sum(prediction.error is not None for prediction in predictions)
    if failed:
        raise CommandError(f"{failed} of {len(predictions)} review(s) could not be classified")
    return EXIT_SUCCESS


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    reviews = _read_checked(args.file, args.format, settings)
    if args.limit is not None:
        reviews = reviews[: args.limit]
    has_labels = any(review.label is not None for review in reviews)
    with Client.from_settings(settings) as client:
        summary = stream_reviews(
            client,
            [review.text for review in reviews],
            [review.label for review in reviews] if has_labels else None,
            None if args.quiet else sys.stdout,
            ids=[review.id for review in reviews],
            timeout=args.timeout,
        )
    sys.stdout.write(summary.format() + "\n")
    return EXIT_SUCCESS


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from producer.status import gather_status, render_text, watch

    connection = connect(settings.redis)
    label = redact_url(settings.redis.url)

    def view() -> str:
        snapshot = gather_status(
            connection, [settings.queue.name], settings.queue.key_prefix, redis_label=label
        )
        return snapshot.to_json() if args.json else render_text(snapshot)

    try:
        if args.watch is None:
            sys.stdout.write(view() + "\n")
        else:
            watch(view, sys.stdout, args.watch, clear=sys.stdout.isatty() and not args.json)
    finally:
        connection.close()
    return EXIT_SUCCESS


def _exporter(args: argparse.Namespace, settings: Settings) -> int:
    from producer.exporter import run

    return run(settings, [settings.queue.name], args.host, args.port)


def _dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from producer.dashboard import serve

    serve(settings, args.host, args.port, allow_delete=args.allow_delete)
    return EXIT_SUCCESS


_COMMANDS = {
    "enqueue": _enqueue,
    "get": _get,
    "classify": _classify,
    "stream": _stream,
    "status": _status,
    "exporter": _exporter,
    "dashboard": _dashboard,
}


def _read_checked(source: str, fmt: InputFormat | None, settings: Settings) -> list[InputReview]:
    """Read a file's reviews and check each, naming the file's line of the first bad one."""
    reviews = read_reviews(source, fmt)
    name = "<stdin>" if source == STDIN else source
    max_chars = settings.queue.max_review_chars
    seen: dict[str, int] = {}
    for review in reviews:
        # A missing id is generated on submit; check the text with a stand-in valid id.
        problem = review_problem(review.id if review.id is not None else "0", review.text, max_chars)
        if problem is not None:
            raise InvalidReviewError(f"{name} line {review.line}: {problem}")
        if review.id is not None:
            if review.id in seen:
                raise InvalidReviewError(
                    f"{name} line {review.line}: duplicate id {review.id!r} (first on line {seen[review.id]})"
                )
            seen[review.id] = review.line
    return reviews


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=INPUT_FORMATS, help="input format (default: by extension; text for stdin)"
    )


def _add_listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=port, help=f"port (default {port})")


def _add_timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="how long to wait for results (default: SENTIQ_PRODUCER_RESULT_TIMEOUT_S)",
    )


def _add_explain_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--explain",
        type=_explain_count,
        default=0,
        metavar="N",
        help=(
            f"also return each review's N most influential words (1-{MAX_EXPLAIN_WORDS}; "
            "`get` and --json show them); far slower than classifying alone"
        ),
    )


def _explain_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    problem = explain_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    return code
