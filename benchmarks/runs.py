"""What a standalone benchmark command shares: its reviews, a Redis and a scratch folder."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.serving import redis_url_or_private
from benchmarks.throughput import DEFAULT_DATA, REPO_ROOT, load_reviews


def add_run_arguments(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """``--data``, ``--redis-url`` and (with ``output``) ``--output``."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with a review column")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    if output:
        parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")


@contextlib.contextmanager
def benchmark_run(args: argparse.Namespace, count: int, prefix: str) -> Iterator[tuple[list[str], str, Path]]:
    """``count`` reviews of ``--data``, the Redis URL (``--redis-url`` or a private server started
    here) and a scratch folder; the server and folder are gone after. Creates ``--output`` if set."""
    output = getattr(args, "output", None)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    texts = load_reviews(args.data, count)
    with redis_url_or_private(args.redis_url) as url, tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield texts, url, Path(scratch)
