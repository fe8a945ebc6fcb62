"""``python -m benchmarks.job_overhead``: what a job costs beyond its reviews, with the near-zero model.

The same reviews go through one worker twice per repeat: packed (the producer's default
``reviews_per_job``) and one review per job, as a service that sends reviews one at a time
produces them. With a model that costs next to nothing, the difference is the queue path's
per-job cost (RQ's bookkeeping, the dequeue, the job record), so the ratio of the two rates shows
how much single-review traffic pays for being unpacked. Both are measured in the same run,
alternating, best of ``--repeats``; a private Redis unless ``--redis-url``.

    python -m benchmarks.job_overhead [--reviews 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.model_folders import near_zero_folder
from benchmarks.runs import add_run_arguments, benchmark_run
from benchmarks.serving import serving, submit_and_wait
from producer import Client


def measure_job_overhead(
    model_dir: Path, texts: Sequence[str], redis_url: str, repeats: int
) -> dict[str, Any]:
    """Reviews per second packed and one per job (best of ``repeats`` each), and their ratio."""
    with serving(model_dir, redis_url, precision="fp32") as run:
        packed_settings = run.settings
        single_settings = packed_settings.model_copy(
            update={"producer": packed_settings.producer.model_copy(update={"reviews_per_job": 1})}
        )
        with Client.from_settings(packed_settings) as packed, Client.from_settings(single_settings) as single:
            submit_and_wait(packed, texts[:256])
            submit_and_wait(single, texts[:256])
            packed_s: list[float] = []
            single_s: list[float] = []
            for _ in range(repeats):
                packed_s.append(submit_and_wait(packed, texts)[1])
                single_s.append(submit_and_wait(single, texts)[1])
    packed_rate = len(texts) / min(packed_s)
    single_rate = len(texts) / min(single_s)
    return {
        "reviews": len(texts),
        "reviews_per_job_packed": packed_settings.producer.reviews_per_job,
        "packed_reviews_per_second": packed_rate,
        "single_review_jobs_per_second": single_rate,
        "single_vs_packed": single_rate / packed_rate,
        "per_job_ms": (min(single_s) - min(packed_s)) * 1000 / len(texts),
        "packed_seconds": packed_s,
        "single_seconds": single_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print one JSON object."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.job_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--reviews", type=int, default=2000, help="reviews per measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each way; the best is kept")
    add_run_arguments(parser, output=False)
    args = parser.parse_args(argv)
    with benchmark_run(args, args.reviews, "sentiq-job-overhead-") as (texts, url, scratch):
        folder = near_zero_folder(scratch / "near-zero", texts[:500])
        result = measure_job_overhead(folder, texts, url, args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
