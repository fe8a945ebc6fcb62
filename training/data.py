"""Labelled review data: local CSV / JSONL / Parquet files (gzip allowed), folders of them, or hub datasets.

Every source is loaded through ``datasets`` and normalised to two columns: ``text`` (the review,
verbatim) and ``label`` (a ``ClassLabel`` with names ``negative`` = 0, ``positive`` = 1). Two
layouts are understood:

- IMDB style (the reference notebook's): ``review`` and ``sentiment`` (``positive`` / ``negative``);
- SST-2 style: ``sentence`` and ``label`` (0 = negative, 1 = positive);

and, for hub datasets such as ``imdb``, ``text`` with a ``ClassLabel`` ``label`` whose names are
mapped (``neg`` / ``pos``). Anything else stops with a :class:`~sentiq.errors.DataError` naming the
file and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value, concatenate_datasets, load_dataset

import sentiq
from sentiq.contract import LABELS
from sentiq.errors import DataError
from sentiq.model_folder import label2id

log = logging.getLogger(__name__)

#: The label names, in the order of their ids (the model folder's, :func:`sentiq.model_folder.label2id`).
LABEL_NAMES = list(LABELS)
FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
DEFAULT_TRAIN_DATA = Path(sentiq.__file__).resolve().parent / "data" / "imdb_train_sample.csv.gz"

# File name endings -> the ``datasets`` packaged builder that reads them.
_BUILDERS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "json",
    ".jsonl.gz": "json",
    ".json": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
}
_TEXT_COLUMNS = ("review", "sentence", "text")
_LABEL_COLUMNS = ("sentiment", "label")
_LABEL_ALIASES = {**label2id(), "neg": label2id()["negative"], "pos": label2id()["positive"]}
_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class LoadedData:
    """A normalised dataset and the sources it came from, for logs and ``metrics.json``."""

    dataset: Dataset
    sources: list[str]


def builder_for(path: Path) -> str | None:
    """The ``datasets`` builder for a file name (``csv``, ``json``, ``parquet``), or None."""
    name = path.name.lower()
    for ending, builder in sorted(_BUILDERS.items(), key=lambda item: -len(item[0])):
        if name.endswith(ending):
            return builder
    return None


def supported_endings() -> str:
    """The accepted file name endings, for messages and help."""
    return ", ".join(_BUILDERS)


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Files, folders (their data files, sorted) and hub dataset names, as a flat list of sources."""
    expanded: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(str(child) for child in path.iterdir() if child.is_file() and builder_for(child))
            if not files:
                raise DataError(f"{source}: folder holds no data files (expected {supported_endings()})")
            expanded.extend(files)
        else:
            expanded.append(source)
    return expanded


def looks_like_hub_name(source: str) -> bool:
    """True for ``name``, ``owner/name`` or ``name:split`` that is not a local path or file name."""
    if Path(source).expanduser().exists() or builder_for(Path(source)) is not None:
        return False
    if source.startswith((".", "/", "~")) or "\\" in source:
        return False
    return source.split(":", 1)[0].count("/") <= 1


def load_sources(sources: Sequence[str], split: str = "train") -> LoadedData:
    """Load and concatenate labelled sources; ``split`` is the hub split used for dataset names."""
    expanded = expand_sources(sources)
    if not expanded:
        raise DataError("no data sources given")
    parts = [load_labelled(source, split) for source in expanded]
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return LoadedData(dataset=dataset, sources=expanded)


def load_labelled(source: str, split: str = "train") -> Dataset:
    """One file or hub dataset as a normalised ``text`` / ``label`` dataset.

    A hub dataset may name its split as ``name:split`` (``imdb:test``); otherwise ``split``.
    """
    path = Path(source).expanduser()
    if path.is_file():
        raw = _read_file(path)
    elif looks_like_hub_name(source):
        raw = _read_hub(source, split)
    else:
        raise DataError(f"{source}: no such file")
    return normalise(raw, source)


def _read_file(path: Path) -> Dataset:
    builder = builder_for(path)
    if builder is None:
        raise DataError(f"{path}: unsupported file type (expected {supported_endings()})")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from error
    if size == 0:
        raise DataError(f"{path}: file is empty")
    options: dict[str, Any] = {"keep_default_na": False} if builder == "csv" else {}
    try:
        # Parsed into memory through a throw-away cache: re-reading a file takes about a second,
        # and no arrow copy of every file ever scored piles up under ~/.cache.
        with tempfile.TemporaryDirectory(prefix="sentiq-data-") as cache, _quiet_datasets():
            dataset = load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **options
            )
    except ValueError as error:
        # datasets' way of saying that the file parsed to zero rows (a header and nothing else).
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: file has no rows") from error
        raise DataError(f"{path}: cannot read as {builder.upper()}: {_root_cause(error)}") from error
    except Exception as error:
        raise DataError(f"{path}: cannot read as {builder.upper()}: {_root_cause(error)}") from error
    assert isinstance(dataset, Dataset)
    return dataset


