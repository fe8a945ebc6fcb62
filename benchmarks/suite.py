"""``python -m benchmarks`` (``make bench``): the whole throughput benchmark in one run.

1. Queue ceiling: a near-zero model (1 layer, hidden 16, 32 tokens kept), one worker, N reviews
   submit to last result: reviews/s and ms of queue path per review.
2. A/B/C for the TinyBERT shape (4 layers, hidden 312, random weights, real BERT vocabulary) and
   the bundled MiniLM, at max length 300 (see :mod:`benchmarks.throughput`).
3. Latency: single reviews at a steady rate (idle, and at half of C's rate), p50/p99 submit to
   result, next to one review classified in-process.
4. Peak memory (RSS) of the worker processes and of this process.

Prints the tables and writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--output``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks import report
from benchmarks.latency import one_review_in_process, steady_latencies
from benchmarks.machine import describe_machine, flags_line, peak_rss_mib, reset_peak_rss
from benchmarks.model_folders import (
    NEAR_ZERO_MAX_LENGTH,
    bundled_model_folder,
    near_zero_folder,
    tinybert_shape_folder,
)
from benchmarks.queue_ceiling import measure_ceiling
from benchmarks.serving import redis_url_or_private, serving
from benchmarks.throughput import DEFAULT_DATA, REPO_ROOT, Variant, bench_model, load_reviews
from worker.allocator import keep_freed_memory

if TYPE_CHECKING:
    from sentiq.settings import Precision

MODELS = ("tinybert-shape", "minilm")


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--scale`` multiplies every review count at once."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (B, C and latency)")
    parser.add_argument("--models", nargs="*", choices=MODELS, default=list(MODELS), help="A/B/C models")
    parser.add_argument(
        "--model", type=Path, action="append", default=[], help="also run A/B/C on this folder"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with a review column")
    parser.add_argument("--max-length", type=int, default=300, help="tokens, for the built model folders")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every review count")
    parser.add_argument("--count", type=int, default=192, help="reviews for B and C")
    parser.add_argument("--pipeline-count", type=int, default=64, help="reviews for A (0 skips A)")
    parser.add_argument(
        "--ceiling-count", type=int, default=4000, help="reviews for the queue ceiling (0 skips)"
    )
    parser.add_argument(
        "--ceiling-max-length",
        type=int,
        default=NEAR_ZERO_MAX_LENGTH,
        help="tokens the near-zero model keeps (the review is cleaned whole, its kept start tokenized)",
    )
    parser.add_argument("--ceiling-repeats", type=int, default=1, help="ceiling runs; the best is kept")
    parser.add_argument(
        "--ceiling-clients",
        type=int,
        default=10,
        help="also run the ceiling's reviews through this many concurrent client processes (1 skips)",
    )
    parser.add_argument(
        "--precisions",
        nargs="*",
        help="B's precisions (default: fp32, plus bf16 where native; bf16/fp16 on cuda)",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="*", help="B's batch sizes (default: 16 64; GPU: 64 256 512)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of B's fastest variant and C after the grid: each side's best round is "
        "its rate, the median of the rounds' own ratios is C/B",
    )
    parser.add_argument(
        "--int8-check-reviews",
        type=int,
        default=500,
        help="shipped reviews the int8 copy is checked on (default 500, as python -m worker.int8)",
    )
    parser.add_argument(
        "--worker-precision", default="auto", help="C's worker precision (auto: as a worker chooses)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra worker setting, repeatable",
    )
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="length of each latency run")
    parser.add_argument(
        "--latency-idle-rate", type=float, default=4.0, help="reviews/s of the idle latency run"
    )
    parser.add_argument(
        "--latency-models",
        nargs="*",
        default=["near-zero", "tinybert-shape"],
        choices=["near-zero", *MODELS],
        help="models whose latency is measured (none skips)",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")
    return parser


def default_variants(
    device: str, precisions: Sequence[str] | None, sizes: Sequence[int] | None
) -> list[Variant]:
    """B's grid: every precision with the worker's engine at each batch size, plain HF at the largest."""
    from worker.device import cpu_has_fast_bf16

    if not precisions:
        if device.startswith("cuda"):
            precisions = ["bf16", "fp16"]
        else:
            precisions = ["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"]
    if not sizes:
        sizes = [64, 256, 512] if device.startswith("cuda") else [16, 64]
    grid = [Variant("sentiq", precision, size) for precision in precisions for size in sizes]
    grid += [Variant("hf", precision, max(sizes)) for precision in precisions]
    return grid


def resolve_worker_precision(requested: str, device: str) -> str:
    """What a worker started with ``requested`` runs on ``device``."""
    import torch

    from worker.device import choose_precision, cpu_has_fast_bf16

    cuda = device.startswith("cuda")
    return choose_precision(
        cast("Precision", requested),
        device,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
        cpu_bf16_fast=cpu_has_fast_bf16(),
    )


def build_int8_copy(folder: Path, check_reviews: int) -> dict[str, Any]:
    """The folder's int8 copy for B and C (as ``python -m worker.int8`` builds it), kept if it passes
    its check; returns the check."""
    from dataclasses import asdict

    from worker.int8 import DEFAULT_CHECK_DATA, build_int8, read_check_reviews

    texts, labels = read_check_reviews(DEFAULT_CHECK_DATA, check_reviews)
    report = build_int8(folder, texts, labels)
    verdict = "kept" if report.passed else f"refused: {report.reason}"
    print(f"  int8 copy of {folder.name}: agreement {report.agreement:.3f}, {verdict}", file=sys.stderr)
    return asdict(report)


def _worker_keeps_freed_memory(worker_env: dict[str, str]) -> bool:
    """Whether C's worker keeps freed memory, as its environment (``--worker-env`` last) sets it."""
    from pydantic import TypeAdapter

    from sentiq.settings import WorkerSettings

    name = "SENTIQ_WORKER_KEEP_FREED_MEMORY"
    value = worker_env.get(name, os.environ.get(name))
    if value is None:
        return bool(WorkerSettings().keep_freed_memory)
    return TypeAdapter(bool).validate_python(value)


