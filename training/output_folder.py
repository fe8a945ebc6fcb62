"""Writing the output model folder: is there a model already, putting a finished one in place, its id.

What a model folder holds is defined in :mod:`sentiq.model_folder`; this module only writes one.

A run writes its model into a staging folder beside the output folder and moves it in only once
everything (weights, tokenizer, metrics, curves, card) is written, so a failed or interrupted run
never leaves a half-written model, and ``--force`` replaces the old model only after the new one
is complete. Trainer checkpoints go to a scratch folder beside it that is always removed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from sentiq.errors import ConfigurationError
from sentiq.model_folder import WEIGHT_FILES, has_model
from training.report import SPLIT_FILE_NAMES

PUBLISHED_FILE_MODE = 0o644
#: Model families recognised in a base model's name, most specific first (``tinybert`` before ``bert``).
FAMILIES = ("tinybert", "minilm", "distilbert", "roberta", "deberta", "electra", "albert", "bert")
_DIGEST_CHARS = 8


class ExistingModel(Enum):
    """What to do when the output folder already holds a model."""

    REFUSE = "refuse"
    FORCE = "force"
    IF_MISSING = "if_missing"


def should_train(folder: Path, existing: ExistingModel) -> bool:
    """Whether to train into ``folder``: False only for ``IF_MISSING`` with a model already there.

    Raises :class:`ConfigurationError` for an existing model without ``--force`` / ``--if-missing``,
    and for a non-empty folder that is not a model folder (never replaced, even with ``--force``).
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--output-dir {folder} is a file, not a folder")
    if has_model(folder):
        if existing is ExistingModel.IF_MISSING:
            return False
        if existing is ExistingModel.REFUSE:
            raise ConfigurationError(
                f"{folder} already holds a model; pass --force to retrain and replace it, "
                "or --if-missing to keep it"
            )
        return True
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigurationError(
            f"{folder} is not empty and holds no model; refusing to write a model into it "
            "(choose another --output-dir or empty it)"
        )
    return True


def scratch_folder(folder: Path, purpose: str) -> Path:
    """A hidden sibling of ``folder`` for ``purpose`` (``staging``, ``checkpoints``)."""
    return folder.parent / f".{folder.name}.{purpose}"


@contextmanager
def scratch(folder: Path, purpose: str) -> Iterator[Path]:
    """A fresh scratch sibling of ``folder``, removed on exit whatever happens."""
    path = scratch_folder(folder, purpose)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(staging: Path, folder: Path) -> None:
    """Move the finished model from ``staging`` into ``folder``, replacing a model there.

    The folder itself is kept when it exists (it may be a mounted volume); only its contents
    are replaced.
    """
    if folder.exists():
        if not folder.is_dir():
            raise ConfigurationError(f"--output-dir {folder} is a file, not a folder")
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    else:
        folder.mkdir(parents=True)
    for child in staging.iterdir():
        if child.is_file():
            # Weights arrive as 0600 temp files; workers may run as another user.
            child.chmod(PUBLISHED_FILE_MODE)
        shutil.move(str(child), str(folder / child.name))


def derive_model_id(
    *,
    base_names: Sequence[str],
    architecture: dict[str, Any],
    data_names: Sequence[str],
    weights_folder: Path,
    when: datetime,
) -> str:
    """A model id that says what the model is: ``minilm-l6-h384-imdb-20260101-1a2b3c4d``.

    Family (from the base model's names, else its ``model_type``), layers, hidden size, the
    training data's short names, the day, and the first hex digits of the weights' SHA-256, so two
    runs never share an id and the id pins the exact weights.
    """
    lowered = " ".join(base_names).lower()
    family = next((name for name in FAMILIES if name in lowered), None)
    family = family or _slug(str(architecture.get("model_type") or "model"))
    shape = "".join(
        f"-{prefix}{architecture[key]}"
        for prefix, key in (("l", "layers"), ("h", "hidden_size"))
        if architecture.get(key)
    )
    data = "-".join(dict.fromkeys(_short_data_name(name) for name in data_names)) or "data"
    return f"{family}{shape}-{data}-{when:%Y%m%d}-{weights_digest(weights_folder)[:_DIGEST_CHARS]}"


def weights_digest(folder: Path) -> str:
    """SHA-256 (hex) of the folder's weights file."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as weights:
                for chunk in iter(lambda: weights.read(1 << 20), b""):
                    digest.update(chunk)
            return digest.hexdigest()
    raise ConfigurationError(f"{folder}: no weights file ({', '.join(WEIGHT_FILES)}) to name the model by")


def _short_data_name(name: str) -> str:
    # "imdb_train_sample.csv.gz" -> "imdb"; "stanfordnlp/sst2:validation" -> "sst2";
    # "imdb/train.csv.gz" (a file named by its split, with its folder) -> "imdb"
    components = name.replace("\\", "/").split(":", 1)[0].lower().split("/")
    for component in reversed(components):
        first = next((part for part in re.split(r"[^a-z0-9]+", component) if part), "")
        if first and first not in SPLIT_FILE_NAMES:
            return first
    return "data"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"
