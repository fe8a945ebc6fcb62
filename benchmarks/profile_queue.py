"""Where the queue path's time goes, per review: ``python -m benchmarks.profile_queue``.

The near-zero model (its forward pass costs nothing) is served by one real worker that runs
under cProfile from after a warm-up (through :mod:`benchmarks._profiling`'s ``sitecustomize``, so
the worker's code is untouched), while this process profiles the client's submit and its reading
of the results.
Each step's inclusive time is divided by the number of reviews and ranked. cProfile slows
Python-heavy code down, so the shares matter more than the absolute milliseconds; the
unprofiled ms per review is the queue ceiling of ``python -m benchmarks``.

Writes ``profile.json`` and ``profile.md`` (and the raw ``worker.prof``) into ``--output``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.model_folders import NEAR_ZERO_MAX_LENGTH, near_zero_folder
from benchmarks.runs import add_run_arguments, benchmark_run
from benchmarks.serving import serving

PROFILING_PATH = Path(__file__).resolve().parent / "_profiling"

# (label, file suffix, function name): inclusive (cumulative) time of that function.
WORKER_STEPS: tuple[tuple[str, str, str], ...] = (
    (
        "wait for and dequeue the first job (blocking BLMOVE, RQ)",
        "worker/worker.py",
        "dequeue_job_and_maintain_ttl",
    ),
    ("gather more queued jobs (two round trips per take of several)", "worker/worker.py", "_gather_more"),
    ("admit each job: payload check (pydantic)", "worker/worker.py", "_admit_or_refuse"),
    ("  of which payload decode (JobPayload, pydantic)", "sentiq/contract.py", "decode"),
    ("start the batch's jobs: RQ bookkeeping, one round trip", "worker/rq_internals.py", "start_jobs"),
    ("classify (everything between start and publish)", "worker/processing.py", "classify"),
    ("  encoding: clean ends, look words up (tokenize new ones), cut", "worker/encoding.py", "encode_arrays"),
    ("  padding the passes (SentimentModel.pad)", "worker/model.py", "pad"),
    ("  forward pass", "torch/nn/modules/module.py", "_wrapped_call_impl"),
    ("publish results (SET + XADD, publish_once)", "sentiq/result_store.py", "publish_once"),
    ("finish the batch's jobs: RQ bookkeeping, three round trips", "worker/rq_internals.py", "finish_jobs"),
    ("worker state BUSY/IDLE (set_state)", "worker/worker.py", "set_state"),
)
CLIENT_STEPS: tuple[tuple[str, str, str], ...] = (
    ("submit: validate reviews (pydantic Review)", "sentiq/contract.py", "validate_reviews"),
    ("submit: build RQ job data (prepare_data, JobPayload)", "rq/queue.py", "prepare_data"),
    ("submit: write jobs (one MULTI/EXEC per 500 jobs)", "producer/client.py", "_write_jobs"),
    (
        "results: wait on and read the predictions stream (XREAD BLOCK)",
        "sentiq/result_store.py",
        "read_stream",
    ),
    ("results: parse predictions (Prediction.from_json)", "sentiq/contract.py", "from_json"),
    ("results: MGET stored results", "sentiq/result_store.py", "fetch"),
)


def _find(stats: pstats.Stats, suffix: str, name: str) -> tuple[int, float, float]:
    """(calls, own seconds, inclusive seconds) of the function, the largest match if several."""
    best = (0, 0.0, 0.0)
    for (path, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and path.replace(os.sep, "/").endswith(suffix) and row[3] > best[2]:
            best = (int(row[1]), float(row[2]), float(row[3]))
    return best


def _matching_own_time(stats: pstats.Stats, predicate: Callable[[str, str], bool]) -> float:
    total = 0.0
    for (path, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if predicate(path, function):
            total += float(row[2])  # own time
    return total


def _round_trips(stats: pstats.Stats) -> int:
    """Redis round trips: one ``send_packed_command`` per command or per pipeline."""
    return max(
        (
            int(row[1])
            for (path, _line, function), row in stats.stats.items()  # type: ignore[attr-defined]
            if function == "send_packed_command" and path.endswith("connection.py")
        ),
        default=0,
    )


def breakdown(stats: pstats.Stats, steps: Sequence[tuple[str, str, str]], reviews: int) -> dict[str, Any]:
    """Each step's ms per review and call count, ranked, plus the cross-cutting totals."""
    rows = []
    for label, suffix, name in steps:
        calls, _own, inclusive = _find(stats, suffix, name)
        rows.append({"step": label, "calls": calls, "ms_per_review": inclusive * 1000 / reviews})
    pydantic_s = _matching_own_time(
        stats, lambda path, function: "pydantic" in path or "pydantic" in function
    )
    socket_s = _matching_own_time(
        stats,
        lambda path, function: path == "~" and any(word in function for word in ("recv", "sendall", "poll")),
    )
    return {
        "reviews": reviews,
        "steps": rows,
        "pydantic_ms_per_review": pydantic_s * 1000 / reviews,
        "socket_wait_ms_per_review": socket_s * 1000 / reviews,
        "redis_round_trips": _round_trips(stats),
        "redis_round_trips_per_review": _round_trips(stats) / reviews,
        "top_own_time": _top(stats, reviews),
    }


