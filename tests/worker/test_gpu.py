"""GPU checks: skipped where no CUDA device is visible (CI and these dev machines have none)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.device import choose_device, choose_precision
from worker.model import SentimentModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]


def test_model_on_gpu_in_half_precision_agrees_with_cpu(tiny_model_dir: Path) -> None:
    choice = choose_device("auto", gpu_count=torch.cuda.device_count(), take_ticket=lambda: 0)
    precision = choose_precision(
        "auto", choice.device, cuda_bf16=torch.cuda.is_bf16_supported(), cpu_bf16_fast=False
    )
    gpu = SentimentModel.load(tiny_model_dir, device=choice.device, precision=precision)
    cpu = SentimentModel.load(tiny_model_dir, device="cpu", precision="fp32")
    texts = ["a fine film", "a dull film " * 50, "terrible", "great great great"]
    on_gpu, _ = gpu.predict(texts)
    on_cpu, _ = cpu.predict(texts)
    for (gpu_label, gpu_score), (cpu_label, cpu_score) in zip(on_gpu, on_cpu, strict=True):
        assert gpu_score == pytest.approx(cpu_score, abs=0.02)
        if abs(cpu_score - 0.5) > 0.02:
            assert gpu_label == cpu_label