def _read_hub(source: str, split: str) -> Dataset:
    name, _, named_split = source.partition(":")
    wanted = named_split or split
    try:
        with _quiet_datasets():
            dataset = load_dataset(name, split=wanted)
    except Exception as error:
        raise DataError(
            f"{source}: not a local file, and loading it as a Hugging Face hub dataset (split {wanted!r}) "
            f"failed: {_root_cause(error)}. Without the hub, pass a local CSV/JSONL/Parquet file with "
            f"'review' and 'sentiment' columns, e.g. {DEFAULT_TRAIN_DATA}"
        ) from error
    assert isinstance(dataset, Dataset)
    return dataset


def normalise(raw: Dataset, source: str) -> Dataset:
    """Check columns, labels and texts of ``raw`` and return it as ``text`` / ``label`` rows."""
    columns = list(raw.column_names)
    text_column = next((name for name in _TEXT_COLUMNS if name in columns), None)
    label_column = next((name for name in _LABEL_COLUMNS if name in columns), None)
    found = ", ".join(repr(name) for name in columns) or "none"
    if text_column is None:
        raise DataError(
            f"{source}: missing text column: expected 'review' (IMDB style) or 'sentence' (SST-2 style); "
            f"columns found: {found}"
        )
    if label_column is None:
        raise DataError(
            f"{source}: missing label column: expected 'sentiment' (positive/negative) or 'label' (0/1); "
            f"columns found: {found}"
        )
    if len(raw) == 0:
        raise DataError(f"{source}: file has no rows")
    feature = raw.features[label_column]
    names: list[str] | None = list(feature.names) if isinstance(feature, ClassLabel) else None
    labels = [_label_id(value, names) for value in raw[label_column]]
    unknown = [row for row, label in enumerate(labels) if label is None]
    if unknown:
        shown = ", ".join(f"{raw[row][label_column]!r} (row {row + 1})" for row in unknown[:_SHOWN_PROBLEMS])
        more = f" and {len(unknown) - _SHOWN_PROBLEMS} more" if len(unknown) > _SHOWN_PROBLEMS else ""
        raise DataError(
            f"{source}: unknown label(s) in column {label_column!r}: {shown}{more}; "
            "expected positive/negative or 1/0"
        )
    texts = raw[text_column]
    blank = [row for row, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if blank:
        rows = ", ".join(str(row + 1) for row in blank[:_SHOWN_PROBLEMS])
        more = f" and {len(blank) - _SHOWN_PROBLEMS} more" if len(blank) > _SHOWN_PROBLEMS else ""
        raise DataError(f"{source}: empty or missing text in column {text_column!r} at row(s) {rows}{more}")
    return Dataset.from_dict({"text": list(texts), "label": labels}, features=FEATURES)


def _label_id(value: object, class_names: list[str] | None) -> int | None:
    """0 / 1 for one label value (a name, 0/1, or a ClassLabel index), None if unknown."""
    if class_names is not None and isinstance(value, int) and 0 <= value < len(class_names):
        value = class_names[value]
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in ("0", "1"):
            return int(key)
        return _LABEL_ALIASES.get(key)
    return None


def split_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out ``fraction`` of ``dataset`` (seeded, stratified by label where each class has 2+ rows)."""
    if len(dataset) < 2:
        raise DataError(f"need at least 2 labelled rows to hold out a validation split, got {len(dataset)}")
    smallest_class = min(label_counts(dataset).values())
    stratify = "label" if smallest_class >= 2 and round(len(dataset) * fraction) >= 2 else None
    parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    return parts["train"], parts["test"]


def subsample(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` rows, a seeded random choice (the whole dataset when it is small enough)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def label_counts(dataset: Dataset) -> dict[str, int]:
    """Rows per label name."""
    labels = dataset["label"]
    return {name: sum(1 for label in labels if label == index) for index, name in enumerate(LABEL_NAMES)}


def _root_cause(error: BaseException) -> str:
    """The innermost error's message: datasets wraps parser errors in a generic one."""
    inner: BaseException = error
    while inner.__cause__ is not None or (inner.__context__ is not None and not inner.__suppress_context__):
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner).strip() or type(inner).__name__
    return text if inner is error else f"{type(inner).__name__}: {text}"


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' own error logging while loading: its errors become one DataError here."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
