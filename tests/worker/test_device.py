"""Device and dtype choice, tested without a GPU."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sentiq.errors import ConfigurationError
from sentiq.settings import Precision, load_settings
from worker.cli import build_parser, settings_from_args
from worker.device import choose_device, choose_precision, cpu_has_fast_bf16, host_ticket_key


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
        ("auto", "cuda:0", True, False, "bf16"),
        ("auto", "cuda:1", False, False, "fp16"),
        ("auto", "cpu", False, True, "bf16"),
        ("auto", "cpu", False, False, "fp32"),
        ("fp32", "cuda:0", True, True, "fp32"),
        ("bf16", "cpu", False, False, "bf16"),
    ],
)
def test_precision_choice(
    requested: Precision, device: str, cuda_bf16: bool, cpu_fast: bool, expected: str
) -> None:
    assert choose_precision(requested, device, cuda_bf16=cuda_bf16, cpu_bf16_fast=cpu_fast) == expected


@pytest.mark.parametrize(
    ("requested", "device", "message"),
    [("fp16", "cpu", "fp16 is not supported on CPU"), ("bf16", "cuda:0", "bf16")],
)
def test_impossible_precisions_are_refused(requested: Precision, device: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        choose_precision(requested, device, cuda_bf16=False, cpu_bf16_fast=True)


def test_the_former_dtype_names_still_configure_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIQ_WORKER_DTYPE", "bfloat16")
    assert load_settings().worker.precision == "bf16"
    monkeypatch.setenv("SENTIQ_WORKER_PRECISION", "fp32")
    assert load_settings().worker.precision == "fp32"
    args = build_parser().parse_args(["--dtype", "float16"])
    assert settings_from_args(args).worker.precision == "fp16"


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
