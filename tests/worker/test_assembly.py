"""worker.assembly: pass sizes from the settings, or measured at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.assembly import CPU_BATCH_SIZES, SHORT_REVIEW_ROWS_FACTOR, size_passes
from worker.model import SentimentModel


@pytest.fixture
def model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir)


def test_pass_rates_are_measured_for_increasing_row_counts(model: SentimentModel) -> None:
    rates = model.measure_pass_rates([16, 8, 32], tolerance=0.0)
    assert list(rates) == [8, 16, 32]
    assert all(rate > 0 for rate in rates.values())


def test_measuring_stops_at_the_first_row_count_well_below_the_best(
    model: SentimentModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Passes take 1 s, whatever their rows, after the first three: 8 rows/s then is far below the best.
    clock = iter([0.0, 0.01, 1.0, 1.01, 2.0, 3.0, 4.0, 5.0])
    monkeypatch.setattr("worker.model.time.perf_counter", lambda: next(clock))
    rates = model.measure_pass_rates([1, 2, 8, 16, 32])
    assert list(rates) == [1, 2, 8]


def test_a_measured_pass_size_sets_rows_and_tokens(
    model: SentimentModel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="worker.assembly"):
        size_passes(model, 0, 0)
    rows = model.max_batch_size // SHORT_REVIEW_ROWS_FACTOR
    assert rows in CPU_BATCH_SIZES
    assert model.max_batch_tokens == rows * model.info.max_length
    assert any(f"{rows} rows of {model.info.max_length} tokens" in r.getMessage() for r in caplog.records)


def test_given_pass_limits_are_kept(model: SentimentModel) -> None:
    size_passes(model, 12, 0)
    assert (model.max_batch_size, model.max_batch_tokens) == (12, 12 * model.info.max_length)
    size_passes(model, 12, 500)
    assert (model.max_batch_size, model.max_batch_tokens) == (12, 500)
