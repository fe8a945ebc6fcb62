"""``python -m benchmarks.distillation``: teacher against distilled students, one table (issue 11).

For each model folder: parameters, layers and hidden size (from the weights), accuracy on a
labelled test file (:func:`training.evaluation.evaluate_model`, the worker's own inference path),
reviews per second in-process (:func:`benchmarks.throughput.bench_in_process`: the worker's
:class:`~worker.model.SentimentModel`, the same precision, batch size and reviews for every model,
after a warm-up), and optionally through one real worker via Redis
(:func:`benchmarks.throughput.bench_redis`). Prints a Markdown table and writes
``distillation.json`` and ``distillation.md`` into ``--output``.

Example, the full comparison::

    python -m benchmarks.distillation --model teacher=runs/cpu-full \\
        --model layers=runs/distill-layers --model tinybert=runs/distill-tinybert \\
        --test-data ../shared/data/imdb/test.csv.gz --max-samples 2000 --through-worker
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving import redis_url_or_private
from benchmarks.throughput import (
    DEFAULT_DATA,
    REPO_ROOT,
    Variant,
    bench_in_process,
    bench_redis,
    load_reviews,
)

JSON_FILE = "distillation.json"
MARKDOWN_FILE = "distillation.md"


@dataclass(frozen=True)
class Settings:
    """What every model is measured with: the same data, precision and batch size for all."""

    test_data: Path | None
    max_samples: int | None
    speed_reviews: int
    speed_data: Path
    precision: str
    batch_size: int
    redis_url: str | None


def describe_model(name: str, folder: Path) -> dict[str, Any]:
    """Name, model id, shape and parameter count of a model folder, from its weights and ``metrics.json``."""
    from training.report import describe_architecture, read_metrics
    from worker.model import SentimentModel

    model = SentimentModel.load(folder)
    architecture = describe_architecture(model.model)
    metrics = read_metrics(folder) or {}
    distilled = metrics.get("distillation") or {}
    return {
        "model": name,
        "model_id": model.info.model_id,
        "max_length": model.info.max_length,
        "truncation": model.info.truncation,
        "layers": architecture["layers"],
        "hidden_size": architecture["hidden_size"],
        "parameters": architecture["parameters"],
        "student": distilled.get("student"),
        "teacher": (distilled.get("teacher") or {}).get("model_id"),
    }


def measure(name: str, folder: Path, settings: Settings) -> dict[str, Any]:
    """One row of the table for the model in ``folder``."""
    row = describe_model(name, folder)
    if settings.test_data is not None:
        from training.evaluation import evaluate_model

        scored = evaluate_model(
            folder,
            str(settings.test_data),
            max_samples=settings.max_samples,
            batch_size=settings.batch_size,
            precision=settings.precision,  # type: ignore[arg-type]  # checked by the parser's choices
        )
        row.update({key: scored[key] for key in ("accuracy", "f1", "samples")})
    texts = load_reviews(settings.speed_data, settings.speed_reviews)
    variant = Variant("sentiq", settings.precision, settings.batch_size)
    [timing] = bench_in_process(folder, texts, [variant])
    row["in_process"] = timing.to_json()
    if settings.redis_url is not None:
        row["through_worker"] = bench_redis(folder, texts, settings.redis_url, precision=settings.precision)
    return row


def compare(models: Sequence[tuple[str, Path]], settings: Settings) -> dict[str, Any]:
    """Every model measured alike; the first is the reference the others' ratios are taken against."""
    rows = [measure(name, folder, settings) for name, folder in models]
    reference = rows[0]
    for row in rows:
        row["parameter_ratio"] = row["parameters"] / reference["parameters"]
        row["speed_ratio"] = (
            row["in_process"]["reviews_per_second"] / reference["in_process"]["reviews_per_second"]
        )
    return {
        "date": datetime.date.today().isoformat(),
        "test_data": settings.test_data.name if settings.test_data else None,
        "max_samples": settings.max_samples,
        "speed_reviews": settings.speed_reviews,
        "precision": settings.precision,
        "batch_size": settings.batch_size,
        "models": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table, ratios against the first model."""
    worker = any("through_worker" in row for row in result["models"])
    header = ["model", "model id", "layers", "hidden", "parameters", "accuracy", "in-process reviews/s"]
    if worker:
        header.append("1 worker via Redis, reviews/s")
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for row in result["models"]:
        accuracy = f"{row['accuracy']:.4f}" if "accuracy" in row else "–"
        cells = [
            row["model"],
            f"`{row['model_id']}`",
            str(row["layers"]),
            str(row["hidden_size"]),
            f"{row['parameters']:,} ({row['parameter_ratio']:.2f}x)",
            accuracy,
            f"{row['in_process']['reviews_per_second']:.1f} ({row['speed_ratio']:.2f}x)",
        ]
        if worker:
            through = row.get("through_worker")
            cells.append(f"{through['reviews_per_second']:.1f}" if through else "–")
        lines.append("| " + " | ".join(cells) + " |")
    accuracy_on = (
        f"accuracy on {result['max_samples'] or 'all'} reviews of {result['test_data']}; "
        if result["test_data"]
        else ""
    )
    lines += [
        "",
        f"{accuracy_on}speed on {result['speed_reviews']} reviews, {result['precision']} weights, "
        f"batch size {result['batch_size']}; ratios against {result['models'][0]['model']}.",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], folder: Path) -> list[Path]:
    """``distillation.json`` and ``distillation.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / JSON_FILE
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown_path = folder / MARKDOWN_FILE
    markdown_path.write_text(markdown(result), encoding="utf-8")
    return [json_path, markdown_path]


def parse_model(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` (or just ``DIR``, named after the folder)."""
    name, separator, folder = text.partition("=")
    if not separator:
        return Path(text).name, Path(text)
    return name, Path(folder)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.distillation",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        type=parse_model,
        metavar="NAME=DIR",
        help="model folder, repeatable; the first (the teacher) is the reference of the ratios",
    )
    parser.add_argument("--test-data", type=Path, help="labelled file for the accuracy column")
    parser.add_argument("--max-samples", type=int, default=1000, help="seeded test subset (0: all)")
    parser.add_argument("--speed-reviews", type=int, default=512, help="reviews timed per model")
    parser.add_argument("--speed-data", type=Path, default=DEFAULT_DATA, help="CSV with a review column")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--through-worker", action="store_true", help="also time one worker through a private Redis"
    )
    parser.add_argument("--redis-url", help="use this Redis for --through-worker")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results")
    return parser


@contextlib.contextmanager
def redis_for(args: argparse.Namespace) -> Iterator[str | None]:
    """The Redis URL of ``--through-worker``: ``--redis-url``, else a private server; None without it."""
    if not args.through_worker:
        yield None
    else:
        with redis_url_or_private(args.redis_url) as url:
            yield url


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the files."""
    args = build_parser().parse_args(argv)
    with redis_for(args) as redis_url:
        settings = Settings(
            test_data=args.test_data,
            max_samples=args.max_samples or None,
            speed_reviews=args.speed_reviews,
            speed_data=args.speed_data,
            precision=args.precision,
            batch_size=args.batch_size,
            redis_url=redis_url,
        )
        result = compare(args.model, settings)
    result["command"] = "python -m benchmarks.distillation " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    paths = write(result, args.output)
    print(markdown(result))
    print("wrote " + ", ".join(str(path) for path in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
