"""What machine a benchmark ran on, and how much memory its processes took at their peak."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

#: The CPU flags that decide which engine and precision are fast (bf16 is emulated without the last three).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set[str]()
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "", "x86_64"):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model, core count, the :data:`CPU_FLAGS` it has, load, torch and (on CUDA) the GPU."""
    model, flags = _cpuinfo()
    described: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count() or 1,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    import torch

    described["torch"] = torch.__version__
    if device.startswith("cuda") and torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(device)
    return described


def flags_line(machine: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, avx2 yes, avx512_bf16 yes, amx_bf16 no, ...`` for the printout."""
    flags = ", ".join(
        f"{flag} {'yes' if present else 'no'}" for flag, present in machine["cpu_flags"].items()
    )
    gpu = f", GPU {machine['gpu']}" if "gpu" in machine else ""
    kept = machine.get("freed_memory_kept")
    allocator = "" if kept is None else f", allocator {'keeps freed memory' if kept else 'as glibc sets it'}"
    return (
        f"{machine['cpu']}, {machine['cores']} cores ({flags}), load {machine['load_average_1m']}"
        f"{gpu}{allocator}"
    )


def peak_rss_mib(pid: int | None = None) -> float | None:
    """Peak resident memory (VmHWM) of ``pid`` (default: this process) in MiB; None if unreadable."""
    try:
        status = Path(f"/proc/{pid or 'self'}/status").read_text(encoding="utf-8")
    except OSError:
        if pid is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS count afresh (Linux ``clear_refs``), so a phase gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return False
    return True
