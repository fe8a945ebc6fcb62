"""``python -m benchmarks.stages``: where the in-process path spends its time, stage by stage.

One batch of reviews goes through each stage of :meth:`worker.model.SentimentModel.predict` on its
own, timed (best of ``--repeats``, after a warm-up): cleaning, the Rust tokenizer alone, the whole
encoding (cleaning, tokenizing, cutting and framing), padding the passes, the forward passes on
prepared inputs (synchronized on a GPU; again with the attention heads zero-padded to a multiple
of 8 dimensions where they are not, :mod:`benchmarks.head_padding`), and ``predict`` end to end.
Each is given in microseconds a review and as the reviews a second that stage alone allows, for
the near-zero model at its 32 tokens and the TinyBERT shape at 300. On a GPU the forward passes
are cheap and the stages that hold the GIL (everything but the Rust tokenizer and the passes) set
the pace; this says which.

    python -m benchmarks.stages [--device cuda] [--reviews 2048] [--output bench-results]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.head_padding import padded_heads
from benchmarks.machine import describe_machine, flags_line
from benchmarks.model_folders import near_zero_folder, tinybert_shape_folder
from benchmarks.throughput import DEFAULT_DATA, REPO_ROOT, load_reviews

MODEL_NAMES = ("near-zero", "tinybert-shape")


def _best_seconds(work: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    work()
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def _one_thread(work: Callable[[], object]) -> object:
    """``work`` with the Rust tokenizer's thread pool off (it reads the variable on every call)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return work()
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def measure_stages(
    model_dir: Path, texts: Sequence[str], device: str, precision: str, repeats: int
) -> dict[str, Any]:
    """Seconds of each stage over ``texts``, the model's default pass sizes on ``device``."""
    import torch

    from sentiq.text import clean_review
    from worker.assembly import size_passes
    from worker.model import SentimentModel

    model = SentimentModel.load(model_dir, device=device, precision=precision)  # type: ignore[arg-type]
    size_passes(model, 0, 0)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    encoder = model.encoder
    encoded = encoder.encode_arrays(texts)
    passes = [[encoded[row] for row in rows] for rows in model.plan_batches([len(ids) for ids in encoded])]
    padded = [model.pad(rows) for rows in passes]
    on_device = [{name: model._to_device(tensor) for name, tensor in batch.items()} for batch in padded]

    def forward() -> None:
        with torch.inference_mode():
            for batch in on_device:
                model.model(**batch).logits.float().softmax(dim=-1).max(dim=-1)

    head_padding: dict[str, Any] = {}
    wide_model = padded_heads(model.model)
    if wide_model is not None:
        config: Any = model.model.config
        with torch.inference_mode():
            plain = model.model(**on_device[0]).logits.float()
            wide = wide_model(**on_device[0]).logits.float()
        head_padding = {
            "head_size": int(config.hidden_size) // int(config.num_attention_heads),
            "max_abs_logit_difference": float((plain - wide).abs().max()),
        }

    def forward_wide_heads() -> None:
        assert wide_model is not None
        with torch.inference_mode():
            for batch in on_device:
                wide_model(**batch).logits.float().softmax(dim=-1).max(dim=-1)

    cleaned = [clean_review(text) for text in texts]
    # One per timed call of the first-sight row (a copy starts without remembered words).
    fresh_encoders = iter([copy.copy(encoder) for _ in range(repeats + 1)])

    def tokenize_cleaned() -> object:
        backend = encoder._backend
        return None if backend is None else backend.encode_batch_fast(cleaned, add_special_tokens=False)

    stages: dict[str, Callable[[], object]] = {
        "clean whole reviews (Python)": lambda: [clean_review(text) for text in texts],
        "tokenize whole cleaned reviews (Rust alone)": tokenize_cleaned,
        "tokenize whole cleaned reviews (Rust alone, one thread)": lambda: _one_thread(tokenize_cleaned),
        # The worker's encoder remembers words: a fresh copy (made before the clock starts) tokenizes
        # every word at first sight; the model's own encoder has seen these very reviews, so it
        # only looks words up: the upper bound, as for "predict" below (a stream of new reviews
        # lies in between).
        "encode, first sight (clean ends, tokenize new words, cut, frame)": lambda: next(
            fresh_encoders
        ).encode_arrays(texts),
        "encode, every word known (clean ends, look words up, cut, frame)": lambda: encoder.encode_arrays(
            texts
        ),
        "pad the passes": lambda: [model.pad(rows) for rows in passes],
        "copy to the device and run the passes": lambda: [model._logits(batch) for batch in padded],
        "run the passes on device-resident inputs": forward,
        **(
            {"run the passes on device-resident inputs, heads padded to 8n dims": forward_wide_heads}
            if wide_model is not None
            else {}
        ),
        "predict, end to end": lambda: model.predict(texts),
    }
    rows = []
    for name, work in stages.items():
        seconds = _best_seconds(work, repeats, sync)
        rows.append(
            {
                "stage": name,
                "seconds": seconds,
                "us_per_review": seconds / len(texts) * 1e6,
                "reviews_per_second": len(texts) / seconds,
            }
        )
        print(f"  {name}: {rows[-1]['us_per_review']:.1f} us/review", file=sys.stderr)
    return {
        "max_length": model.info.max_length,
        "reviews": len(texts),
        "passes": len(passes),
        "max_batch_tokens": model.max_batch_tokens,
        "mean_tokens": sum(map(len, encoded)) / len(encoded),
        "head_padding": head_padding,
        "stages": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    """The stages as a Markdown table, one block per model."""
    lines = [
        f"### stages of the in-process path ({results['device']})",
        "",
        f"Machine: {flags_line(results['machine'])}.",
        "",
    ]
    lines += ["| model | stage | us/review | reviews/s alone |", "| --- | --- | ---: | ---: |"]
    for name, entry in results["models"].items():
        for row in entry["stages"]:
            lines.append(
                f"| {name} ({entry['max_length']} tokens, {entry['mean_tokens']:.0f} mean, "
                f"{entry['passes']} passes) | {row['stage']} | {row['us_per_review']:.1f} | "
                f"{row['reviews_per_second']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both models' stages, print the table and write ``stages.json`` and ``stages.md``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--reviews", type=int, default=2048, help="reviews in the batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each stage; the best is kept")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with a review column")
    parser.add_argument(
        "--models", nargs="*", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="models to measure"
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")
    args = parser.parse_args(argv)
    import torch

    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    texts = load_reviews(args.data, args.reviews)
    results: dict[str, Any] = {
        "device": args.device,
        "machine": describe_machine(args.device),
        "precision": precision,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="sentiq-stages-") as scratch:
        for name in args.models:
            target = Path(scratch) / name
            folder = (
                near_zero_folder(target, texts[:500])
                if name == "near-zero"
                else tinybert_shape_folder(target)
            )
            print(f"stages: {name} ...", file=sys.stderr)
            results["models"][name] = measure_stages(folder, texts, args.device, precision, args.repeats)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "stages.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    table = markdown(results)
    (args.output / "stages.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
