"""Loading a model folder and batched inference, on the tiny random BERT."""

from __future__ import annotations

import json
import logging
import shutil
from array import array
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from sentiq.errors import ModelLoadError
from sentiq.model_folder import read_model_info
from worker.encoding import ID_TYPECODE
from worker.model import SentimentModel

TRAINED_METRICS = {"model_id": "tiny@test", "max_length": 128, "truncation": "head"}


def copy_model(source: Path, target: Path, metrics: object = TRAINED_METRICS) -> Path:
    """A copy of ``source`` with ``metrics`` as its metrics.json (None: without one)."""
    shutil.copytree(source, target)
    (target / "metrics.json").unlink(missing_ok=True)
    if metrics is not None:
        (target / "metrics.json").write_text(json.dumps(metrics))
    return target


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir, device="cpu", precision="fp32", max_batch_size=4)


def test_predicts_a_label_and_its_probability_in_input_order(model: SentimentModel) -> None:
    texts = ["a wonderful film", "dull<br />and long " * 30, "bad", "great acting, great story"]
    results, stats = model.predict(texts)
    assert len(results) == len(texts)
    for label, score in results:
        assert label in {"positive", "negative"}
        assert 0.5 <= score <= 1.0
    # Same text alone or in a batch gives the same answer: padding must not leak into results.
    alone, _ = model.predict([texts[1]])
    assert alone[0][0] == results[1][0]
    assert alone[0][1] == pytest.approx(results[1][1], abs=1e-4)
    assert stats.rows == 4


