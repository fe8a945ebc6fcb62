"""``python -m training search`` on the tiny random BERT: a grid of real ``train`` runs in seconds, its
ranked report, a failing trial among working ones, no test set read, no int8 copy, reruns and errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import training.data
from sentiq.settings import TrainSettings
from tests.conftest import TEST_SAMPLE, TRAIN_SAMPLE
from tests.training.test_fit import MODEL_FILES, sample_file
from training import fit
from training.cli import build_parser, main
from training.search import (
    SearchPlan,
    Trial,
    TrialResult,
    format_rate,
    markdown_table,
    plan_search,
    ranked,
    trial_name,
)

#: The grid of the module's search: max length 1000 is past the tiny BERT's 512 positions, so
#: every trial with it fails inside ``train`` (after loading data and model), between working ones.
GRID = (
    "--learning-rate",
    "1e-3",
    "5e-3",
    "--epochs",
    "1",
    "--truncation",
    "head_tail",
    "--max-length",
    "32",
    "1000",
)
TRIAL_NAMES = [
    "lr1e-3-e1-head_tail-len32",
    "lr1e-3-e1-head_tail-len1000",
    "lr5e-3-e1-head_tail-len32",
    "lr5e-3-e1-head_tail-len1000",
]
TOO_LONG = "--max-length 1000 exceeds the base model's limit of 512 tokens"


@dataclass(frozen=True)
class SearchRun:
    """A finished search: exit status, stdout, its folder and report, and what it read and built."""

    status: int
    stdout: str
    output: Path
    report: dict[str, Any]
    markdown: str
    loads: list[tuple[list[str], str]]
    int8_copies: list[Path]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("search")
    sample_file(folder / "train.csv", TRAIN_SAMPLE, 64)
    return folder


def shared_args(workspace: Path, base: Path, output: Path) -> list[str]:
    return [
        "search",
        "--base-model",
        str(base),
        "--data",
        str(workspace / "train.csv"),
        "--output-dir",
        str(output),
        "--batch-size",
        "16",
        "--validation-fraction",
        "0.25",
        "--precision",
        "fp32",
    ]


def search_with_spies(arguments: Sequence[str]) -> SearchRun:
    """``main(arguments)`` with a test set in the environment (``train`` would score it), recording
    every data load and int8 copy."""
    loads: list[tuple[list[str], str]] = []
    int8_copies: list[Path] = []
    real_int8 = fit.build_int8_copy

    def load_sources(sources: Sequence[str], split: str = "train") -> Any:
        loads.append((list(sources), split))
        return training.data.load_sources(sources, split)

    def build_int8_copy(folder: Path, validation: Any) -> None:
        int8_copies.append(folder)
        real_int8(folder, validation)

    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        # A test set train would read (SENTIQ_TRAIN_TEST_DATA); a search must not.
        patch.setenv("SENTIQ_TRAIN_TEST_DATA", str(TEST_SAMPLE))
        patch.setattr("training.fit.load_sources", load_sources)  # the name fit calls
        patch.setattr(fit, "build_int8_copy", build_int8_copy)
        status = main(list(arguments))
    output = Path(arguments[list(arguments).index("--output-dir") + 1])
    report_file = output / "search.json"
    return SearchRun(
        status=status,
        stdout=stdout.getvalue(),
        output=output,
        report=json.loads(report_file.read_text()) if report_file.exists() else {},
        markdown=(output / "search.md").read_text() if (output / "search.md").exists() else "",
        loads=loads,
        int8_copies=int8_copies,
    )


@pytest.fixture(scope="module")
def searched(workspace: Path, tiny_base_model_dir: Path) -> SearchRun:
    """Four trials: two train, two fail (max length 1000), in the order lr x max length."""
    arguments = [*shared_args(workspace, tiny_base_model_dir, workspace / "runs"), *GRID]
    return search_with_spies(arguments)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of each data row of the report's table (rank first)."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_every_combination_trains_into_its_own_folder(searched: SearchRun) -> None:
    assert searched.status == 0
    trials = searched.report["trials"]
    assert [trial["name"] for trial in trials] == TRIAL_NAMES
    assert [trial["status"] for trial in trials] == ["trained", "failed", "trained", "failed"]
    assert searched.report["grid"] == {
        "learning_rate": [1e-3, 5e-3],
        "epochs": [1.0],
        "truncation": ["head_tail"],
        "max_length": [32, 1000],
    }
    for trial in trials[0::2]:
        folder = Path(trial["folder"])
        assert folder == searched.output / trial["name"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert trial["model_id"] == metrics["model_id"]
        assert trial["hyperparameters"]["learning_rate"] == metrics["hyperparameters"]["learning_rate"]
        assert (metrics["max_length"], metrics["truncation"]) == (32, "head_tail")
        assert metrics["hyperparameters"]["batch_size"] == 16  # shared flags reach every trial
        assert trial["validation"] == {key: metrics["validation"][key] for key in ("accuracy", "f1", "loss")}
        assert trial["best_epoch"] == metrics["best_epoch"] == 1.0
        assert trial["wall_s"] > 0 and trial["error"] is None
    trained = [json.loads((searched.output / name / "metrics.json").read_text()) for name in TRIAL_NAMES[::2]]
    assert [metrics["hyperparameters"]["learning_rate"] for metrics in trained] == [1e-3, 5e-3]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(searched: SearchRun) -> None:
    failed = searched.report["trials"][1]
    assert failed["status"] == "failed"
    assert failed["error"] == f"ConfigurationError: {TOO_LONG}"
    assert failed["validation"] is None and failed["model_id"] is None
    assert not (searched.output / failed["name"]).exists()
    assert searched.report["trials"][2]["status"] == "trained"  # the trial after it still ran
    lines = [line for line in searched.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 4
    assert lines[0].startswith(
        "trial 1/4 lr 1e-3, epochs 1, truncation head_tail, max length 32: validation accuracy "
    )
    assert lines[1].startswith(
        "trial 2/4 lr 1e-3, epochs 1, truncation head_tail, max length 1000: FAILED after "
    )
    assert lines[1].endswith(TOO_LONG)
    assert lines[2].endswith(" s")


def test_no_test_set_is_read(searched: SearchRun, workspace: Path) -> None:
    # One load per trial (all four reached the data): the training file only, never a test split.
    assert searched.loads == [([str(workspace / "train.csv")], "train")] * 4
    for name in TRIAL_NAMES[::2]:
        metrics = json.loads((searched.output / name / "metrics.json").read_text())
        assert metrics["test"] is None
        assert metrics["data"]["test_source"] is None and metrics["data"]["test_size"] is None
    assert "test_data" not in searched.report["shared"]
    assert "no test set was read" in searched.markdown


def test_trials_have_no_int8_copy(searched: SearchRun) -> None:
    assert searched.int8_copies == []
    for name in TRIAL_NAMES[::2]:
        assert {path.name for path in (searched.output / name).iterdir()} == MODEL_FILES - {"onnx"}


def test_the_report_ranks_the_trials_best_first(searched: SearchRun, workspace: Path) -> None:
    rows = table_rows(searched.markdown)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    accuracies = [float(row[6]) for row in rows[:2]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert sorted(row[1] for row in rows[:2]) == sorted(TRIAL_NAMES[::2])
    assert [row[6] for row in rows[2:]] == ["failed", "failed"]
    assert TOO_LONG in rows[2][-1]
    best = searched.report["best"]
    assert best == rows[0][1]
    assert f"--output-dir {workspace / 'runs'}" in searched.markdown
    assert (
        "--learning-rate 1e-3 5e-3" in searched.markdown and "python -m training search" in searched.markdown
    )
    assert "- batch size: `16`" in searched.markdown and "- seed: `42`" in searched.markdown
    assert "4 of 4 trials run, 2 failed" in searched.markdown
    # The table is printed too, then the best trial.
    assert rows[0][1] in searched.stdout.split("| rank |")[1]
    assert searched.stdout.splitlines()[-1].startswith(f"best: {best} (validation accuracy ")


def test_a_rerun_keeps_finished_trials_and_force_retrains(
    searched: SearchRun, workspace: Path, tiny_base_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "rerun"
    output.mkdir()
    # The first trial's folder, under the name a one-length grid gives it.
    shutil.copytree(searched.output / TRIAL_NAMES[0], output / "lr1e-3-e1-head_tail")
    before = (output / "lr1e-3-e1-head_tail" / "metrics.json").read_text()
    one_trial = [*shared_args(workspace, tiny_base_model_dir, output), "--learning-rate", "1e-3"]
    one_trial += ["--epochs", "1", "--truncation", "head_tail", "--max-length", "32"]

    kept = search_with_spies(one_trial)
    assert kept.status == 0
    assert [trial["status"] for trial in kept.report["trials"]] == ["kept"]
    assert kept.loads == []  # nothing trained
    assert (output / "lr1e-3-e1-head_tail" / "metrics.json").read_text() == before
    assert "already trained in" in kept.stdout and "(kept)" in kept.markdown

    other = search_with_spies([*one_trial, "--seed", "7"])
    assert other.status == 2
    assert other.loads == []
    assert (output / "lr1e-3-e1-head_tail" / "metrics.json").read_text() == before

    forced = search_with_spies([*one_trial, "--seed", "7", "--force"])
    assert forced.status == 0
    assert [trial["status"] for trial in forced.report["trials"]] == ["trained"]
    assert json.loads((output / "lr1e-3-e1-head_tail" / "metrics.json").read_text())["seed"] == 7
    assert forced.int8_copies == []


def test_other_settings_in_a_trial_folder_stop_the_search(
    searched: SearchRun, workspace: Path, tiny_base_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = searched.output / TRIAL_NAMES[0] / "metrics.json"
    content = before.read_text()
    arguments = [*shared_args(workspace, tiny_base_model_dir, searched.output), *GRID, "--seed", "7"]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert f"error: {searched.output / TRIAL_NAMES[0]} holds a model trained with other settings: " in err
    assert "seed 42 (this search: 7)" in err and "pass --force" in err
    assert before.read_text() == content


def test_all_trials_failing_exits_non_zero(
    workspace: Path, tiny_base_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "failing"
    arguments = [*shared_args(workspace, tiny_base_model_dir, output), "--max-length", "1000"]
    assert main([*arguments, "--learning-rate", "1e-3", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: all 1 trials failed; the first: ConfigurationError: {TOO_LONG}" in err
    report = json.loads((output / "search.json").read_text())
    assert [trial["status"] for trial in report["trials"]] == ["failed"]
    assert report["best"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--test-data", "x.csv"],
            "error: a search tunes on the validation split only and never reads a test set",
        ),
        (["--learning-rate", "1e-4", "2e-4", "1e-4"], "error: --learning-rate lists 1e-4 more than once"),
        (["--truncation", "head", "head"], "error: --truncation lists head more than once"),
        (["--max-length", "128", "4"], "error: invalid setting --max-length (SENTIQ_TRAIN_MAX_LENGTH): "),
        (["--learning-rate", "0"], "error: invalid setting --learning-rate (SENTIQ_TRAIN_LEARNING_RATE): "),
        (["--batch-size", "0"], "error: invalid setting --batch-size (SENTIQ_TRAIN_BATCH_SIZE): "),
        (["--learning-rate", "1e-4", "1.0000000001e-4"], "both name trial lr1e-4-e3-head"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "never"
    assert main(["search", "--output-dir", str(output), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not output.exists()


def test_output_folders_that_cannot_hold_a_search(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["search", "--output-dir", str(a_file)]) == 2
    assert f"error: --output-dir {a_file} is a file, not a folder" in capsys.readouterr().err
    assert main(["search", "--output-dir", str(tiny_model_dir)]) == 2
    assert "holds a model; a search writes a folder per trial into it" in capsys.readouterr().err
    (tmp_path / "search" / "lr2e-5-e3-head").mkdir(parents=True)
    (tmp_path / "search" / "lr2e-5-e3-head" / "notes.txt").write_text("mine")
    assert main(["search", "--output-dir", str(tmp_path / "search")]) == 2
    assert "lr2e-5-e3-head is not empty and holds no model" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--if-missing"], ["--epochs"], ["--truncation", "middle"]])
def test_argparse_refusals(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["search", *extra])
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_says_validation_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--test-data PATH" not in text and "[--test-data" not in text
    assert "never reads a test set" in text
    assert "--learning-rate LR [LR ...]" in text and "--force" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "search" in capsys.readouterr().out


def test_shared_settings_follow_environment_preset_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTIQ_TRAIN_SEED", "11")
    monkeypatch.setenv("SENTIQ_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("SENTIQ_TRAIN_TEST_DATA", "imdb:test")
    monkeypatch.setenv("SENTIQ_TRAIN_OUTPUT_DIR", str(tmp_path / "served"))
    plan = plan_search(
        flags={"max_train_samples": 500, "base_model": "bundled"},
        grid={"learning_rate": [1e-4, 2e-4], "truncation": None},
        preset="quick",
        output_dir=tmp_path / "grid",
    )
    assert [trial.name for trial in plan.trials] == ["lr1e-4-e1-head_tail", "lr2e-4-e1-head_tail"]
    for trial in plan.trials:
        settings = trial.settings
        assert settings.output_dir == tmp_path / "grid" / trial.name
        assert settings.test_data is None  # the environment's test set is dropped
        assert settings.seed == 11  # environment, where neither preset nor flag says
        assert settings.epochs == 1.0  # preset over environment
        assert (settings.max_length, settings.truncation) == (128, "head_tail")  # preset
        assert settings.max_train_samples == 500  # flag over preset
    assert [trial.settings.learning_rate for trial in plan.trials] == [1e-4, 2e-4]  # grid over preset
    assert plan.shared.test_data is None
    assert not (tmp_path / "grid").exists() and not (tmp_path / "served").exists()


def test_trial_names() -> None:
    assert format_rate(1e-4) == "1e-4"
    assert format_rate(5e-05) == "5e-5"
    assert format_rate(2.5e-5) == "2.5e-5"
    assert format_rate(0.001) == "1e-3"
    values = {"learning_rate": 1e-4, "epochs": 1.0, "truncation": "head_tail", "max_length": 128}
    assert trial_name(values) == "lr1e-4-e1-head_tail"
    assert trial_name({**values, "epochs": 0.5}, with_length=True) == "lr1e-4-e0.5-head_tail-len128"


def made_up_result(number: int, status: str, validation: dict[str, float] | None) -> TrialResult:
    settings = TrainSettings(learning_rate=number * 1e-4, output_dir=Path(f"runs/t{number}"))
    trial = Trial(number=number, name=f"t{number}", settings=settings)
    if status == "failed":
        return TrialResult(trial, "failed", wall_s=1.0, error="RuntimeError: boom", exit_status=1)
    metrics = {"validation": validation, "best_epoch": 1.0, "model_id": f"model-{number}"}
    return TrialResult(trial, "trained", wall_s=2.0, metrics=metrics)


def test_ranking_accuracy_then_f1_then_loss_failures_last() -> None:
    results = [
        made_up_result(1, "trained", {"accuracy": 0.70, "f1": 0.60, "loss": 0.5}),
        made_up_result(2, "failed", None),
        made_up_result(3, "trained", {"accuracy": 0.80, "f1": 0.70, "loss": 0.6}),
        made_up_result(4, "trained", {"accuracy": 0.80, "f1": 0.75, "loss": 0.9}),
        made_up_result(5, "trained", {"accuracy": 0.70, "f1": 0.60, "loss": 0.4}),
        made_up_result(6, "trained", {"accuracy": 0.90, "f1": 0.10, "loss": 2.0}),
    ]
    assert [result.trial.name for result in ranked(results)] == ["t6", "t4", "t3", "t5", "t1", "t2"]
    rows = table_rows(markdown_table(results))
    assert [row[1] for row in rows] == ["t6", "t4", "t3", "t5", "t1", "t2"]
    assert rows[0][6:9] == ["0.9000", "0.1000", "2.0000"]
    assert rows[-1][6] == "failed" and rows[-1][-1] == "RuntimeError: boom"


def test_a_plan_is_data_only(tmp_path: Path) -> None:
    plan = plan_search(flags={}, grid={"epochs": [1, 2]}, preset=None, output_dir=tmp_path / "p")
    assert isinstance(plan, SearchPlan)
    assert [trial.values["epochs"] for trial in plan.trials] == [1.0, 2.0]
    assert all(not trial.keep for trial in plan.trials)