def _scaled(count: int, scale: float) -> int:
    return 0 if count <= 0 else max(2, round(count * scale))


def run(args: argparse.Namespace, redis_url: str, scratch: Path) -> dict[str, Any]:
    """Every part of the benchmark; returns the results dictionary the report is built from."""
    device = args.device
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    worker_precision = resolve_worker_precision(args.worker_precision, device)
    count = _scaled(args.count, args.scale)
    texts = load_reviews(args.data, max(count, _scaled(args.ceiling_count, args.scale), 200))
    machine = describe_machine(device)
    print(f"machine: {flags_line(machine)}", file=sys.stderr)
    # B runs in this process: it gets the allocator setting the worker (C) gets, and so does A.
    machine["freed_memory_kept"] = keep_freed_memory() if _worker_keeps_freed_memory(worker_env) else False
    results: dict[str, Any] = {
        "device": device,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks", *map(shlex.quote, sys.argv[1:])]),
        "machine": machine,
        "worker_precision": worker_precision,
        "worker_env": worker_env,
        "models": [],
        "latency": [],
        "memory": {},
    }
    folders: dict[str, Path] = {}
    int8_checks: dict[str, dict[str, Any]] = {}

    def folder(name: str) -> Path:
        if name not in folders:
            target = scratch / name
            if name == "near-zero":
                folders[name] = near_zero_folder(target, texts[:500], args.ceiling_max_length)
            elif name == "tinybert-shape":
                folders[name] = tinybert_shape_folder(target, args.max_length)
            else:
                folders[name] = bundled_model_folder(target, args.max_length)
            if name in MODELS and not device.startswith("cuda"):
                int8_checks[name] = build_int8_copy(folders[name], args.int8_check_reviews)
        return folders[name]

    ceiling_count = _scaled(args.ceiling_count, args.scale)
    if ceiling_count:
        print(f"queue ceiling: {ceiling_count} reviews, near-zero model ...", file=sys.stderr)
        ceiling = measure_ceiling(
            folder("near-zero"),
            texts[:ceiling_count],
            redis_url,
            device=device,
            repeats=args.ceiling_repeats,
            clients=args.ceiling_clients,
            worker_env=worker_env,
        )
        results["queue_ceiling"] = {**ceiling, "max_length": args.ceiling_max_length}
        checkpoint(results, args.output)
        results["memory"]["queue ceiling (near-zero)"] = {"worker": ceiling["worker_peak_rss_mib"]}

    variants = default_variants(device, args.precisions, args.batch_sizes)
    pipeline_texts = texts[: _scaled(args.pipeline_count, args.scale)]
    to_run = [(name, folder(name)) for name in args.models] + [(path.name, path) for path in args.model]
    for name, model_dir in to_run:
        reset_peak_rss()
        entry = bench_model(
            name,
            model_dir,
            texts[:count],
            pipeline_texts=pipeline_texts,
            variants=variants,
            redis_url=redis_url,
            device=device,
            worker_precision=args.worker_precision,
            worker_env=worker_env,
            rounds=max(1, args.rounds),
        )
        entry["C"]["way"] = f"C redis, 1 worker ({worker_precision})"
        if name in int8_checks:
            entry["int8_check"] = int8_checks[name]
        results["models"].append(entry)
        checkpoint(results, args.output)
        results["memory"][f"A/B/C {name}"] = {
            "worker": entry["C"]["worker_peak_rss_mib"],
            "benchmark": entry["benchmark_peak_rss_mib"],
        }

    rates = {entry["model"]: entry["C"]["reviews_per_second"] for entry in results["models"]}
    if "queue_ceiling" in results:
        rates["near-zero"] = results["queue_ceiling"]["reviews_per_second"]
    for name in args.latency_models:
        results["latency"] += measure_latency(
            name=name,
            model_dir=folder(name),
            texts=texts,
            redis_url=redis_url,
            args=args,
            worker_precision=worker_precision,
            c_rate=rates.get(name),
            worker_env=worker_env,
        )
        results["memory"][f"latency {name}"] = {"worker": results["latency"][-1]["worker_peak_rss_mib"]}
        checkpoint(results, args.output)
    results["memory"]["benchmark process, whole run"] = {"benchmark": peak_rss_mib()}
    return results


