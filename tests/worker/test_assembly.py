"""worker.assembly: forward-pass limits from the settings, 0 meaning the device's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.assembly import CPU_PASS_TOKENS, SHORT_REVIEW_ROWS_FACTOR, size_passes
from worker.model import SentimentModel


@pytest.fixture
def model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir)


def test_default_passes_hold_the_cpu_token_budget(model: SentimentModel) -> None:
    size_passes(model, 0, 0)
    full_length_rows = CPU_PASS_TOKENS // model.info.max_length
    assert model.max_batch_tokens == CPU_PASS_TOKENS
    assert model.max_batch_size == full_length_rows * SHORT_REVIEW_ROWS_FACTOR
    passes = model.plan_batches([model.info.max_length] * 100)
    assert max(len(rows) for rows in passes) == full_length_rows
    short = model.plan_batches([8] * 10_000)
    assert max(len(rows) for rows in short) == model.max_batch_size


def test_a_given_batch_size_sets_the_token_budget_when_that_is_default(model: SentimentModel) -> None:
    size_passes(model, 12, 0)
    assert (model.max_batch_size, model.max_batch_tokens) == (12, 12 * model.info.max_length)


def test_given_limits_are_kept(model: SentimentModel) -> None:
    size_passes(model, 12, 500)
    assert (model.max_batch_size, model.max_batch_tokens) == (12, 500)
    size_passes(model, 0, 10 * model.info.max_length)
    assert model.max_batch_size == 10 * SHORT_REVIEW_ROWS_FACTOR
