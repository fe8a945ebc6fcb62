"""The worker in front of a fast accelerator, simulated on the CPU: ``python -m benchmarks.simulated_device``.

On a GPU the forward passes leave the CPU free while they run, and what the worker does around
them (Redis, RQ's bookkeeping, decoding jobs, tokenizing, publishing) decides whether the device
is kept busy. Issue 9's H200 run measured C/B 0.46: the queue path ran in series with the passes.
A device is lent to few sessions, so this benchmark simulates one: every forward pass is
replaced by a sleep of ``--pass-us`` microseconds per row (and logits of zeros), with the GIL
released as a GPU pass releases it, and the reviews are tokenized ahead on a thread as on a GPU.
``--model tinybert-shape`` (the default) encodes as the H200's TinyBERT-shape worker did (the
BERT uncased vocabulary, 300 tokens); ``near-zero`` encodes 32 tokens with a small vocabulary,
so that only the queue path is left around the device. B (in-process ``predict``) and C (one worker through
Redis, GPU-sized passes and gathering) see the same simulated device and are measured in
alternating rounds (:func:`benchmarks.throughput.head_to_head`); the default 60 us per review is
what the H200 took for the TinyBERT shape at 300 tokens (58.6 us on device-resident inputs).
The worker gets the simulation through :mod:`benchmarks._simulated_device`'s ``sitecustomize``.

Writes ``simulated_device.json`` into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.model_folders import NEAR_ZERO_MAX_LENGTH, near_zero_folder, tinybert_shape_folder
from benchmarks.runs import add_run_arguments, benchmark_run
from benchmarks.throughput import REPO_ROOT, Variant, head_to_head

SIMULATION_PATH = Path(__file__).resolve().parent / "_simulated_device"
#: The H200 worker's shape for the TinyBERT shape at 300 tokens: passes of 436 rows (131,072
#: padded tokens) and gatherings of 3,495 reviews; the limits are set in rows of the model's max
#: length, so the near-zero model's shorter reviews get as many.
GPU_PASS_ROWS = 131_072 // 300
GPU_GATHER_REVIEWS = 8 * 131_072 // 300
#: The models the device can be simulated for, with the max length each encodes to.
MODELS = {"tinybert-shape": 300, "near-zero": NEAR_ZERO_MAX_LENGTH}


def simulate_device(pass_us: float) -> None:
    """Make every :class:`~worker.model.SentimentModel` in this process run on the simulated device.

    Each forward pass is a sleep of ``pass_us`` microseconds per row returning zero logits, and
    loaded models tokenize ahead on a thread, as they do on a GPU.
    """
    import torch

    from worker.model import SentimentModel

    real_load = SentimentModel.load.__func__  # type: ignore[attr-defined]

    def logits(self: SentimentModel, padded: Any) -> Any:
        # The device's work instead of the CPU's: the near-zero model's pass is small, but on a
        # 2-core CPU it is not free (~20 us a review here) and it would compete with the queue path.
        time.sleep(len(padded["input_ids"]) * pass_us / 1e6)
        return torch.zeros((len(padded["input_ids"]), 2))

    def load(cls: type[SentimentModel], *args: Any, **kwargs: Any) -> SentimentModel:
        model: SentimentModel = real_load(cls, *args, **kwargs)
        model.overlap_tokenization = True
        return model

    SentimentModel._logits = logits  # type: ignore[method-assign]
    SentimentModel.load = classmethod(load)  # type: ignore[assignment,method-assign]


def measure(
    texts: Sequence[str],
    redis_url: str,
    scratch: Path,
    *,
    model: str,
    pass_us: float,
    rounds: int,
    batch_size: int,
) -> dict[str, Any]:
    """B and C on the simulated device, one batch at a time and with overlapping batches.

    Each is ``rounds`` alternating rounds of B and C (:func:`~benchmarks.throughput.head_to_head`);
    C/B is the median of the rounds' own ratios.
    """
    max_length = MODELS[model]
    if model == "near-zero":
        model_dir = near_zero_folder(scratch / model, list(texts[:500]))
    else:
        model_dir = tinybert_shape_folder(scratch / model, max_length)
    simulate_device(pass_us)
    result: dict[str, Any] = {
        "model": model,
        "max_length": max_length,
        "pass_us_per_review": pass_us,
        "device_only_reviews_per_s": 1e6 / pass_us,
        "reviews": len(texts),
    }
    for overlap in ("off", "on"):
        worker_env = {
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(SIMULATION_PATH), str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            "SENTIQ_BENCH_SIMULATED_PASS_US": str(pass_us),
            "SENTIQ_WORKER_MAX_BATCH_TOKENS": str(GPU_PASS_ROWS * max_length),
            "SENTIQ_WORKER_MAX_GATHER_TOKENS": str(GPU_GATHER_REVIEWS * max_length),
            "SENTIQ_WORKER_OVERLAP_BATCHES": overlap,
        }
        print(f"overlap_batches={overlap}:", file=sys.stderr)
        b, c = head_to_head(
            model_dir,
            texts,
            Variant("sentiq", "fp32", batch_size),
            redis_url,
            rounds=rounds,
            precision="fp32",
            worker_env=worker_env,
        )
        ratios = [c_rate / b_rate for b_rate, c_rate in zip(b["rounds"], c["rounds"], strict=True)]
        result[f"overlap_{overlap}"] = {
            "B": b,
            "C": c,
            "C/B": statistics.median(ratios),
            "C/B_rounds": ratios,
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run B and C on the simulated device; print and write ``simulated_device.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulated_device", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=20_000, help="reviews per round")
    parser.add_argument("--model", choices=sorted(MODELS), default="tinybert-shape", help="whose encoding")
    parser.add_argument("--pass-us", type=float, default=60.0, help="simulated device time per review (us)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating B/C rounds")
    parser.add_argument("--batch-size", type=int, default=1024, help="B's reviews per predict call")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    with benchmark_run(args, args.count, "sentiq-simulated-") as (texts, url, scratch):
        result = measure(
            texts,
            url,
            scratch,
            model=args.model,
            pass_us=args.pass_us,
            rounds=args.rounds,
            batch_size=args.batch_size,
        )
    print(
        f"simulated device {args.pass_us:g} us/review (alone {result['device_only_reviews_per_s']:,.0f}/s), "
        f"{args.model} ({result['max_length']} tokens)"
    )
    for overlap in ("off", "on"):
        part = result[f"overlap_{overlap}"]
        print(
            f"  overlap_batches={overlap}: B {part['B']['reviews_per_second']:,.0f}/s, "
            f"C {part['C']['reviews_per_second']:,.0f}/s, C/B {part['C/B']:.2f} "
            f"(rounds {', '.join(f'{r:.2f}' for r in part['C/B_rounds'])})"
        )
    (args.output / "simulated_device.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.output / 'simulated_device.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
