"""training.presets: preset values under explicit flags."""

from __future__ import annotations

import pytest

from sentiq.errors import ConfigurationError
from sentiq.settings import TrainSettings
from training.presets import PRESETS, apply_preset


def test_flags_given_override_the_preset() -> None:
    merged = apply_preset("quick", {"epochs": 2.0, "max_length": None, "seed": 3})
    assert merged["epochs"] == 2.0
    assert merged["max_length"] == PRESETS["quick"]["max_length"]
    assert merged["seed"] == 3


def test_no_preset_passes_the_flags_through() -> None:
    assert apply_preset(None, {"epochs": None}) == {"epochs": None}


def test_unknown_preset() -> None:
    with pytest.raises(ConfigurationError, match="unknown preset 'slow'"):
        apply_preset("slow", {})


def test_presets_are_valid_train_settings() -> None:
    for values in PRESETS.values():
        TrainSettings(**values)


def test_quick_preset_uses_bf16_where_the_cpu_runs_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.device

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(worker.device, "cpu_has_fast_bf16", lambda: True)
    assert apply_preset("quick", {})["precision"] == "bf16"
    monkeypatch.setattr(worker.device, "cpu_has_fast_bf16", lambda: False)
    assert apply_preset("quick", {})["precision"] == "auto"
    assert apply_preset("quick", {"precision": "fp32"})["precision"] == "fp32"
    assert apply_preset("quick", {})["truncation"] == "head_tail"


def test_full_preset_is_the_measured_long_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.device

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(worker.device, "cpu_has_fast_bf16", lambda: True)
    full = apply_preset("full", {"learning_rate": None})
    assert (full["max_train_samples"], full["max_length"], full["truncation"]) == (18000, 300, "head_tail")
    assert (full["epochs"], full["learning_rate"], full["precision"]) == (1.0, 1e-4, "bf16")
    TrainSettings(**full)
