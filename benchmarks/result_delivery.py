"""Result delivery to many waiting clients: the cost of every client reading the one shared stream.

Each client waits on ``<prefix>:predictions``, which carries every client's results, so ten
concurrent clients each read ten times the entries they need (they parse only their own). This
measures the whole path with ``clients`` client processes submitting an equal share of the reviews
at once against one worker, next to one client submitting them all, on the same worker, and the
CPU time the clients spend (submitting, waiting, reading the stream) next to one client process
doing all of it: the difference is what the shared stream and the extra processes cost.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Sequence
from typing import Any

from producer import Client
from sentiq.settings import Settings


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_run(settings: Settings, texts: Sequence[str], start_at: float) -> tuple[float, float, float]:
    """One client process: wait for the common start, submit, read every result back; returns
    the start, the end and the CPU seconds in between."""
    with Client.from_settings(settings) as client:
        time.sleep(max(0.0, start_at - time.time()))
        started, cpu_before = time.time(), _cpu_seconds()
        ids = client.submit(texts)
        predictions = client.results(ids, timeout=600)
        finished, cpu = time.time(), _cpu_seconds() - cpu_before
    failed = [p for p in predictions if p.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} review(s) came back with an error, first: {failed[0].error}")
    return started, finished, cpu


def concurrent_clients(settings: Settings, texts: Sequence[str], clients: int) -> dict[str, Any]:
    """Reviews/s with ``clients`` processes each submitting ``len(texts) / clients`` reviews at once."""
    shares = [list(texts[index::clients]) for index in range(clients)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        # Spawned interpreters take a while to import; all start submitting at the same moment.
        start_at = time.time() + 3.0 + 0.3 * clients
        spans = pool.starmap(_client_run, [(settings, share, start_at) for share in shares])
        # One process doing all of it, for the CPU the clients would spend without sharing.
        [(_, _, one_cpu)] = pool.starmap(_client_run, [(settings, list(texts), time.time())])
    seconds = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    return {
        "clients": clients,
        "reviews": len(texts),
        "seconds": seconds,
        "reviews_per_second": len(texts) / seconds,
        "slowest_client_seconds": max(end - start for start, end, _ in spans),
        "clients_cpu_seconds": sum(cpu for _, _, cpu in spans),
        "one_client_cpu_seconds": one_cpu,
    }
