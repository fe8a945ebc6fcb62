"""Latency: single reviews sent at a steady rate, submit to result, next to one in-process pass.

One thread submits one review at a time on a fixed schedule (so a slow submit does not thin the
load that follows); another, with a connection of its own, waits for the results as a client
does and stamps each arrival.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks.serving import Serving

if TYPE_CHECKING:
    from worker.device import ServedPrecision


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def steady_latencies(run: Serving, texts: Sequence[str], rate_per_s: float, count: int) -> dict[str, Any]:
    """Send ``count`` single reviews at ``rate_per_s``; p50/p99/max ms from submit to result."""
    prefix = f"lat-{time.time_ns()}"
    ids = [f"{prefix}-{index}" for index in range(count)]
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    failure: list[BaseException] = []

    def read() -> None:
        try:
            with run.client() as reader:
                for prediction in reader.iter_results(ids, timeout=count / rate_per_s + 120):
                    arrived[prediction.id] = time.perf_counter()
        except BaseException as error:  # reported by the sending thread
            failure.append(error)

    reader_thread = threading.Thread(target=read, name="latency-reader", daemon=True)
    reader_thread.start()
    time.sleep(0.3)  # the reader has taken its stream cursor
    with run.client() as client:
        started = time.perf_counter()
        for index, review_id in enumerate(ids):
            delay = started + index / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[review_id] = time.perf_counter()
            client.submit([texts[index % len(texts)]], ids=[review_id])
        sending_s = time.perf_counter() - started
    reader_thread.join()
    if failure:
        raise failure[0]
    milliseconds = [(arrived[review_id] - sent[review_id]) * 1000 for review_id in ids]
    return {
        "reviews": count,
        "target_rate": rate_per_s,
        "sent_rate": count / sending_s if sending_s > 0 else float("inf"),
        "p50_ms": percentile(milliseconds, 0.50),
        "p99_ms": percentile(milliseconds, 0.99),
        "max_ms": max(milliseconds),
        "mean_ms": statistics.fmean(milliseconds),
    }


def one_review_in_process(
    model_dir: Path, texts: Sequence[str], *, device: str, precision: str, repeats: int = 20
) -> dict[str, Any]:
    """Median ms to classify one review in-process (tokenize + forward), as the worker's model does."""
    from worker.model import SentimentModel

    model = SentimentModel.load(model_dir, device=device, precision=cast("ServedPrecision", precision))
    model.warm_up()
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        model.predict([texts[index % len(texts)]])
        times.append((time.perf_counter() - started) * 1000)
    return {
        "precision": precision,
        "repeats": repeats,
        "p50_ms": statistics.median(times),
        "min_ms": min(times),
    }
