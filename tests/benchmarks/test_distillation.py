"""The distillation comparison table on two tiny model folders: measured alike, ratios against the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.distillation import main, parse_model
from sentiq.model_folder import ModelInfo
from tests.conftest import TEST_SAMPLE, TRAIN_SAMPLE
from tools.tiny_models import BertShape, build_tokenizer, sample_texts, write_random_bert


@pytest.fixture(scope="module")
def smaller_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, hidden-16 random BERT standing in for a student."""
    info = ModelInfo(model_id="tiny-student", max_length=64, truncation="head_tail")
    shape = BertShape(layers=1, hidden=16, heads=2, intermediate=32)
    folder = tmp_path_factory.mktemp("student")
    return write_random_bert(folder, shape, build_tokenizer(sample_texts(TRAIN_SAMPLE)), info)


def test_the_table_compares_teacher_and_student(
    tiny_model_dir: Path, smaller_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        "--model",
        f"teacher={tiny_model_dir}",
        "--model",
        f"student={smaller_model_dir}",
        "--test-data",
        str(TEST_SAMPLE),
        "--max-samples",
        "40",
        "--speed-reviews",
        "24",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path),
    ]
    assert main(arguments) == 0
    result = json.loads((tmp_path / "distillation.json").read_text())
    teacher, student = result["models"]
    assert (teacher["model"], teacher["layers"], teacher["hidden_size"]) == ("teacher", 2, 32)
    assert (student["model_id"], student["layers"], student["hidden_size"]) == ("tiny-student", 1, 16)
    assert student["parameters"] < teacher["parameters"]
    assert student["parameter_ratio"] == pytest.approx(student["parameters"] / teacher["parameters"])
    assert teacher["parameter_ratio"] == 1.0 and teacher["speed_ratio"] == 1.0
    for row in (teacher, student):
        assert row["samples"] == 40 and 0.0 <= row["accuracy"] <= 1.0
        assert row["in_process"]["reviews"] == 24 and row["in_process"]["reviews_per_second"] > 0
        assert "through_worker" not in row
    table = (tmp_path / "distillation.md").read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    parameters = f"{student['parameters']:,} ({student['parameter_ratio']:.2f}x)"
    assert f"| student | `tiny-student` | 1 | 16 | {parameters} |" in table
    assert f"{student['accuracy']:.4f}" in table
    assert "accuracy on 40 reviews of imdb_test_sample.csv.gz; speed on 24 reviews, fp32 weights" in table


def test_models_are_named_or_take_their_folders_name() -> None:
    assert parse_model("teacher=runs/cpu-full") == ("teacher", Path("runs/cpu-full"))
    assert parse_model("runs/distill-layers") == ("distill-layers", Path("runs/distill-layers"))


@pytest.mark.slow
def test_through_one_worker(tiny_model_dir: Path, tmp_path: Path, redis_url: str) -> None:
    arguments = ["--model", str(tiny_model_dir), "--speed-reviews", "16", "--output", str(tmp_path)]
    assert main([*arguments, "--through-worker", "--redis-url", redis_url]) == 0
    [row] = json.loads((tmp_path / "distillation.json").read_text())["models"]
    assert row["through_worker"]["reviews"] == 16 and row["through_worker"]["reviews_per_second"] > 0
    assert "1 worker via Redis" in (tmp_path / "distillation.md").read_text()
