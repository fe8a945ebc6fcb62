"""GPU utilisation sampled with ``nvidia-smi`` while a benchmark step runs (CUDA devices only)."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from typing import Any

#: How often nvidia-smi samples, in ms.
INTERVAL_MS = 100


@contextlib.contextmanager
def sample_gpu(device: str) -> Iterator[dict[str, Any]]:
    """Sample the GPU behind ``device`` during the block; the yielded dict gets the summary after it.

    Empty for the CPU or where ``nvidia-smi`` is missing.
    """
    summary: dict[str, Any] = {}
    tool = shutil.which("nvidia-smi")
    if not device.startswith("cuda") or tool is None:
        yield summary
        return
    index = device.split(":", 1)[1] if ":" in device else "0"
    sampler = subprocess.Popen(
        [
            tool,
            f"--id={index}",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"--loop-ms={INTERVAL_MS}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield summary
    finally:
        sampler.terminate()
        output, _ = sampler.communicate(timeout=10)
        summary.update(summarize(output))


def summarize(output: str) -> dict[str, Any]:
    """Mean and max utilisation (%) and max memory used (MiB) from nvidia-smi's CSV lines."""
    utilisation, memory = [], []
    for line in output.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 2 and all(part.isdigit() for part in parts):
            utilisation.append(int(parts[0]))
            memory.append(int(parts[1]))
    if not utilisation:
        return {"samples": 0}
    return {
        "samples": len(utilisation),
        "utilisation_mean_pct": statistics.fmean(utilisation),
        "utilisation_max_pct": max(utilisation),
        "memory_used_max_mib": max(memory),
    }
