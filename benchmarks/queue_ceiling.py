"""The queue ceiling: how fast one worker moves reviews when the model costs next to nothing.

A 1-layer, hidden-16 BERT makes the forward pass negligible, so submit-to-last-result time is
the queue path alone: packing and enqueueing, RQ's bookkeeping, tokenization, building and
publishing results, and the client reading them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.result_delivery import concurrent_clients
from benchmarks.serving import serving, submit_and_wait


def measure_ceiling(
    model_dir: Path,
    texts: Sequence[str],
    redis_url: str,
    *,
    device: str = "cpu",
    repeats: int = 1,
    clients: int = 10,
    worker_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Reviews per second and ms of queue path per review (best of ``repeats``) with one worker.

    With ``clients`` > 1 the same worker then serves that many concurrent client processes
    sharing the reviews (:mod:`benchmarks.result_delivery`), also best of ``repeats``.
    """
    runs: list[tuple[float, float]] = []
    many: list[dict[str, Any]] = []
    with (
        serving(model_dir, redis_url, device=device, precision="fp32", worker_env=worker_env) as run,
        run.client() as client,
    ):
        submit_and_wait(client, texts[: min(len(texts), 256)])
        runs = [submit_and_wait(client, texts) for _ in range(repeats)]
        if clients > 1:
            many = [concurrent_clients(run.settings, texts, clients) for _ in range(repeats)]
    submit_s, total_s = min(runs, key=lambda pair: pair[1])
    delivery = max(many, key=lambda entry: entry["reviews_per_second"]) if many else None
    if delivery is not None:
        delivery["vs_one_client"] = delivery["reviews_per_second"] / (len(texts) / total_s)
    return {
        "concurrent_clients": delivery,
        "way": "queue ceiling: near-zero model, 1 worker",
        "reviews": len(texts),
        "seconds": total_s,
        "submit_seconds": submit_s,
        "reviews_per_second": len(texts) / total_s,
        "ms_per_review": total_s * 1000 / len(texts),
        "all_seconds": [total for _, total in runs],
        "worker_peak_rss_mib": run.worker_peak_rss_mib,
    }
