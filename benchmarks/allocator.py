"""``python -m benchmarks.allocator``: in-process passes with glibc's default allocator and with freed
memory kept (:func:`worker.allocator.keep_freed_memory`), in alternating fresh processes.

Each process loads the model in bf16, warms up, then classifies the same reviews ``--runs``
times in passes sized as a CPU worker sizes them (4,096 padded tokens). The allocator's state is
per process, so each side gets ``--pairs`` processes, alternating to share the machine's
slow and fast minutes. Prints per-process medians, page faults and kernel time, and the ratio
of the means; writes ``allocator.json`` into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.throughput import DEFAULT_DATA, REPO_ROOT, load_reviews

SIDES = ("default", "kept")


def measure(folder: Path, runs: int, count: int, keep: bool) -> dict[str, Any]:
    """One process's side: reviews/s of each run, minor page faults and kernel seconds per run."""
    from worker.allocator import keep_freed_memory
    from worker.assembly import CPU_PASS_TOKENS
    from worker.model import SentimentModel

    applied = keep_freed_memory() if keep else False
    texts = load_reviews(DEFAULT_DATA, count)
    model = SentimentModel.load(folder, precision="bf16")
    model.max_batch_tokens = CPU_PASS_TOKENS
    model.max_batch_size = max(1, CPU_PASS_TOKENS // model.info.max_length)
    model.predict(texts[:32])
    before = resource.getrusage(resource.RUSAGE_SELF)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        model.predict(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "kept": applied,
        "rates": rates,
        "median": statistics.median(rates),
        "page_faults_per_run": (after.ru_minflt - before.ru_minflt) / runs,
        "kernel_seconds_per_run": (after.ru_stime - before.ru_stime) / runs,
    }


def _child(folder: Path, runs: int, count: int, keep: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.allocator", "--child", "--model", str(folder)]
    command += ["--runs", str(runs), "--count", str(count)] + (["--keep"] if keep else [])
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if keep and not result["kept"]:
        raise RuntimeError("the allocator setting was not applied (MALLOC_*_ or GLIBC_TUNABLES set?)")
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.allocator",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled MiniLM at 300 tokens)")
    parser.add_argument("--pairs", type=int, default=5, help="processes per side, alternating")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per process")
    parser.add_argument("--count", type=int, default=192, help="reviews per run")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the alternating pairs and print the comparison; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.model, args.runs, args.count, args.keep)))
        return 0
    with tempfile.TemporaryDirectory(prefix="sentiq-allocator-") as scratch:
        folder = args.model
        if folder is None:
            from benchmarks.model_folders import bundled_model_folder

            folder = bundled_model_folder(Path(scratch) / "minilm")
        sides: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for pair in range(1, args.pairs + 1):
            for side in SIDES:
                sides[side].append(_child(folder, args.runs, args.count, side == "kept"))
            default, kept = sides["default"][-1], sides["kept"][-1]
            print(
                f"pair {pair}/{args.pairs}: default {default['median']:.1f} reviews/s "
                f"({default['page_faults_per_run']:,.0f} faults/run), kept {kept['median']:.1f} "
                f"({kept['page_faults_per_run']:,.0f})",
                file=sys.stderr,
            )
    summary = {
        side: {
            "mean_of_medians": statistics.mean(p["median"] for p in runs),
            "page_faults_per_run": statistics.mean(p["page_faults_per_run"] for p in runs),
            "kernel_seconds_per_run": statistics.mean(p["kernel_seconds_per_run"] for p in runs),
        }
        for side, runs in sides.items()
    }
    wins = sum(k["median"] > d["median"] for d, k in zip(sides["default"], sides["kept"], strict=True))
    result = {
        "model": str(args.model or "bundled MiniLM-L6, 300 tokens"),
        "reviews_per_run": args.count,
        "summary": summary,
        "ratio": summary["kept"]["mean_of_medians"] / summary["default"]["mean_of_medians"],
        "kept_won": f"{wins} of {args.pairs}",
        "processes": sides,
    }
    lines = [
        "| allocator | reviews/s (mean of process medians) | minor page faults per run | kernel s per run |"
    ]
    lines.append("| --- | ---: | ---: | ---: |")
    for side in SIDES:
        row = summary[side]
        lines.append(
            f"| {side} | {row['mean_of_medians']:.1f} | {row['page_faults_per_run']:,.0f} | "
            f"{row['kernel_seconds_per_run']:.3f} |"
        )
    print("\n".join(lines))
    print(f"kept / default: {result['ratio']:.3f}x; kept won {wins} of {args.pairs} pairs")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "allocator.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
