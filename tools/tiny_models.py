"""Tiny random BERT model folders with a locally built WordPiece tokenizer: no hub, no download.

One builder for the tests, the benchmarks and the chaos run. A folder written here is a real
sentiq model folder (:mod:`sentiq.model_folder`): ``config.json`` with the sentiq labels,
safetensors weights, tokenizer files and the ``metrics.json`` keys a worker reads. It goes through
the same loading code as a trained model, just with random weights of the chosen shape.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiq.model_folder import ModelInfo, id2label, label2id, write_model_info

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: The model id and max length of :func:`build_tiny_model`'s folders.
TINY_MODEL_ID = "tiny-bert-test"
TINY_MAX_LENGTH = 128


@dataclass(frozen=True)
class BertShape:
    """The size of a BERT encoder."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    max_positions: int = 512


#: The tests' model: 2 layers, hidden size 32, a few thousand parameters.
TINY = BertShape(layers=2, hidden=32, heads=2, intermediate=64)


def build_vocab(texts: list[str], size: int = 1500) -> list[str]:
    """Special tokens, single characters and the most frequent lower-cased words of ``texts``."""
    words = collections.Counter(w for text in texts for w in re.findall(r"[a-z]+|[^\sa-z]", text.lower()))
    chars = sorted({c for word in words for c in word})
    common = [w for w, _ in words.most_common(size) if w not in chars]
    return SPECIAL_TOKENS + chars + ["##" + c for c in chars] + common


def build_tokenizer(texts: list[str]) -> Any:
    """A WordPiece ``BertTokenizerFast`` whose small vocabulary comes from ``texts``."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokens = list(dict.fromkeys(build_vocab(texts)))
    return BertTokenizerFast(
        vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True, model_max_length=512
    )


def write_random_bert(
    folder: Path, shape: BertShape, tokenizer: Any, info: ModelInfo | None, *, with_labels: bool = True
) -> Path:
    """Save a randomly initialised classifier of ``shape`` with ``tokenizer`` as a model folder.

    ``info`` becomes its ``metrics.json`` (None: none, as a hub base model has none);
    ``with_labels=False`` leaves the config's label names at transformers' defaults (``LABEL_0``...),
    standing in for a base model that training still has to give labels.
    """
    from transformers import BertConfig, BertForSequenceClassification

    labels: dict[str, Any] = {"label2id": label2id(), "id2label": id2label()} if with_labels else {}
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
        num_labels=2,
        **labels,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if info is not None:
        write_model_info(folder, info)
    return folder


def build_tiny_model(
    folder: Path,
    texts: list[str],
    *,
    with_labels: bool = True,
    model_id: str = TINY_MODEL_ID,
    max_length: int = TINY_MAX_LENGTH,
) -> Path:
    """A random 2-layer BERT classifier (hidden size 32) with a vocabulary from ``texts``.

    With labels it is a servable model folder (``metrics.json`` included: a classifier folder is
    served at its trained length); without, a base model for training.
    """
    info = ModelInfo(model_id=model_id, max_length=max_length, truncation="head") if with_labels else None
    return write_random_bert(folder, TINY, build_tokenizer(texts), info, with_labels=with_labels)


def sample_texts(path: Path, limit: int = 500) -> list[str]:
    """Review texts from a shipped sample file (a CSV with a ``review`` column, gzip allowed)."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False)["review"].head(limit).tolist()
