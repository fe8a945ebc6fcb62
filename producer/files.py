"""What input and output files share: telling their format and compression from their names."""

from __future__ import annotations

from pathlib import Path

GZIP_SUFFIX = ".gz"


def is_gzipped(path: str | Path) -> bool:
    """Whether ``path`` names a gzip file (``.gz``)."""
    return Path(path).suffix.lower() == GZIP_SUFFIX


def format_suffix(path: str | Path) -> str:
    """The lower-cased extension that names the format, past any ``.gz``: ``a.CSV.gz`` -> ``.csv``."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes]
    if suffixes and suffixes[-1] == GZIP_SUFFIX:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""
