"""training.base_model: bundled, local folders, hub ids, and a clear message when the hub is out of reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiq.errors import BaseModelUnavailableError
from sentiq.model_folder import id2label, label2id
from sentiq.settings import DEFAULT_BASE_MODEL
from training.base_model import (
    BUNDLED_DESCRIPTION,
    bundled_model_path,
    load_base_model,
    max_positions,
    resolve_base_model,
)


def test_bundled_resolves_to_the_installed_minilm() -> None:
    source = resolve_base_model("bundled")
    assert source.is_local
    assert source.description == BUNDLED_DESCRIPTION
    folder = Path(source.location)
    assert folder == bundled_model_path()
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def test_a_local_folder_loads_as_a_two_label_classifier(tiny_base_model_dir: Path) -> None:
    source = resolve_base_model(str(tiny_base_model_dir))
    assert source.is_local
    assert source.location == str(tiny_base_model_dir.resolve())
    tokenizer, model = load_base_model(source)
    assert model.config.num_labels == 2
    assert model.config.label2id == label2id()
    assert model.config.id2label == id2label()
    assert max_positions(model, tokenizer) == 512


def test_a_path_that_is_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(BaseModelUnavailableError, match="not a model folder"):
        resolve_base_model(str(tmp_path))
    with pytest.raises(BaseModelUnavailableError, match="not a model folder"):
        resolve_base_model("./no/such/folder")


def test_hub_ids_are_not_contacted_until_loading() -> None:
    source = resolve_base_model(DEFAULT_BASE_MODEL)
    assert not source.is_local
    assert source.location == DEFAULT_BASE_MODEL


def test_unreachable_hub_model_names_the_offline_options(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode makes huggingface_hub fail at once instead of retrying for half a minute.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("transformers.utils.hub.constants.HF_HUB_OFFLINE", True, raising=False)
    source = resolve_base_model("sentiq-tests/no-such-model-anywhere")
    with pytest.raises(BaseModelUnavailableError) as caught:
        load_base_model(source)
    message = str(caught.value)
    assert "sentiq-tests/no-such-model-anywhere" in message
    assert "--base-model bundled" in message
    assert "local model folder" in message
