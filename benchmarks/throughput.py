"""Reviews per second for one model, three ways, on the same reviews in one run (A, B and C).

- **A**, the reference notebook's way: ``transformers.pipeline(...)`` called once per review, in
  fp32;
- **B**, the best in-process variant of the same model: every (engine, precision, batch size) in the
  grid is run and reported, and the fastest is B (on a CPU, with the folder's int8 copy as the
  precision ``int8`` when it has one, see :mod:`worker.int8`). Engines: ``sentiq`` is
  :class:`worker.model.SentimentModel` (the worker's own code: per-review tokenization, sorted
  by length, dynamic padding); ``hf`` is plain transformers (one fast-tokenizer call per batch);
- **C**, one ``python -m worker`` through Redis: ``Client.submit`` to the last result read back.

C/B says what the queue path costs; C/A what sentiq gains over the notebook. B's grid picks the
variant; then B (that variant) and C are measured in alternating rounds, so neither side gets the
luck of the most runs (on a noisy machine the fastest of eight grid points beats one run of the
same code by chance alone). Each side's rate is its best round; C/B is the median of the rounds'
own C/B, each from a B and a C measured back to back, so that the machine's slow and fast minutes
cancel (the ratio of the best rounds is kept too).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from benchmarks.gpu_utilisation import sample_gpu
from benchmarks.machine import peak_rss_mib
from benchmarks.serving import serving, submit_and_wait

if TYPE_CHECKING:
    from worker.device import ServedPrecision

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "sentiq" / "data" / "imdb_test_sample.csv.gz"


def load_reviews(path: Path, count: int) -> list[str]:
    """``count`` review texts from a CSV with a ``review`` column, cycling if it is shorter."""
    texts = pd.read_csv(path, keep_default_na=False)["review"].tolist()
    return [texts[i % len(texts)] for i in range(count)]


@dataclass(frozen=True)
class Timing:
    """How long ``reviews`` reviews took one way."""

    way: str
    reviews: int
    seconds: float

    @property
    def rate(self) -> float:
        """Reviews per second."""
        return self.reviews / self.seconds

    def to_json(self) -> dict[str, Any]:
        """The fields and the rate, for the JSON report."""
        return {**asdict(self), "reviews_per_second": self.rate}


@dataclass(frozen=True)
class Variant:
    """One point of B's grid."""

    engine: str
    precision: str
    batch_size: int

    @property
    def label(self) -> str:
        """``sentiq bf16 bs 32``."""
        return f"{self.engine} {self.precision} bs {self.batch_size}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def bench_pipeline(model_dir: Path, texts: Sequence[str], max_length: int, device: str = "cpu") -> Timing:
    """A: one ``pipeline`` call per review, fp32, as the reference notebook classifies."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(model_dir), device=device)
    classifier(texts[0], truncation=True, max_length=max_length)
    started = time.perf_counter()
    for text in _progress(texts, "A: pipeline, one review per call"):
        classifier(text, truncation=True, max_length=max_length)
    _sync(device)
    return Timing("A pipeline per review (fp32)", len(texts), time.perf_counter() - started)


def bench_in_process(
    model_dir: Path, texts: Sequence[str], variants: Iterable[Variant], device: str = "cpu"
) -> list[Timing]:
    """B: each variant over all ``texts``; each precision is loaded once and warmed up per batch size."""
    timings: list[Timing] = []
    by_precision: dict[str, list[Variant]] = {}
    for variant in variants:
        by_precision.setdefault(variant.precision, []).append(variant)
    for precision, group in by_precision.items():
        model = _load_for(model_dir, precision, device)
        for variant in group:
            _warm_up(model, texts, variant, device)
            timings.append(_time_variant(model, texts, variant, device))
            print(f"  {timings[-1].way}: {timings[-1].rate:.1f} reviews/s", file=sys.stderr)
        del model
    return timings


def _load_for(model_dir: Path, precision: str, device: str) -> Any:
    """The worker's model class loaded for one precision of B's grid."""
    from worker.model import SentimentModel

    # "int8": the folder's ONNX Runtime int8 copy runs the passes (python -m worker.int8).
    weights = "fp32" if precision == "int8" else precision
    model = SentimentModel.load(model_dir, device=device, precision=cast("ServedPrecision", weights))
    if precision == "int8":
        from worker.int8 import load_int8

        model.int8 = load_int8(model_dir, model.info.model_id)
    return model


def _warm_up(model: Any, texts: Sequence[str], variant: Variant, device: str) -> None:
    run = _run_sentiq if variant.engine == "sentiq" else _run_hf
    run(model, texts[: variant.batch_size], variant.batch_size)
    _sync(device)


def _time_variant(model: Any, texts: Sequence[str], variant: Variant, device: str) -> Timing:
    run = _run_sentiq if variant.engine == "sentiq" else _run_hf
    _sync(device)
    started = time.perf_counter()
    run(model, texts, variant.batch_size)
    _sync(device)
    return Timing(f"B {variant.label}", len(texts), time.perf_counter() - started)


def _run_sentiq(model: Any, texts: Sequence[str], batch_size: int) -> None:
    # The batch size is the knob here, so the token budget must not cut passes shorter.
    model.max_batch_size = batch_size
    model.max_batch_tokens = batch_size * model.info.max_length
    model.predict(texts)


def _run_hf(model: Any, texts: Sequence[str], batch_size: int) -> None:
    """Plain transformers: one tokenizer call per batch of length-sorted reviews, head truncation."""
    import torch

    from sentiq.text import clean_review

    cleaned = sorted((clean_review(text) for text in texts), key=len, reverse=True)
    with torch.inference_mode():
        for start in range(0, len(cleaned), batch_size):
            batch = model.tokenizer(
                cleaned[start : start + batch_size],
                truncation=True,
                max_length=model.info.max_length,
                padding=True,
                return_tensors="pt",
            ).to(model.device)
            model.model(**batch).logits.float().softmax(dim=-1).max(dim=-1)[0].tolist()


def bench_redis(
    model_dir: Path,
    texts: Sequence[str],
    redis_url: str,
    *,
    device: str = "cpu",
    precision: str = "auto",
    worker_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """C: one worker through Redis, after a warm-up submit; also its peak memory."""
    with (
        serving(model_dir, redis_url, device=device, precision=precision, worker_env=worker_env) as run,
        run.client() as client,
    ):
        submit_and_wait(client, texts[: min(len(texts), 64)])
        with sample_gpu(device) as gpu:
            submit_s, total_s = submit_and_wait(client, texts)
    timing = Timing(f"C redis, 1 worker ({precision})", len(texts), total_s)
    return {
        **timing.to_json(),
        "submit_seconds": submit_s,
        "worker_peak_rss_mib": run.worker_peak_rss_mib,
        "gpu": gpu,
    }


def head_to_head(
    model_dir: Path,
    texts: Sequence[str],
    variant: Variant,
    redis_url: str,
    *,
    rounds: int,
    device: str = "cpu",
    precision: str = "auto",
    worker_env: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """B (``variant``) and C in ``rounds`` rounds (B first, then C first, ...); each side's best round.

    Both are loaded and warmed up before the first round, so a round measures only the reviews.
    The in-process model sits idle while C runs, and the worker idles while B runs.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    model = _load_for(model_dir, variant.precision, device)
    _warm_up(model, texts, variant, device)
    b_rounds: list[Timing] = []
    c_rounds: list[tuple[Timing, float, dict[str, Any]]] = []
    with (
        serving(model_dir, redis_url, device=device, precision=precision, worker_env=worker_env) as run,
        run.client() as client,
    ):
        submit_and_wait(client, texts[: min(len(texts), 64)])
        for number in range(1, rounds + 1):
            # Who goes first alternates, so neither side always follows the other's work.
            if number % 2:
                b_rounds.append(_time_variant(model, texts, variant, device))
            with sample_gpu(device) as gpu:
                submit_s, total_s = submit_and_wait(client, texts)
            c_timing = Timing(f"C redis, 1 worker ({precision})", len(texts), total_s)
            c_rounds.append((c_timing, submit_s, gpu))
            if not number % 2:
                b_rounds.append(_time_variant(model, texts, variant, device))
            print(
                f"  round {number}/{rounds}: B {b_rounds[-1].rate:.1f}, C {c_timing.rate:.1f} reviews/s",
                file=sys.stderr,
            )
    del model
    b_best = min(b_rounds, key=lambda timing: timing.seconds)
    c_best, submit_s, gpu = min(c_rounds, key=lambda item: item[0].seconds)
    b = {**b_best.to_json(), "rounds": [timing.rate for timing in b_rounds]}
    c = {
        **c_best.to_json(),
        "rounds": [timing.rate for timing, _, _ in c_rounds],
        "submit_seconds": submit_s,
        "worker_peak_rss_mib": run.worker_peak_rss_mib,
        "gpu": gpu,
    }
    return b, c