def test_batches_are_sorted_and_bounded(model: SentimentModel) -> None:
    lengths = [5, 300, 40, 41, 7, 120, 9, 300, 2]
    batches = model.plan_batches(lengths)
    assert sorted(row for batch in batches for row in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= model.max_batch_size
        padded = max(lengths[row] for row in batch)
        assert len(batch) * padded <= max(model.max_batch_tokens, padded)
    # Longest first: each pass only pads up to rows of similar length.
    firsts = [lengths[batch[0]] for batch in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_token_budget_splits_passes(tiny_model_dir: Path) -> None:
    tight = SentimentModel.load(tiny_model_dir, max_batch_size=64, max_batch_tokens=100)
    batches = tight.plan_batches([50, 50, 50, 10, 10])
    # A pass is padded to its longest row: two 50s fill 100 tokens, then a 50 with a 10, then a 10.
    assert [len(batch) for batch in batches] == [2, 2, 1]


def test_encode_applies_training_max_length_and_cleaning(model: SentimentModel) -> None:
    ids = model.encode("great " * 2000)
    assert len(ids) == model.info.max_length
    assert model.encode("good<br /><br />film") == model.encode("good film")


def test_model_info_comes_from_metrics_json(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").write_text(
        json.dumps({"model_id": "m@20260101T000000Z", "max_length": 64, "truncation": "head_tail"})
    )
    info = read_model_info(folder)
    assert (info.model_id, info.max_length, info.truncation) == ("m@20260101T000000Z", 64, "head_tail")
    assert read_model_info(folder, max_length_override=32).max_length == 32
    loaded = SentimentModel.load(folder)
    ids = loaded.encode("first " + "middle " * 200 + "last")
    assert len(ids) == 64
    tokens = loaded.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[1] == "first" and tokens[-2] == "last"


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a model folder"):
        SentimentModel.load(tmp_path / "nowhere")


def test_folder_without_sentiment_labels_is_refused(tmp_path: Path, tiny_base_model_dir: Path) -> None:
    folder = copy_model(tiny_base_model_dir, tmp_path / "model")
    with pytest.raises(ModelLoadError, match="expected \\['negative', 'positive'\\]"):
        SentimentModel.load(folder)


def test_corrupt_metrics_json_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"metrics\.json: not valid JSON: JSONDecodeError"):
        SentimentModel.load(folder)


def load_error(folder: Path, max_length: int = 0) -> str:
    """The message of the ModelLoadError that loading ``folder`` raises: one line, no traceback."""
    with pytest.raises(ModelLoadError) as raised:
        SentimentModel.load(folder, max_length=max_length)
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "config.json: holds a JSON list, expected an object"),
        ('"bert"', "config.json: holds a JSON str, expected an object"),
        ("{not json", "config.json: not valid JSON: JSONDecodeError: Expecting property name"),
        ("", "config.json: not valid JSON: JSONDecodeError: Expecting value"),
    ],
)
def test_config_that_is_not_a_json_object_is_refused(
    tmp_path: Path, tiny_model_dir: Path, content: str, reason: str
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    (folder / "config.json").write_text(content)
    assert reason in load_error(folder)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_truncated_weights_are_refused(tmp_path: Path, tiny_model_dir: Path, keep: float) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    message = load_error(folder)
    assert message.startswith(f"{weights}: unreadable weights, truncated or damaged (SafetensorError: ")
    assert message.endswith("copy the model folder again")


def test_folder_without_weights_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    (folder / "model.safetensors").unlink()
    assert load_error(folder).startswith(f"{folder}: OSError: Error no file named model.safetensors")


def test_folder_without_tokenizer_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    # transformers would build an empty-vocabulary tokenizer here and every word would be [UNK].
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    assert "no tokenizer (tokenizer.json or tokenizer_config.json)" in load_error(folder)


def test_tokenizer_larger_than_the_embeddings_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    size = len(tokenizer)
    tokenizer.add_tokens(["zzyzx"])
    tokenizer.save_pretrained(folder)
    message = load_error(folder)
    assert f"the tokenizer has {size + 1} tokens but the model only {size} (vocab_size)" in message


def test_folder_without_metrics_json_needs_an_explicit_max_length(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model", metrics=None)
    message = load_error(folder)
    assert (
        "no metrics.json, so the max length and truncation this model was trained with are unknown" in message
    )
    assert "--max-length N (SENTIQ_WORKER_MAX_LENGTH)" in message
    with caplog.at_level(logging.WARNING, logger="worker.model"):
        loaded = SentimentModel.load(folder, max_length=64)
    assert (loaded.info.max_length, loaded.info.truncation, loaded.info.model_id) == (64, "head", "model")
    assert len(loaded.encode("word " * 500)) == 64
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no metrics.json" in w and "head truncation assumed" in w for w in warnings)


def test_max_length_beyond_the_model_positions_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    message = load_error(tiny_model_dir, max_length=1024)
    assert (
        "max length 1024 is more than the 512 positions this model has (max_position_embeddings)" in message
    )
    folder = copy_model(tiny_model_dir, tmp_path / "model", metrics={**TRAINED_METRICS, "max_length": 600})
    assert "max length 600 is more than the 512 positions" in load_error(folder)
    assert SentimentModel.load(tiny_model_dir, max_length=512).info.max_length == 512


def test_max_length_without_room_for_text_is_refused(tiny_model_dir: Path) -> None:
    assert "max length 2 leaves no room for text between the 2 special tokens" in load_error(
        tiny_model_dir, max_length=2
    )


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ([1, 2], "metrics.json: holds a JSON list, expected an object"),
        ({"model_id": "m"}, "no max_length recorded"),
        ({**TRAINED_METRICS, "max_length": "128"}, "max_length must be a positive integer, got '128'"),
        ({**TRAINED_METRICS, "max_length": 0}, "max_length must be a positive integer, got 0"),
        ({**TRAINED_METRICS, "truncation": "tail"}, "unknown truncation 'tail', expected one of"),
        ({**TRAINED_METRICS, "model_id": 7}, "model_id must be a string, got 7"),
    ],
)
def test_implausible_metrics_json_is_refused(
    tmp_path: Path, tiny_model_dir: Path, metrics: object, reason: str
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model", metrics=metrics)
    assert reason in load_error(folder)


def test_tokenizing_ahead_on_a_thread_gives_the_same_results(tiny_model_dir: Path) -> None:
    # The GPU path (tokenize chunks on a thread while passes run), exercised on the CPU.
    model = SentimentModel.load(tiny_model_dir, max_batch_size=4, max_batch_tokens=4 * 16)
    texts = [f"review {i}: " + "a wonderful film " * (i % 7) + "but dull" * (i % 3) for i in range(40)]
    plain, plain_stats = model.predict(texts)
    model.overlap_tokenization = True
    chunk = 2 * model.max_batch_tokens // model.info.max_length
    assert len(texts) > 2 * chunk
    ahead, ahead_stats = model.predict(texts)
    assert [label for label, _ in ahead] == [label for label, _ in plain]
    assert [score for _, score in ahead] == pytest.approx([score for _, score in plain], abs=1e-5)
    assert ahead_stats.rows == plain_stats.rows == len(texts)


def test_a_tokenizer_failure_in_a_later_chunk_reaches_the_caller(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = SentimentModel.load(tiny_model_dir, max_batch_size=4, max_batch_tokens=4 * 16)
    model.overlap_tokenization = True
    real = model.encoder.encode_arrays

    def failing(texts: list[str]) -> list[array[int]]:
        if any("poison" in text for text in texts):
            raise ValueError("cannot tokenize poison")
        return real(texts)

    monkeypatch.setattr(model.encoder, "encode_arrays", failing)
    texts = ["fine review"] * 30 + ["poison"]
    with pytest.raises(ValueError, match="cannot tokenize poison"):
        model.predict(texts)


def assert_pads_like_the_tokenizer(model: SentimentModel, rows: list[list[int]], side: str) -> None:
    """``model.pad(rows)`` equals ``tokenizer.pad`` padding on ``side``: same keys, dtypes and values."""
    model.tokenizer.padding_side = side
    try:
        ours = model.pad(rows)
        theirs = model.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    finally:
        model.tokenizer.padding_side = "right"
    assert set(ours) == {"input_ids", "attention_mask"}
    for name in ("input_ids", "attention_mask"):
        assert ours[name].dtype == theirs[name].dtype
        assert ours[name].tolist() == theirs[name].tolist()
    if all(0 <= token < 2**31 for row in rows for token in row):
        # The encoder's C int rows (what predict pads) are read as one block: the same tensors.
        model.tokenizer.padding_side = side
        try:
            from_arrays = model.pad([array(ID_TYPECODE, row) for row in rows])
        finally:
            model.tokenizer.padding_side = "right"
        for name in ("input_ids", "attention_mask"):
            assert from_arrays[name].dtype == theirs[name].dtype
            assert from_arrays[name].tolist() == theirs[name].tolist()


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_matches_the_tokenizers_own(model: SentimentModel, side: str) -> None:
    rows = [model.encode(text) for text in ["a wonderful film", "bad", "great acting, great story and more"]]
    assert_pads_like_the_tokenizer(model, rows, side)


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Ids that fit a C int (the encoder's rows are also padded as C int arrays) or go past 32 bits.
    rows=st.sampled_from([2**31 - 1, 2**40]).flatmap(
        lambda top: st.lists(
            st.lists(st.integers(min_value=0, max_value=top), min_size=1, max_size=40),
            min_size=1,
            max_size=12,
        )
    ),
    side=st.sampled_from(["right", "left"]),
)
def test_padding_any_rows_matches_the_tokenizers_own(
    model: SentimentModel, rows: list[list[int]], side: str
) -> None:
    # Rows of equal and unequal lengths, single rows and ids beyond 32 bits: each id lands in its
    # own row, in order, on the side the tokenizer pads.
    assert_pads_like_the_tokenizer(model, rows, side)


multi_threaded = pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two or more torch threads")


@multi_threaded
def test_passes_up_to_the_single_thread_budget_run_on_one_thread(tiny_model_dir: Path) -> None:
    model = SentimentModel.load(tiny_model_dir)
    threads_seen: list[int] = []
    model.model.register_forward_pre_hook(lambda _module, _args: threads_seen.append(torch.get_num_threads()))
    model.max_batch_size = 1
    short, long = "Good.", " ".join(["A long and rather good review."] * 50)
    tokens = [len(ids) for ids in model.encode_all([short, long])]
    model.single_thread_tokens = tokens[0]
    model.predict([short, long])
    # One pass each, longest first: the long review on every thread, the short one on one.
    assert threads_seen == [model.threads, 1]
    model.use_all_threads()
    assert torch.get_num_threads() == model.threads
    model.single_thread_tokens = 0
    threads_seen.clear()
    model.predict([short])
    assert threads_seen == [torch.get_num_threads()] == [model.threads]
