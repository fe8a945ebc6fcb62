"""The throughput benchmark runs end to end and writes its report (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_throughput_benchmark_writes_its_report(tiny_model_dir: Path, tmp_path: Path, redis_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "benchmarks",
            "--model", str(tiny_model_dir),
            "--count", "24",
            "--workers", "1",
            "--redis-url", redis_url,
            "--output", str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert report["reviews"] == 24
    assert report["baseline"] == "pipeline per review (float32)"
    ways = set(report["reviews_per_second"])
    assert {"pipeline per review (float32)", "in-process batched (float32)"} <= ways
    assert any(way.startswith("redis, 1 worker(s) x ") for way in ways)
    assert all(rate > 0 for rate in report["reviews_per_second"].values())
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert "reviews/s" in result.stdout
