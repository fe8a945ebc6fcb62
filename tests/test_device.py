"""Device and dtype choice, tested without a GPU."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sentiq.errors import ConfigurationError
from worker.device import choose_device, choose_dtype, cpu_has_fast_bf16, host_ticket_key


def test_auto_without_gpu_falls_back_to_cpu() -> None:
    choice = choose_device("auto", gpu_count=0, take_ticket=lambda: pytest.fail("no ticket needed"))
    assert choice.device == "cpu"
    assert "falling back" in choice.reason


def test_auto_spreads_workers_of_a_host_over_its_gpus() -> None:
    counter = itertools.count()
    devices = [choose_device("auto", gpu_count=3, take_ticket=lambda: next(counter)).device for _ in range(7)]
    assert devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]


def test_auto_with_one_gpu_takes_no_ticket() -> None:
    choice = choose_device("auto", gpu_count=1, take_ticket=lambda: pytest.fail("no ticket needed"))
    assert choice.device == "cuda:0"


@pytest.mark.parametrize(
    ("requested", "gpus", "expected"),
    [("cpu", 4, "cpu"), ("cuda", 2, "cuda:0"), ("cuda:1", 2, "cuda:1"), (" CUDA:0 ", 1, "cuda:0")],
)
def test_explicit_devices(requested: str, gpus: int, expected: str) -> None:
    assert choose_device(requested, gpu_count=gpus).device == expected


@pytest.mark.parametrize(
    ("requested", "gpus", "message"),
    [
        ("cuda", 0, "no CUDA GPU"),
        ("cuda:2", 2, "only 2 GPU"),
        ("tpu", 1, "unknown device"),
        ("cuda:x", 1, "unknown device"),
    ],
)
def test_impossible_devices_are_refused(requested: str, gpus: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        choose_device(requested, gpu_count=gpus)


@pytest.mark.parametrize(
    ("requested", "device", "cuda_bf16", "cpu_fast", "expected"),
    [
        ("auto", "cuda:0", True, False, "bfloat16"),
        ("auto", "cuda:1", False, False, "float16"),
        ("auto", "cpu", False, True, "bfloat16"),
        ("auto", "cpu", False, False, "float32"),
        ("float32", "cuda:0", True, True, "float32"),
    ],
)
def test_dtype_choice(requested: str, device: str, cuda_bf16: bool, cpu_fast: bool, expected: str) -> None:
    assert choose_dtype(requested, device, cuda_bf16=cuda_bf16, cpu_bf16_fast=cpu_fast) == expected


def test_float16_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="float16"):
        choose_dtype("float16", "cpu", cuda_bf16=False, cpu_bf16_fast=True)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu sse avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", True), ("fpu avx2", False)],
)
def test_cpu_bf16_detection(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_fast_bf16(str(cpuinfo)) is expected


def test_cpu_bf16_detection_without_cpuinfo(tmp_path: Path) -> None:
    assert cpu_has_fast_bf16(str(tmp_path / "missing")) is False


def test_ticket_key_is_per_host() -> None:
    assert host_ticket_key("sentiq", "gpu-box-1") == "sentiq:device-counter:gpu-box-1"
