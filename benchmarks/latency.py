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
from sentiq.settings import WorkerSettings

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
    model_dir: Path,
    texts: Sequence[str],
    *,
    device: str,
    precision: str,
    rates: Sequence[float] = (),
    repeats: int = 20,
) -> dict[str, Any]:
    """Median ms to classify one review in-process (tokenize + forward), as the worker's model does.

    ``p50_ms`` calls the model back to back. For each of ``rates`` (reviews/s) it is also called on
    that schedule, resting in between as a worker does between single reviews: ``paced_p50_ms``.
    A model that has rested pays for waking up (threads asleep, caches cold; several ms on a
    virtual machine), and a caller in-process would pay it too, so the gap to the paced figure is
    what the queue path itself adds.
    """
    from worker.assembly import calibrate_single_thread
    from worker.model import SentimentModel

    model = SentimentModel.load(model_dir, device=device, precision=cast("ServedPrecision", precision))
    model.warm_up()
    # As a worker runs its passes (short ones on one thread on a CPU), by the same default setting.
    calibrate_single_thread(model, WorkerSettings().single_thread_pass_ms)
    times = _one_review_times(model, texts, repeats, None)
    paced = {f"{rate:g}": statistics.median(_one_review_times(model, texts, repeats, rate)) for rate in rates}
    return {
        "precision": precision,
        "repeats": repeats,
        "p50_ms": statistics.median(times),
        "min_ms": min(times),
        "paced_p50_ms": paced,
    }


def paced_p50_ms(in_process: dict[str, Any], rate_per_s: float) -> float | None:
    """The in-process p50 at ``rate_per_s`` from :func:`one_review_in_process`, if it was measured."""
    value = in_process.get("paced_p50_ms", {}).get(f"{rate_per_s:g}")
    return float(value) if value is not None else None


def _one_review_times(
    model: Any, texts: Sequence[str], repeats: int, rate_per_s: float | None
) -> list[float]:
    times = []
    started = time.perf_counter()
    for index in range(repeats):
        if rate_per_s is not None:
            delay = started + index / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        began = time.perf_counter()
        model.predict([texts[index % len(texts)]])
        times.append((time.perf_counter() - began) * 1000)
    return times
