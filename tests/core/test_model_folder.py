"""The model-folder contract: what a worker reads from metrics.json, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiq.contract import CONTRACT_VERSION
from sentiq.errors import ModelLoadError
from sentiq.model_folder import ModelInfo, id2label, label2id, read_model_info, write_model_info


def write_metrics(folder: Path, **metrics: object) -> Path:
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def test_labels_are_the_contracts() -> None:
    assert label2id() == {"negative": 0, "positive": 1}
    assert id2label() == {0: "negative", 1: "positive"}


def test_written_info_reads_back_with_the_contract_version(tmp_path: Path) -> None:
    info = ModelInfo(model_id="minilm-l6-h384-imdb-20261128-0123abcd", max_length=128, truncation="head_tail")
    write_model_info(tmp_path, info)
    assert json.loads((tmp_path / "metrics.json").read_text())["contract_version"] == CONTRACT_VERSION
    assert read_model_info(tmp_path) == info


def test_a_folder_without_a_contract_version_is_version_1(tmp_path: Path) -> None:
    write_metrics(tmp_path, model_id="old", max_length=300, truncation="head")
    assert read_model_info(tmp_path).contract_version == 1


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_a_folder_for_another_contract_is_refused(tmp_path: Path, version: object) -> None:
    write_metrics(tmp_path, model_id="future", max_length=300, truncation="head", contract_version=version)
    with pytest.raises(ModelLoadError, match="wire contract"):
        read_model_info(tmp_path)


def test_max_length_and_truncation_are_checked(tmp_path: Path) -> None:
    write_metrics(tmp_path, model_id="m", max_length=0, truncation="head")
    with pytest.raises(ModelLoadError, match="max_length"):
        read_model_info(tmp_path)
    write_metrics(tmp_path, model_id="m", max_length=128, truncation="middle")
    with pytest.raises(ModelLoadError, match="truncation"):
        read_model_info(tmp_path)
    write_metrics(tmp_path, model_id="m", max_length=128, truncation="head")
    assert read_model_info(tmp_path, max_length_override=64).max_length == 64
