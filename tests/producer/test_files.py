"""producer.files: format and compression from file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.files import format_suffix, is_gzipped


@pytest.mark.parametrize(
    ("name", "suffix", "gzipped"),
    [
        ("reviews.csv", ".csv", False),
        ("dir.v2/Reviews.CSV.GZ", ".csv", True),
        ("reviews.jsonl.gz", ".jsonl", True),
        ("reviews.gz", "", True),
        ("reviews", "", False),
    ],
)
def test_format_suffix_and_gzip(name: str, suffix: str, gzipped: bool) -> None:
    assert format_suffix(name) == suffix
    assert format_suffix(Path(name)) == suffix
    assert is_gzipped(name) is gzipped
