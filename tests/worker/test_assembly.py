"""worker.assembly: forward-pass limits from the settings, 0 meaning the device's default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sentiq.settings import Settings
from worker.assembly import (
    CPU_PASS_TOKENS,
    SHORT_REVIEW_ROWS_FACTOR,
    calibrate_single_thread,
    load_model,
    size_passes,
)
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


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two or more torch threads")
def test_single_thread_budget_is_timed_in_tokens_and_leaves_the_threads_as_they_were(
    model: SentimentModel,
) -> None:
    calibrate_single_thread(model, 2.0)
    small = model.single_thread_tokens
    assert small > 0 and torch.get_num_threads() == model.threads
    # Calibrating again times one thread again, not the threads the first budget left behind.
    torch.set_num_threads(1)
    calibrate_single_thread(model, 200.0)
    # A hundred times the time buys about a hundred times the tokens (timing noise aside).
    assert model.single_thread_tokens > 10 * small
    assert torch.get_num_threads() == model.threads
    calibrate_single_thread(model, 0)
    assert model.single_thread_tokens == 0


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two or more torch threads")
@pytest.mark.parametrize("budget_ms", [2.0, 0.0])
def test_a_loaded_worker_model_gets_its_single_thread_budget_from_the_settings(
    settings: Settings, budget_ms: float
) -> None:
    configured = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"single_thread_pass_ms": budget_ms})}
    )
    model, _ = load_model(configured, "cpu", "fp32")
    assert (model.single_thread_tokens > 0) == (budget_ms > 0)
