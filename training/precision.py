"""Where a training run computes (device, mixed precision, CPU threads) and what it ran (versions, commit)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sentiq.errors import ConfigurationError
from sentiq.settings import Precision

log = logging.getLogger(__name__)

_VERSIONED = ("sentiq", "torch", "transformers", "datasets", "evaluate", "accelerate", "tokenizers")
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Runtime:
    """The device and arithmetic of one run."""

    device: Literal["cuda", "cpu"]
    precision: Literal["fp32", "bf16", "fp16"]
    threads: int

    def describe(self) -> str:
        """E.g. ``cpu (2 threads), fp32`` or ``cuda (NVIDIA H100), bf16``."""
        import torch

        where = (
            f"cuda ({torch.cuda.get_device_name(0)})"
            if self.device == "cuda"
            else f"cpu ({self.threads} threads)"
        )
        return f"{where}, {self.precision}"


def choose_runtime(requested: Precision = "auto") -> Runtime:
    """CUDA when present, else CPU; ``auto`` precision is bf16 (or fp16) on a CUDA GPU and fp32 on CPU.

    On CPU the thread count is set to the cores this process may use. bf16 on CPU (autocast) is
    there when asked for: it is faster on CPUs with native bf16 (AVX512-BF16 / AMX), at the cost
    of reduced-precision activations.
    """
    import torch

    if torch.cuda.is_available():
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not bf16_ok:
            raise ConfigurationError("this GPU does not support bf16; use --precision fp16 or fp32")
        precision = ("bf16" if bf16_ok else "fp16") if requested == "auto" else requested
        return Runtime(device="cuda", precision=precision, threads=torch.get_num_threads())
    if requested == "fp16":
        raise ConfigurationError("fp16 needs a CUDA GPU; on CPU use --precision fp32 or bf16")
    threads = usable_cores()
    torch.set_num_threads(threads)
    return Runtime(device="cpu", precision="fp32" if requested == "auto" else requested, threads=threads)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that shape a trained model."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> dict[str, str | bool | None]:
    """``git_commit``: the commit of the sentiq checkout running this code; ``git_dirty``: local changes.

    Both None when sentiq runs from an installed package or git is missing.
    """
    unknown: dict[str, str | bool | None] = {"git_commit": None, "git_dirty": None}
    if not (_REPO_ROOT / ".git").exists():
        return unknown
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"git_commit": commit, "git_dirty": dirty}


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return completed.stdout.strip()
