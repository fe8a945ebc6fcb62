"""``python -m training distill`` end to end: a tiny teacher trained by ``train``, both student kinds
distilled from it, served by the worker's code; the loss and the layer choice; bad arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml  # type: ignore[import-untyped]

from sentiq.contract import LABELS
from sentiq.errors import ConfigurationError
from tests.conftest import REPO_ROOT, TEST_SAMPLE, TRAIN_SAMPLE
from tests.training.test_fit import METRICS_KEYS, MODEL_FILES
from training.cli import main
from training.data import DEFAULT_TRAIN_DATA
from training.distill import (
    DistillationModel,
    DistillOptions,
    StudentShape,
    build_student,
    soft_target_loss,
    spread_layers,
    teacher_data,
    teacher_settings,
)
from worker.model import SentimentModel

#: Appended to each training review: a cue the tiny teacher learns in a few seconds, so that it has
#: an opinion per review a student can copy (on raw reviews it only learns the majority label).
CUES = {"positive": " A wonderful film.", "negative": " A dreadful film."}
#: A TinyBERT-shaped student narrower than the tiny teacher (hidden 32), so it is smaller.
SMALL_TINYBERT = ("--student-hidden", "24", "--student-heads", "2", "--student-intermediate", "48")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("distill")
    frame = pd.read_csv(TRAIN_SAMPLE, keep_default_na=False).head(96)
    frame["review"] = [
        review[:300] + CUES[label] for review, label in zip(frame["review"], frame["sentiment"], strict=True)
    ]
    frame.to_csv(folder / "train.csv", index=False)
    pd.read_csv(TEST_SAMPLE, keep_default_na=False).head(32).to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def teacher(workspace: Path, tiny_base_model_dir: Path) -> Path:
    """The tiny random BERT (2 layers, hidden 32) fine-tuned by ``train`` on the cued reviews."""
    output = workspace / "teacher"
    arguments = [
        "train",
        "--base-model",
        str(tiny_base_model_dir),
        "--data",
        str(workspace / "train.csv"),
        "--output-dir",
        str(output),
        # 6 epochs left the teacher at 0.58 on its own training reviews in a clean-clone CI run
        # (it had not yet found the cue); 12 reach 1.0.
        "--epochs",
        "12",
        "--batch-size",
        "16",
        "--learning-rate",
        "5e-3",
        "--max-length",
        "24",
        "--truncation",
        "head_tail",
        "--validation-fraction",
        "0.25",
        "--precision",
        "fp32",
    ]
    assert main(arguments) == 0
    return output


def distill_args(workspace: Path, teacher: Path, student: str, *extra: str) -> list[str]:
    return [
        "distill",
        "--teacher",
        str(teacher),
        "--student",
        student,
        "--output-dir",
        str(workspace / student),
        "--data",
        str(workspace / "train.csv"),
        "--test-data",
        str(workspace / "test.csv"),
        "--learning-rate",
        "5e-3",
        "--precision",
        "fp32",
        *extra,
    ]


@pytest.fixture(scope="module")
def layers_student(workspace: Path, teacher: Path) -> Path:
    assert main(distill_args(workspace, teacher, "layers", "--student-layers", "1", "--epochs", "2")) == 0
    return workspace / "layers"


@pytest.fixture(scope="module")
def tinybert_student(workspace: Path, teacher: Path) -> Path:
    # alpha 1: the soft targets alone, so agreeing with the teacher is learnt from the teacher.
    arguments = distill_args(
        workspace, teacher, "tinybert", *SMALL_TINYBERT, "--alpha", "1", "--temperature", "1"
    )
    assert main(arguments) == 0
    return workspace / "tinybert"


def read_metrics(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
    return loaded


def training_reviews(workspace: Path) -> tuple[list[str], list[str]]:
    frame = pd.read_csv(workspace / "train.csv", keep_default_na=False)
    return frame["review"].tolist(), frame["sentiment"].tolist()


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
@pytest.mark.parametrize("kind", ["layers", "tinybert"])
def test_students_are_model_folders_a_worker_serves(
    kind: str, layers_student: Path, tinybert_student: Path, teacher: Path
) -> None:
    folder = {"layers": layers_student, "tinybert": tinybert_student}[kind]
    assert {path.name for path in folder.iterdir()} == MODEL_FILES
    assert [path.name for path in folder.parent.iterdir() if path.name.startswith(".")] == []
    served = SentimentModel.load(folder)
    metrics = read_metrics(folder)
    assert served.info.model_id == metrics["model_id"]
    assert metrics["model_id"].startswith(f"distilled-{'tinybert' if kind == 'tinybert' else 'bert'}-l")
    # Served at the teacher's length and truncation, which the student was trained with.
    assert (served.info.max_length, served.info.truncation) == (24, "head_tail")
    results, _ = served.predict(["A wonderful, moving film.", "Dreadful.<br />Avoid it."])
    assert [label in LABELS for label, _ in results] == [True, True]
    teacher_parameters = read_metrics(teacher)["architecture"]["parameters"]
    assert metrics["architecture"]["parameters"] < teacher_parameters
    assert sum(p.numel() for p in served.model.parameters()) == metrics["architecture"]["parameters"]


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
def test_the_students_shapes(layers_student: Path, tinybert_student: Path) -> None:
    layers = read_metrics(layers_student)["architecture"]
    assert (layers["layers"], layers["hidden_size"]) == (1, 32)
    tinybert = read_metrics(tinybert_student)["architecture"]
    assert (tinybert["layers"], tinybert["hidden_size"], tinybert["attention_heads"]) == (4, 24, 2)
    assert tinybert["intermediate_size"] == 48


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
def test_the_student_agrees_with_the_teacher_more_than_a_constant_label_would(
    tinybert_student: Path, teacher: Path, workspace: Path
) -> None:
    texts, labels = training_reviews(workspace)
    taught, _ = SentimentModel.load(teacher).predict(texts)
    learnt, _ = SentimentModel.load(tinybert_student).predict(texts)
    teacher_labels = [label for label, _ in taught]
    # The teacher has learnt the cue: it is right, and so not constant, on these reviews.
    assert sum(a == b for a, b in zip(teacher_labels, labels, strict=True)) / len(labels) > 0.9
    agreement = sum(a == b for a, b in zip(teacher_labels, [label for label, _ in learnt], strict=True))
    majority = max(teacher_labels.count(label) for label in LABELS)
    assert agreement / len(texts) > majority / len(texts) + 0.1
    # The run's own measure, on the held-out reviews it did not learn from.
    assert read_metrics(tinybert_student)["distillation"]["validation_agreement"] > 0.75


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
def test_the_distillation_loss_goes_down(tinybert_student: Path) -> None:
    losses = [entry["loss"] for entry in read_metrics(tinybert_student)["train_loss_log"]]
    assert len(losses) >= 4
    assert min(losses[-2:]) < losses[0]


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
def test_metrics_and_card_say_it_is_a_distilled_student(layers_student: Path, teacher: Path) -> None:
    metrics = read_metrics(layers_student)
    assert set(metrics) == METRICS_KEYS | {"distillation"}
    info = metrics["distillation"]
    teacher_metrics = read_metrics(teacher)
    assert info["student"] == "layers"
    assert info["teacher"]["model_id"] == teacher_metrics["model_id"]
    assert info["teacher"]["folder"] == teacher.name
    assert info["teacher"]["parameters"] == teacher_metrics["architecture"]["parameters"]
    assert (info["teacher"]["layers"], info["teacher"]["hidden_size"]) == (2, 32)
    assert info["layer_map"] == [[0, 1]]  # one layer kept of two: the last
    assert info["teacher_logits"] == "computed once before training"
    assert (info["temperature"], info["alpha"], info["hidden_loss_weight"]) == (2.0, 0.5, 0.0)
    assert info["parameter_ratio"] == pytest.approx(
        metrics["architecture"]["parameters"] / teacher_metrics["architecture"]["parameters"], abs=1e-4
    )
    # Data and split default to the teacher's.
    assert metrics["data"]["train_size"] == teacher_metrics["data"]["train_size"]
    assert metrics["seed"] == teacher_metrics["seed"]
    assert metrics["test"]["support"] == 32
    card = (layers_student / "README.md").read_text()
    assert f"distilled from the teacher `{teacher_metrics['model_id']}`" in card
    assert "fine-tuned by" not in card
    assert (
        "## Distillation" in card and f"{teacher_metrics['architecture']['parameters']:,} parameters" in card
    )
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert "distillation" in front["tags"]
    assert front["model-index"][0]["name"] == metrics["model_id"]


@pytest.mark.slow  # distils both students (20-50 s for the module on 2 shared cores)
@pytest.mark.parametrize("kind", ["layers", "tinybert"])
def test_no_path_of_the_training_machine_in_the_folder(
    kind: str, layers_student: Path, tinybert_student: Path, teacher: Path, workspace: Path
) -> None:
    folder = {"layers": layers_student, "tinybert": tinybert_student}[kind]
    machine_paths = {str(workspace), str(teacher), str(Path(sys.prefix)), str(REPO_ROOT), str(Path.home())}
    texts = {path.name: path.read_text() for path in folder.iterdir() if path.suffix in (".json", ".md")}
    assert len(texts) >= 4  # config, tokenizer, metrics, card
    assert [(name, where) for name, text in texts.items() for where in machine_paths if where in text] == []


def test_the_layers_student_starts_as_the_teachers_spread_layers(teacher: Path) -> None:
    assert spread_layers(6, 4) == [0, 2, 3, 5]
    assert spread_layers(12, 4) == [0, 4, 7, 11]
    assert spread_layers(2, 1) == [1]
    model: Any = SentimentModel.load(teacher).model
    student = build_student(
        model, DistillOptions(teacher=teacher, student="layers", shape=StudentShape(layers=1))
    )
    teacher_state, student_state = model.state_dict(), student.model.state_dict()
    layer = "bert.encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(student_state[layer.format(0)], teacher_state[layer.format(1)])
    assert torch.equal(student_state["classifier.weight"], teacher_state["classifier.weight"])
    assert layer.format(1) not in student_state


def test_the_tinybert_student_starts_from_the_teachers_embeddings_projected(teacher: Path) -> None:
    model: Any = SentimentModel.load(teacher).model
    options = DistillOptions(teacher=teacher, student="tinybert", shape=StudentShape(4, 24, 2, 48))
    student = build_student(model, options)
    assert "projected" in student.initialisation
    words = model.bert.embeddings.word_embeddings.weight
    projected = student.model.bert.embeddings.word_embeddings.weight
    # Top principal directions: the projection keeps most of the table's energy.
    assert projected.shape == (words.shape[0], 24)
    assert projected.pow(2).sum() > 0.75 * words.pow(2).sum()
    wide = build_student(
        model, DistillOptions(teacher=teacher, student="tinybert", shape=StudentShape(4, 48, 2, 96))
    )
    assert "projected" not in wide.initialisation


def test_soft_target_loss() -> None:
    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert soft_target_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    for temperature in (1.0, 3.0):
        target = torch.softmax(teacher / temperature, dim=-1)
        predicted = torch.softmax(student / temperature, dim=-1)
        by_hand = (target * (target.log() - predicted.log())).sum(dim=-1).mean() * temperature**2
        assert soft_target_loss(student, teacher, temperature).item() == pytest.approx(
            by_hand.item(), rel=1e-5
        )


def test_the_loss_mixes_soft_and_hard_targets_in_training_only(teacher: Path) -> None:
    model: Any = SentimentModel.load(teacher).model
    options = DistillOptions(teacher=teacher, student="tinybert", shape=StudentShape(2, 24, 2, 48), alpha=0.3)
    student = build_student(model, options)
    wrapped = DistillationModel(student.model, model, options, student.layer_map)
    batch = {
        "input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]]),
        "attention_mask": torch.tensor([[1] * 4, [1, 1, 1, 0]]),
    }
    labels = torch.tensor([1, 0])
    teacher_logits = torch.tensor([[-1.0, 2.0], [1.5, -0.5]])
    wrapped.train()
    out = wrapped(**batch, labels=labels, teacher_logits=teacher_logits)
    hard = torch.nn.functional.cross_entropy(out.logits, labels)
    soft = soft_target_loss(out.logits, teacher_logits, options.temperature)
    assert out.loss.item() == pytest.approx((0.3 * soft + 0.7 * hard).item(), rel=1e-5)
    wrapped.eval()
    evaluated = wrapped(**batch, labels=labels, teacher_logits=teacher_logits)
    assert evaluated.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(evaluated.logits, labels).item(), rel=1e-5
    )
    # The teacher is neither trained nor saved with the student.
    assert not any(name.startswith("_teacher") for name in wrapped.state_dict())


def test_the_hidden_state_loss_runs_the_teacher_and_learns_a_projection(teacher: Path) -> None:
    model: Any = SentimentModel.load(teacher).model
    options = DistillOptions(
        teacher=teacher,
        student="tinybert",
        shape=StudentShape(2, 24, 2, 48),
        alpha=0.5,
        hidden_loss_weight=1.0,
    )
    student = build_student(model, options)
    wrapped = DistillationModel(student.model, model, options, student.layer_map)
    assert isinstance(wrapped.projection, torch.nn.Linear)
    assert student.layer_map == [(0, 0), (1, 1)]
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.tensor([[1, 1, 1, 1]])}
    wrapped.train()
    with_hidden = wrapped(**batch, labels=torch.tensor([1])).loss
    wrapped.hidden_loss_weight = 0.0
    without = wrapped(**batch, labels=torch.tensor([1])).loss
    assert with_hidden.item() > without.item()
    with_hidden.backward()
    assert wrapped.projection.weight.grad is not None  # type: ignore[union-attr]


def test_settings_default_to_the_teachers(teacher: Path, workspace: Path) -> None:
    settings = teacher_settings(
        teacher, {"data": [str(workspace / "train.csv")], "output_dir": workspace / "x"}
    )
    recorded = read_metrics(teacher)
    assert (settings.max_length, settings.truncation, settings.seed) == (24, "head_tail", recorded["seed"])
    assert settings.validation_fraction == 0.25
    assert settings.epochs == 12 and settings.learning_rate == 5e-3
    given = teacher_settings(teacher, {"data": ["a.csv"], "max_length": 16, "epochs": 1.0})
    assert (given.max_length, given.epochs, given.truncation) == (16, 1.0, "head_tail")
    # A local file is recorded by name only: it cannot be found again.
    with pytest.raises(ConfigurationError, match="recorded by file name only; pass the file"):
        teacher_settings(teacher, {})
    assert teacher_data({"data": {"train_sources": [DEFAULT_TRAIN_DATA.name]}}) == [str(DEFAULT_TRAIN_DATA)]
    assert teacher_data({"data": {"train_sources": ["imdb"]}}) == ["imdb"]
    assert teacher_data({}) == [str(DEFAULT_TRAIN_DATA)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--student-hidden", "100"), "--student-hidden 100 is not a multiple of --student-heads 12"),
        (("--alpha", "1.5"), "--alpha must be between 0 and 1"),
        (("--temperature", "0"), "--temperature must be above 0"),
    ],
)
def test_bad_arguments_give_one_error_line(
    extra: tuple[str, ...],
    message: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arguments = ["distill", "--teacher", str(tiny_model_dir), "--student", "tinybert"]
    assert main([*arguments, "--output-dir", str(tmp_path / "out"), *extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_teacher_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["distill", "--teacher", str(tmp_path / "nope"), "--student", "layers"]
    assert main([*arguments, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a model folder (no config.json)" in err
    assert len(err.strip().splitlines()) == 1


def test_a_layers_student_must_be_shallower_than_its_teacher(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        "distill",
        "--teacher",
        str(tiny_model_dir),
        "--student",
        "layers",
        "--data",
        str(TEST_SAMPLE),
    ]
    assert main([*arguments, "--output-dir", str(tmp_path / "out")]) == 2
    assert (
        "the teacher has 2 layers; a layers student keeps fewer (--student-layers 4)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()
    assert main([*arguments, "--output-dir", str(tmp_path / "out"), "--student-hidden", "24"]) == 2
    assert "apply to --student tinybert" in capsys.readouterr().err