def bench_model(
    name: str,
    model_dir: Path,
    texts: Sequence[str],
    *,
    pipeline_texts: Sequence[str],
    variants: Sequence[Variant],
    redis_url: str,
    device: str,
    worker_precision: str,
    worker_env: Mapping[str, str] | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """A, B (every variant, the fastest picked) and C for one model folder, with C/B and C/A.

    B and C are then measured head to head in ``rounds`` alternating rounds (:func:`head_to_head`).
    """
    from sentiq.model_folder import read_model_info

    info = read_model_info(model_dir)
    max_length = info.max_length
    print(f"{name}: {model_dir}, max length {max_length}", file=sys.stderr)
    if not device.startswith("cuda"):
        from worker.int8 import has_usable_int8

        if has_usable_int8(model_dir, info.model_id):
            sizes = sorted({v.batch_size for v in variants if v.engine == "sentiq"})
            variants = [*variants, *(Variant("sentiq", "int8", size) for size in sizes)]
    result: dict[str, Any] = {"model": name, "folder": str(model_dir), "max_length": max_length}
    rss_before = peak_rss_mib()
    if pipeline_texts:
        result["A"] = bench_pipeline(model_dir, pipeline_texts, max_length, device).to_json()
    b_timings = bench_in_process(model_dir, texts, variants, device)
    result["B_variants"] = [t.to_json() for t in b_timings]
    by_way = {f"B {variant.label}": variant for variant in variants}
    best = by_way[max(b_timings, key=lambda timing: timing.rate).way]
    print(f"  B ({best.label}) and C, one worker through Redis, {rounds} round(s) ...", file=sys.stderr)
    result["B"], result["C"] = head_to_head(
        model_dir,
        texts,
        best,
        redis_url,
        rounds=rounds,
        device=device,
        precision=worker_precision,
        worker_env=worker_env,
    )
    result["benchmark_peak_rss_mib"] = max(rss_before or 0.0, peak_rss_mib() or 0.0)
    c_rate = result["C"]["reviews_per_second"]
    paired = [c / b for b, c in zip(result["B"]["rounds"], result["C"]["rounds"], strict=True)]
    result["C/B"] = statistics.median(paired)
    result["C/B_rounds"] = paired
    result["C/B_best_rounds"] = c_rate / result["B"]["reviews_per_second"]
    if "A" in result:
        result["C/A"] = c_rate / result["A"]["reviews_per_second"]
    return result


def _progress(items: Sequence[str], label: str) -> Sequence[str]:
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="review", file=sys.stderr, leave=False)  # type: ignore[return-value]
