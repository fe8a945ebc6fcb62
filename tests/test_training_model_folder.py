"""training.model_folder: when a run may write, and how a finished model is put in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiq.errors import ConfigurationError
from training.model_folder import ExistingModel, has_model, publish, scratch, scratch_folder, should_train


def make_model(folder: Path, marker: str = "old") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text(marker)
    return folder


def test_missing_or_empty_folders_are_trained_into(tmp_path: Path) -> None:
    for mode in ExistingModel:
        assert should_train(tmp_path / "new", mode)
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert should_train(tmp_path / "empty", mode)


def test_an_existing_model_is_refused_kept_or_replaced(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "model")
    assert has_model(folder)
    with pytest.raises(ConfigurationError, match=r"already holds a model; pass --force .* or --if-missing"):
        should_train(folder, ExistingModel.REFUSE)
    assert not should_train(folder, ExistingModel.IF_MISSING)
    assert should_train(folder, ExistingModel.FORCE)


def test_config_without_weights_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert not has_model(tmp_path)


@pytest.mark.parametrize("mode", list(ExistingModel))
def test_other_content_is_never_replaced(tmp_path: Path, mode: ExistingModel) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigurationError, match="not empty and holds no model"):
        should_train(tmp_path, mode)


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("x")
    with pytest.raises(ConfigurationError, match="is a file"):
        should_train(target, ExistingModel.FORCE)


def test_publish_replaces_the_contents_and_keeps_the_folder(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "model")
    (folder / "stale.txt").write_text("from the old model")
    (folder / "sub").mkdir()
    inode = folder.stat().st_ino
    staging = make_model(tmp_path / "staging", marker="new")
    (staging / "model.safetensors").chmod(0o600)
    publish(staging, folder)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_text() == "new"
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_ino == inode  # a mounted volume stays where it is
    assert not any(staging.iterdir())


def test_publish_creates_missing_parents(tmp_path: Path) -> None:
    staging = make_model(tmp_path / "staging", marker="new")
    publish(staging, tmp_path / "a" / "b" / "model")
    assert has_model(tmp_path / "a" / "b" / "model")


def test_scratch_is_a_hidden_sibling_removed_even_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    assert scratch_folder(folder, "checkpoints") == tmp_path / ".model.checkpoints"
    with pytest.raises(RuntimeError), scratch(folder, "checkpoints") as path:
        (path / "checkpoint-1").mkdir()
        raise RuntimeError("training died")
    assert not (tmp_path / ".model.checkpoints").exists()