def checkpoint(results: dict[str, Any], output: Path) -> None:
    """Write what is measured so far to ``bench.json``: a run cut short by a timeout keeps it."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    # A timeout's SIGTERM unwinds like Ctrl-C, so the workers (in sessions of their own) and
    # Redis are stopped by the finally blocks instead of being left running.
    raise SystemExit(128 + signum)


def measure_latency(
    *,
    name: str,
    model_dir: Path,
    texts: Sequence[str],
    redis_url: str,
    args: argparse.Namespace,
    worker_precision: str,
    c_rate: float | None,
    worker_env: dict[str, str],
) -> list[dict[str, Any]]:
    """Idle and half-of-C latency runs for one model, each next to one review in-process."""
    precision = "fp32" if name == "near-zero" else worker_precision
    loads = [("idle", args.latency_idle_rate)]
    if c_rate:
        loads.append((f"half of C ({c_rate / 2:.0f}/s)", c_rate / 2))
    in_process = one_review_in_process(
        model_dir, texts, device=args.device, precision=precision, rates=[rate for _, rate in loads]
    )
    entries = []
    print(f"latency: {name} ...", file=sys.stderr)
    with serving(model_dir, redis_url, device=args.device, precision=precision, worker_env=worker_env) as run:
        for load, rate in loads:
            count = max(10, round(rate * args.latency_seconds * args.scale))
            measured = steady_latencies(run, texts, rate, count)
            entries.append({"model": name, "load": load, **measured, "in_process": in_process})
    for entry in entries:
        entry["worker_peak_rss_mib"] = run.worker_peak_rss_mib
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything, print the tables, write the report; returns the exit status."""
    args = build_parser().parse_args(argv)
    if any("=" not in item for item in args.worker_env):
        print("error: --worker-env takes NAME=VALUE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with (
        redis_url_or_private(args.redis_url) as url,
        tempfile.TemporaryDirectory(prefix="sentiq-bench-") as scratch,
    ):
        results = run(args, url, Path(scratch))
    print()
    print(report.markdown(results))
    paths = report.write_all(results, args.output)
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0
