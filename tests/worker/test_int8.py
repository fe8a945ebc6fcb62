"""worker.int8: the CPU int8 engine, built once per model folder, checked, and chosen by the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from producer import Client
from sentiq.errors import ModelLoadError
from sentiq.settings import Settings
from tests.support.sentiment_words import synthetic_reviews, train_sentiment_words_model
from tests.support.workers import running_workers
from worker.assembly import choose_engine
from worker.int8 import (
    INT8_DIR,
    INT8_MODEL,
    INT8_REPORT,
    MIN_AGREEMENT,
    build_int8,
    has_usable_int8,
    load_int8,
    read_report,
)
from worker.model import SentimentModel

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reviews() -> tuple[list[str], list[str]]:
    frame = synthetic_reviews(1000, seed=7)
    return frame["review"].tolist(), frame["sentiment"].tolist()


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory: pytest.TempPathFactory, reviews: tuple[list[str], list[str]]) -> Path:
    folder = train_sentiment_words_model(tmp_path_factory.mktemp("int8-model"))
    report = build_int8(folder, *reviews)
    assert report.passed, report.reason
    return folder


def test_the_int8_copy_answers_like_the_fp32_model(
    int8_folder: Path, reviews: tuple[list[str], list[str]]
) -> None:
    report = read_report(int8_folder)
    assert report is not None and report.reviews == 1000 and report.agreement >= MIN_AGREEMENT
    assert report.accuracy_fp32 is not None and report.accuracy_int8 is not None
    assert report.accuracy_fp32 > 0.8  # the model really learnt, so agreement means something
    served = SentimentModel.load(int8_folder)
    reference, _ = served.predict(reviews[0])
    served.int8 = load_int8(int8_folder, served.info.model_id)
    quantized, _ = served.predict(reviews[0])
    agreement = sum(a[0] == b[0] for a, b in zip(reference, quantized, strict=True)) / len(reference)
    assert agreement == pytest.approx(report.agreement)
    assert (int8_folder / INT8_DIR / INT8_MODEL).stat().st_size < sum(
        path.stat().st_size for path in int8_folder.glob("*.safetensors")
    )


def test_a_copy_that_fails_its_check_is_not_kept(tmp_path: Path, int8_folder: Path) -> None:
    # Labels that disagree with everything the model says: the accuracy check cannot pass... but
    # agreement with fp32 still can; so feed reviews whose fp32 labels are flipped as "labels".
    texts = ["great wonderful film", "awful boring plot"] * 20
    served = SentimentModel.load(int8_folder)
    flipped = ["negative" if label == "positive" else "positive" for label, _ in served.predict(texts)[0]]
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in int8_folder.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    report = build_int8(copy, texts, flipped)
    # Both are 0 accurate, so it passes; the check is about the drop, not the level.
    assert report.accuracy_fp32 == 0.0 and report.passed
    report_path = copy / INT8_DIR / INT8_REPORT
    refused = {**json.loads(report_path.read_text()), "agreement": 0.5, "passed": False}
    report_path.write_text(json.dumps(refused))
    with pytest.raises(ModelLoadError, match="failed its check"):
        load_int8(copy, served.info.model_id)
    assert not has_usable_int8(copy, served.info.model_id)


def test_a_copy_of_other_weights_or_none_is_refused(int8_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"built from model .* not other-model"):
        load_int8(int8_folder, "other-model")
    with pytest.raises(ModelLoadError, match=r"python -m worker\.int8 --model"):
        load_int8(tmp_path, "any")
    assert not has_usable_int8(int8_folder, "other-model")


def test_engine_choice(int8_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    served = SentimentModel.load(int8_folder)
    choose_engine(served, "torch", int8_folder)
    assert served.int8 is None
    choose_engine(served, "onnx-int8", int8_folder)
    assert served.int8 is not None
    served.int8 = None
    with caplog.at_level("INFO", logger="worker.assembly"):
        choose_engine(served, "auto", int8_folder)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto")]
    assert ("using onnx-int8" in line) == (served.int8 is not None)
    served.device = "cuda:0"  # only the branch is exercised: nothing runs on it
    with pytest.raises(ModelLoadError, match="CPU only"):
        choose_engine(served, "onnx-int8", int8_folder)
    served.int8 = None
    choose_engine(served, "auto", int8_folder)
    assert served.int8 is None


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.int8", "--model", str(tmp_path / "missing")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing" in errors[0]


@pytest.mark.slow
def test_a_worker_serves_with_the_int8_engine(settings: Settings, int8_folder: Path, tmp_path: Path) -> None:
    served = settings.model_copy(update={"model": settings.model.model_copy(update={"path": int8_folder})})
    texts = ["the movie was great and superb", "so awful and boring", "a dreadful plot"]
    with (
        running_workers(served, tmp_path, 1, SENTIQ_WORKER_ENGINE="onnx-int8") as (worker,),
        Client.from_settings(served) as client,
    ):
        predictions = client.results(client.submit(texts), timeout=60)
    assert [p.label for p in predictions] == ["positive", "negative", "negative"]
    assert "engine onnx-int8 (requested)" in worker.log_path.read_text()
