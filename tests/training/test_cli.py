"""``python -m training`` as a user runs it: help, exit codes, one-line errors, JSON output, presets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sentiq.settings import describe_validation_error, load_settings
from tests.conftest import REPO_ROOT, TEST_SAMPLE
from training.cli import build_parser, main
from training.presets import PRESETS, apply_preset
from worker.device import cpu_has_fast_bf16


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def help_text(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``python -m training ARGS --help``'s output, from the same parser in this process."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    # One real process for the entry point; the subcommands' texts come from the same parser.
    top = run_cli("--help")
    assert top.returncode == 0
    assert "train" in top.stdout and "evaluate" in top.stdout and "SENTIQ_TRAIN_EPOCHS" in top.stdout
    train = help_text("train", capsys=capsys)
    for flag in (
        "--data",
        "--test-data",
        "--base-model",
        "--preset",
        "--force",
        "--if-missing",
        "--truncation",
    ):
        assert flag in train
    evaluate = help_text("evaluate", capsys=capsys)
    assert "--json" in evaluate and "--max-samples" in evaluate
    assert "explain" in top.stdout
    explain = help_text("explain", capsys=capsys)
    for flag in ("--model", "--top", "--html", "--png", "--json", "--steps", "--baseline"):
        assert flag in explain


def test_missing_column_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text_body": ["x", "y"], "sentiment": ["positive", "negative"]}).to_csv(bad, index=False)
    completed = run_cli("train", "--data", str(bad), "--output-dir", str(tmp_path / "out"))
    assert completed.returncode == 2
    assert f"error: {bad}: missing text column" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


def test_evaluate_json_is_one_object_on_stdout(tiny_model_dir: Path) -> None:
    completed = run_cli(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(TEST_SAMPLE),
        "--max-samples",
        "60",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["samples"] == 60
    # The folder's metrics.json decides the preprocessing (tools/tiny_models.py writes 128, head).
    assert (result["max_length"], result["truncation"]) == (128, "head")
    counts = ("true_positives", "false_positives", "true_negatives", "false_negatives")
    assert sum(result[key] for key in counts) == 60
    assert result["accuracy"] == pytest.approx((result["true_positives"] + result["true_negatives"]) / 60)
    predicted_positive = result["true_positives"] + result["false_positives"]
    expected_precision = result["true_positives"] / predicted_positive if predicted_positive else 0.0
    assert result["precision"] == pytest.approx(expected_precision)
    # --precision auto: what a worker on this machine serves.
    assert result["weights_precision"] == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert "Scoring" in completed.stderr  # the progress bar went to stderr


def test_existing_model_refused_or_kept(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "existing"
    shutil.copytree(tiny_model_dir, output)
    refused = run_cli("train", "--output-dir", str(output), "--base-model", "bundled")
    assert refused.returncode == 2
    assert "already holds a model; pass --force to retrain" in refused.stderr
    kept = run_cli("train", "--output-dir", str(output), "--base-model", "bundled", "--if-missing")
    assert kept.returncode == 0
    assert f"model already exists at {output}" in kept.stdout
    assert sorted(path.name for path in output.iterdir()) == sorted(
        path.name for path in tiny_model_dir.iterdir()
    )


def test_evaluate_errors(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(TEST_SAMPLE)]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
    assert (
        main(["evaluate", "--model", str(tiny_model_dir), "--data", str(TEST_SAMPLE), "--max-samples", "0"])
        == 2
    )
    assert "--max-samples must be at least 1" in capsys.readouterr().err


def test_evaluate_prints_a_summary(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["evaluate", "--model", str(tiny_model_dir), "--data", str(TEST_SAMPLE), "--max-samples", "20"])
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion  TP" in out and "20 reviews" in out


def test_invalid_setting_names_flag_and_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--max-length", "4", "--output-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "error: invalid setting --max-length (SENTIQ_TRAIN_MAX_LENGTH): " in err


def test_force_and_if_missing_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["train", "--force", "--if-missing"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_preset_then_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIQ_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("SENTIQ_TRAIN_SEED", "11")
    flags = {"epochs": None, "max_length": 96, "seed": None, "data": None}
    train = load_settings(train=apply_preset("quick", flags)).train
    assert train.max_length == 96  # flag over preset
    assert train.epochs == PRESETS["quick"]["epochs"]  # preset over environment
    assert train.max_train_samples == PRESETS["quick"]["max_train_samples"]
    assert train.seed == 11  # environment where neither preset nor flag says
    assert load_settings(train=apply_preset(None, flags)).train.epochs == 7


def test_validation_errors_read_as_flags() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        load_settings(train={"batch_size": 0})
    message = describe_validation_error(caught.value, as_flags=True)
    assert message.startswith("invalid setting --batch-size (SENTIQ_TRAIN_BATCH_SIZE): ")