def _top(stats: pstats.Stats, reviews: int, limit: int = 25) -> list[dict[str, Any]]:
    ranked = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    return [
        {
            "function": f"{Path(path).name}:{line}({function})" if path != "~" else function,
            "calls": int(row[1]),
            "own_ms_per_review": row[2] * 1000 / reviews,
            "inclusive_ms_per_review": row[3] * 1000 / reviews,
        }
        for (path, line, function), row in ranked[:limit]
    ]


def profile_queue(
    texts: Sequence[str],
    redis_url: str,
    scratch: Path,
    output: Path,
    *,
    max_length: int = NEAR_ZERO_MAX_LENGTH,
    warm_up: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """Serve the near-zero model from a profiled worker on ``device``; profile this client's submit
    and reading (on a GPU the worker runs bf16, as a worker there chooses)."""
    model_dir = near_zero_folder(scratch / "near-zero", list(texts[:500]), max_length)
    worker_prof = output / "worker.prof"
    worker_prof.unlink(missing_ok=True)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROFILING_PATH), os.environ.get("PYTHONPATH")])),
        "SENTIQ_BENCH_PROFILE": str(worker_prof),
    }
    submit_profile, results_profile = cProfile.Profile(), cProfile.Profile()
    precision = "bf16" if device.startswith("cuda") else "fp32"
    with (
        serving(model_dir, redis_url, device=device, precision=precision, worker_env=env) as run,
        run.client() as client,
    ):
        client.results(client.submit(texts[:warm_up]), timeout=600)
        for pid in run.pids:
            os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)  # the worker is blocked in BLMOVE; the handler runs once that returns or retries
        started = time.perf_counter()
        ids = submit_profile.runcall(client.submit, texts)
        submitted = time.perf_counter()
        results_profile.runcall(client.results, ids, timeout=1800)
        finished = time.perf_counter()
    worker_stats = pstats.Stats(str(worker_prof))
    client_stats = pstats.Stats(submit_profile)
    client_stats.add(results_profile)
    return {
        "reviews": len(texts),
        "max_length": max_length,
        "device": device,
        "profiled_seconds": finished - started,
        "profiled_submit_seconds": submitted - started,
        "profiled_ms_per_review": (finished - started) * 1000 / len(texts),
        "worker": breakdown(worker_stats, WORKER_STEPS, len(texts)),
        "client": breakdown(client_stats, CLIENT_STEPS, len(texts)),
    }


def markdown(result: dict[str, Any]) -> str:
    """The two ranked tables (worker, client) and the worker's top functions by own time."""
    lines = [
        f"### Queue path profile: near-zero model ({result['max_length']} tokens), "
        f"{result['reviews']} reviews, 1 worker ({result.get('device', 'cpu')}), under cProfile",
        "",
        f"Profiled end to end: {result['profiled_ms_per_review']:.3f} ms/review "
        f"(submit {result['profiled_submit_seconds']:.2f} s of {result['profiled_seconds']:.2f} s).",
    ]
    for side in ("worker", "client"):
        part = result[side]
        lines += [
            "",
            f"| {side}: step (inclusive) | calls | ms/review |",
            "| --- | ---: | ---: |",
        ]
        lines += [
            f"| {row['step']} | {row['calls']:,} | {row['ms_per_review']:.4f} |"
            for row in sorted(part["steps"], key=lambda row: row["ms_per_review"], reverse=True)
        ]
        lines += [
            f"| (cross-cut) pydantic, own time | | {part['pydantic_ms_per_review']:.4f} |",
            f"| (cross-cut) socket send/recv/poll, own time | | {part['socket_wait_ms_per_review']:.4f} |",
            f"| Redis round trips | {part['redis_round_trips']:,} "
            f"| {part['redis_round_trips_per_review']:.3f}/review |",
        ]
    lines += [
        "",
        "| worker: top functions by own time | calls | own ms/review | incl. ms/review |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{row['function']}` | {row['calls']:,} | {row['own_ms_per_review']:.4f} "
        f"| {row['inclusive_ms_per_review']:.4f} |"
        for row in result["worker"]["top_own_time"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the profile, print the tables and write ``profile.json`` and ``profile.md``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_queue", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=4000, help="reviews in the profiled run")
    parser.add_argument("--max-length", type=int, default=NEAR_ZERO_MAX_LENGTH, help="tokens the model keeps")
    parser.add_argument("--device", default="cpu", help="the worker's device: cpu, cuda or cuda:N")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    with benchmark_run(args, args.count, "sentiq-profile-") as (texts, url, scratch):
        result = profile_queue(
            texts, url, scratch, args.output, max_length=args.max_length, device=args.device
        )
    table = markdown(result)
    print(table)
    (args.output / "profile.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.output / "profile.md").write_text(table, encoding="utf-8")
    print(f"wrote {args.output / 'profile.json'} and {args.output / 'profile.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
