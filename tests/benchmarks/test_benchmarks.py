"""The throughput benchmark: its report layout, its helpers, and whole runs with tiny counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.gpu_utilisation import sample_gpu, summarize
from benchmarks.latency import paced_p50_ms, percentile
from tests.conftest import REPO_ROOT


def _timing(way: str, reviews: int, seconds: float) -> dict[str, Any]:
    return {"way": way, "reviews": reviews, "seconds": seconds, "reviews_per_second": reviews / seconds}


def _results() -> dict[str, Any]:
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "cpu_flags": {"avx2": True, "amx_bf16": False},
        "load_average_1m": 1.0,
    }
    b_best = _timing("B sentiq bf16 bs 16", 100, 2.0)
    return {
        "device": "cpu",
        "date": "2026-11-28",
        "command": "python -m benchmarks",
        "machine": machine,
        "queue_ceiling": {
            **_timing("ceiling", 4000, 8.0),
            "ms_per_review": 2.0,
            "max_length": 32,
            "concurrent_clients": {
                "clients": 10,
                **_timing("ten", 4000, 10.0),
                "vs_one_client": 0.8,
                "clients_cpu_seconds": 0.5,
                "one_client_cpu_seconds": 0.2,
            },
        },
        "models": [
            {
                "model": "tinybert-shape",
                "A": _timing("A pipeline per review (fp32)", 50, 5.0),
                "B_variants": [_timing("B sentiq fp32 bs 16", 100, 4.0), b_best],
                "B": b_best,
                "C": _timing("C redis, 1 worker (bf16)", 100, 2.5),
                "C/B": 0.8,
                "C/A": 4.0,
            }
        ],
        "latency": [
            {
                "model": "tinybert-shape",
                "load": "idle",
                "reviews": 20,
                "sent_rate": 4.0,
                "target_rate": 4.0,
                "p50_ms": 31.0,
                "p99_ms": 70.0,
                "max_ms": 72.0,
                "in_process": {"p50_ms": 20.0, "paced_p50_ms": {"4": 26.5}},
            }
        ],
        "memory": {"A/B/C tinybert-shape": {"worker": [512.0], "benchmark": 700.0}},
    }


def test_markdown_reports_ceiling_abc_ratios_latency_and_memory() -> None:
    text = report.markdown(_results())
    ceiling_row = "| queue ceiling | near-zero (1 layer, hidden 16, 32 tokens) | C, 1 worker | 4000 | 8.00 |"
    assert ceiling_row + " **500.0** | 2.000 ms/review |" in text
    delivery_row = (
        "| result delivery | near-zero | C, 1 worker, 10 concurrent clients | 4000 | 10.00 | 400.0 |"
    )
    assert delivery_row + " 0.80x one client; clients' CPU 0.50 s, one client's 0.20 s |" in text
    assert "| A | tinybert-shape | pipeline per review (fp32) | 50 | 5.00 | 10.0 | |" in text
    assert "in-process sentiq bf16 bs 16 (best)" in text
    assert "in-process sentiq fp32 bs 16 |" in text
    assert "**40.0** | C/B 0.80, C/A 4.00 |" in text
    # p50 31 ms against 20 ms in-process back to back (an 11 ms gap) and 26.5 ms in-process at the
    # same 4 reviews/s (a 4.5 ms gap).
    assert "| 31.0 | 70.0 | 72.0 | 20.0 / 26.5 | 11.0 / 4.5 |" in text
    assert "| A/B/C tinybert-shape | 512 | 700 |" in text
    assert "avx2 yes, amx_bf16 no" in text
    assert "GPU busy" not in text  # a CPU run has no GPU samples


def test_markdown_reports_the_gpu_utilisation_sampled_during_c() -> None:
    results = _results()
    results["models"][0]["C"]["gpu"] = summarize("27, 20000\n88, 22091\n")
    text = report.markdown(results)
    assert "**40.0** | C/B 0.80, C/A 4.00; GPU busy 58 % mean, 88 % max, 22,091 MiB |" in text


def test_markdown_shows_the_head_to_head_rounds_of_b_and_c() -> None:
    results = _results()
    model = results["models"][0]
    model["B"] = {**_timing("B sentiq bf16 bs 16", 100, 2.0), "rounds": [48.0, 50.0, 49.5]}
    model["C"] = {**_timing("C redis, 1 worker (bf16)", 100, 2.5), "rounds": [40.0, 38.0, 39.0]}
    model["C/B_rounds"] = [40.0 / 48.0, 38.0 / 50.0, 39.0 / 49.5]
    model["C/B"], model["C/B_best_rounds"] = 39.0 / 49.5, 0.8
    text = report.markdown(results)
    assert "| C/B 0.79 (median of 3 rounds' own; best rounds 0.80), C/A 4.00 |" in text
    assert (
        "| B | tinybert-shape | in-process sentiq bf16 bs 16, head to head with C, best of 3 rounds "
        "(48.0 / 50.0 / 49.5) | 100 | 2.00 | **50.0** |  |"
    ) in text
    assert "redis, 1 worker (bf16), best of 3 rounds (40.0 / 38.0 / 39.0) | 100 | 2.50 | **40.0** |" in text


def test_report_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    paths = report.write_all(_results(), tmp_path)
    assert [path.name for path in paths] == ["bench.json", "bench.md", "bench.png"]
    assert json.loads(paths[0].read_text())["models"][0]["C/B"] == 0.8
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_gpu_summary_reads_nvidia_smi_lines_and_skips_the_rest() -> None:
    summary = summarize("10, 500\n90, 700\n[N/A], 1\n\n")
    assert summary == {
        "samples": 2,
        "utilisation_mean_pct": 50.0,
        "utilisation_max_pct": 90,
        "memory_used_max_mib": 700,
    }
    with sample_gpu("cpu") as on_cpu:
        pass
    assert on_cpu == {}


def test_gpu_check_script_parses() -> None:
    script = REPO_ROOT / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    usage = subprocess.run(["bash", str(script), "nonsense"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repo root; fails the test with its stderr's tail if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_benchmark_run_writes_every_section(tmp_path: Path, redis_url: str) -> None:
    result = _run_module(
        "benchmarks",
        "--device", "cpu",
        "--models", "tinybert-shape",
        "--count", "12",
        "--pipeline-count", "4",
        "--ceiling-count", "48",
        "--ceiling-clients", "3",
        "--precisions", "fp32",
        "--batch-sizes", "4",
        "--rounds", "2",
        "--latency-seconds", "1",
        "--latency-idle-rate", "10",
        "--latency-models", "near-zero",
        "--int8-check-reviews", "40",
        "--redis-url", redis_url,
        "--output", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "bench.json").read_text())
    ceiling = results["queue_ceiling"]
    assert ceiling["reviews"] == 48 and ceiling["reviews_per_second"] > 0 and ceiling["worker_peak_rss_mib"]
    many = ceiling["concurrent_clients"]
    assert many["clients"] == 3 and many["reviews"] == 48 and many["reviews_per_second"] > 0
    assert many["clients_cpu_seconds"] > 0 and many["one_client_cpu_seconds"] > 0
    (model,) = results["models"]
    assert model["A"]["reviews"] == 4
    # The int8 copy is built for B's grid (and C's auto engine) when it passes its check.
    assert model["int8_check"]["reviews"] == 40
    int8 = ["B sentiq int8 bs 4"] if model["int8_check"]["passed"] else []
    assert [b["way"] for b in model["B_variants"]] == ["B sentiq fp32 bs 4", "B hf fp32 bs 4", *int8]
    assert model["C"]["reviews"] == 12 and model["C/B"] > 0 and model["C/A"] > 0
    # B's fastest grid variant and C, head to head: two rounds each, each side its best round.
    assert model["B"]["way"] in [b["way"] for b in model["B_variants"]]
    for side in ("B", "C"):
        assert len(model[side]["rounds"]) == 2
        assert model[side]["reviews_per_second"] == pytest.approx(max(model[side]["rounds"]))
    # C/B: the median of the rounds' own ratios (B and C measured back to back), with two rounds
    # their mean; the best rounds' ratio is kept beside it.
    paired = [c / b for b, c in zip(model["B"]["rounds"], model["C"]["rounds"], strict=True)]
    assert model["C/B_rounds"] == pytest.approx(paired)
    assert model["C/B"] == pytest.approx(sum(paired) / 2)
    best = model["C"]["reviews_per_second"] / model["B"]["reviews_per_second"]
    assert model["C/B_best_rounds"] == pytest.approx(best)
    loads = [entry["load"] for entry in results["latency"]]
    assert loads[0] == "idle" and loads[1].startswith("half of C") and len(loads) == 2
    assert all(entry["p99_ms"] >= entry["p50_ms"] > 0 for entry in results["latency"])
    # Each load's in-process baseline was also measured at that load's rate.
    assert all(
        (paced_p50_ms(entry["in_process"], entry["target_rate"]) or 0) > 0 for entry in results["latency"]
    )
    assert results["machine"]["cores"] >= 1 and "avx2" in results["machine"]["cpu_flags"]
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "| queue ceiling |" in result.stdout and "C/B" in result.stdout


@pytest.mark.slow
def test_queue_profile_ranks_the_worker_and_client_steps(tmp_path: Path, redis_url: str) -> None:
    _run_module(
        "benchmarks.profile_queue", "--count", "64", "--redis-url", redis_url, "--output", str(tmp_path)
    )
    profile = json.loads((tmp_path / "profile.json").read_text())
    worker_steps = {row["step"]: row for row in profile["worker"]["steps"]}
    # The profile starts after the warm-up: one encoding call per classify call, no more.
    tokenization = worker_steps["  encoding: clean ends, look words up (tokenize new ones), cut"]
    classify = worker_steps["classify (everything between start and publish)"]
    assert 1 <= tokenization["calls"] <= classify["calls"]
    assert 0 < tokenization["ms_per_review"] <= classify["ms_per_review"]
    assert worker_steps["publish results (SET + XADD, publish_once)"]["calls"] >= 1
    # Each pass is padded once (the row names the function that pads, so it cannot read 0).
    assert worker_steps["  padding the passes (SentimentModel.pad)"]["calls"] >= tokenization["calls"]
    assert profile["worker"]["redis_round_trips"] > 0
    client_steps = {row["step"]: row for row in profile["client"]["steps"]}
    assert client_steps["results: parse predictions (Prediction.from_json)"]["calls"] == 64


@pytest.mark.slow
def test_stages_time_each_step_of_the_in_process_path(tmp_path: Path) -> None:
    _run_module(
        "benchmarks.stages",
        "--reviews",
        "24",
        "--repeats",
        "1",
        "--models",
        "near-zero",
        "--output",
        str(tmp_path),
    )
    stages = json.loads((tmp_path / "stages.json").read_text())
    entry = stages["models"]["near-zero"]
    assert entry["reviews"] == 24 and entry["max_length"] == 32 and entry["passes"] >= 1
    names = [row["stage"] for row in entry["stages"]]
    assert names[0].startswith("clean") and names[-1] == "predict, end to end"
    assert any("one thread" in name for name in names)
    assert all(row["seconds"] > 0 and row["us_per_review"] > 0 for row in entry["stages"])
    assert "| near-zero (32 tokens" in (tmp_path / "stages.md").read_text()


@pytest.mark.slow
def test_job_overhead_compares_packed_and_single_review_jobs(redis_url: str) -> None:
    result = _run_module(
        "benchmarks.job_overhead", "--reviews", "40", "--repeats", "1", "--redis-url", redis_url
    )
    measured = json.loads(result.stdout)
    assert measured["reviews"] == 40 and measured["reviews_per_job_packed"] > 1
    assert measured["packed_reviews_per_second"] > 0 and measured["single_review_jobs_per_second"] > 0
    assert measured["single_vs_packed"] == pytest.approx(
        measured["single_review_jobs_per_second"] / measured["packed_reviews_per_second"]
    )


@pytest.mark.slow
def test_simulated_device_runs_b_and_c_both_ways(tmp_path: Path, redis_url: str) -> None:
    # The default model, the TinyBERT shape (the near-zero one differs only in the folder built).
    model, max_length = "tinybert-shape", 300
    result = _run_module(
        "benchmarks.simulated_device",
        "--count",
        "120",
        "--rounds",
        "1",
        "--model",
        model,
        "--redis-url",
        redis_url,
        "--output",
        str(tmp_path),
    )
    measured = json.loads((tmp_path / "simulated_device.json").read_text())
    assert measured["model"] == model and measured["max_length"] == max_length
    for overlap in ("off", "on"):
        part = measured[f"overlap_{overlap}"]
        assert part["B"]["reviews"] == part["C"]["reviews"] == 120
        assert part["C/B"] == pytest.approx(part["C"]["reviews_per_second"] / part["B"]["reviews_per_second"])
    assert f"{model} ({max_length} tokens)" in result.stdout
