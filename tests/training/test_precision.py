"""training.precision: device and precision choice, CPU threads, versions and commit."""

from __future__ import annotations

import pytest
import torch

from sentiq.errors import ConfigurationError
from training.precision import choose_runtime, git_commit, package_versions, usable_cores


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_cpu_defaults_to_fp32_on_every_usable_core() -> None:
    runtime = choose_runtime("auto")
    assert (runtime.device, runtime.precision) == ("cpu", "fp32")
    assert runtime.threads == usable_cores() == torch.get_num_threads()
    assert choose_runtime("bf16").precision == "bf16"
    with pytest.raises(ConfigurationError, match="fp16 needs a CUDA GPU"):
        choose_runtime("fp16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_defaults_to_mixed_precision() -> None:
    runtime = choose_runtime("auto")
    assert runtime.device == "cuda"
    assert runtime.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_versions_and_commit() -> None:
    versions = package_versions()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(versions) >= {"python", "sentiq", "transformers", "datasets", "evaluate"}
    commit = git_commit()
    assert set(commit) == {"git_commit", "git_dirty"}
    if commit["git_commit"] is not None:
        assert len(str(commit["git_commit"])) == 40
