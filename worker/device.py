"""Which device and precision a worker runs its model on.

``auto`` spreads the workers of one host over its GPUs: each worker takes a ticket from a
per-host counter in Redis and uses GPU ``ticket % gpu_count``, so N workers started on a host
with N GPUs land on N different GPUs whatever order they start in. Without CUDA it falls back
to the CPU with a warning. The decision is a pure function of its inputs, so it is tested
without a GPU.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sentiq.errors import ConfigurationError
from sentiq.settings import Precision

log = logging.getLogger(__name__)

#: A precision a model actually runs in (``auto`` resolved).
ServedPrecision = Literal["fp32", "bf16", "fp16"]

_EXPLICIT_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


@dataclass(frozen=True)
class DeviceChoice:
    """The device a worker uses and why."""

    device: str
    reason: str


def choose_device(
    requested: str,
    *,
    gpu_count: int,
    take_ticket: Callable[[], int] | None = None,
) -> DeviceChoice:
    """Resolve ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` against the GPUs this host has.

    ``take_ticket`` returns the next value of the host's worker counter; it is only called for
    ``auto`` with more than one GPU.
    """
    requested = requested.strip().lower()
    if requested != "auto" and not _EXPLICIT_DEVICE.match(requested):
        raise ConfigurationError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")
    if requested == "cpu":
        return DeviceChoice("cpu", "requested")
    if requested.startswith("cuda"):
        if gpu_count == 0:
            raise ConfigurationError(f"device {requested!r} requested but no CUDA GPU is visible")
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if index >= gpu_count:
            raise ConfigurationError(
                f"device {requested!r} requested but only {gpu_count} GPU(s) are visible (cuda:0..)"
            )
        return DeviceChoice(f"cuda:{index}", "requested")
    if gpu_count == 0:
        return DeviceChoice("cpu", "no CUDA GPU visible; falling back to CPU")
    if gpu_count == 1 or take_ticket is None:
        return DeviceChoice("cuda:0", f"auto: {gpu_count} GPU(s), using the first")
    ticket = take_ticket()
    index = ticket % gpu_count
    return DeviceChoice(f"cuda:{index}", f"auto: worker #{ticket} on this host, {gpu_count} GPUs")


def host_ticket_key(prefix: str, hostname: str | None = None) -> str:
    """Redis key of the per-host worker counter used by ``auto``."""
    return f"{prefix}:device-counter:{hostname or socket.gethostname()}"


def choose_precision(
    requested: Precision, device: str, *, cuda_bf16: bool, cpu_bf16_fast: bool
) -> ServedPrecision:
    """Resolve ``auto`` to bf16 / fp16 on GPU, bf16 on CPUs with fast bf16, else fp32.

    The worker casts its weights to the result; ``python -m training evaluate`` resolves its
    ``--precision`` here too, so that it scores what a worker on the same machine serves.
    """
    if requested != "auto":
        if requested == "fp16" and device == "cpu":
            raise ConfigurationError("fp16 is not supported on CPU; use bf16 or fp32")
        if requested == "bf16" and device.startswith("cuda") and not cuda_bf16:
            raise ConfigurationError("this GPU does not support bf16; use fp16 or fp32")
        return requested
    if device.startswith("cuda"):
        return "bf16" if cuda_bf16 else "fp16"
    return "bf16" if cpu_bf16_fast else "fp32"


def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU runs bf16 matmuls natively (AMX or AVX512-BF16).

    On such CPUs bf16 weights ran about 2x faster than fp32 for sentiq's models; elsewhere
    bf16 is emulated and slower, so ``auto`` stays on fp32.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False
