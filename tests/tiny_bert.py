"""A tiny random BERT classifier with a locally built WordPiece tokenizer: no hub, no download.

It goes through the same loading code as a real model folder (config with label maps,
safetensors weights, tokenizer files), just with a few thousand parameters.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pandas as pd
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABEL2ID = {"negative": 0, "positive": 1}


def build_vocab(texts: list[str], size: int = 1500) -> list[str]:
    """Special tokens, single characters and the most frequent lower-cased words of ``texts``."""
    words = collections.Counter(w for text in texts for w in re.findall(r"[a-z]+|[^\sa-z]", text.lower()))
    chars = sorted({c for word in words for c in word})
    common = [w for w, _ in words.most_common(size) if w not in chars]
    return SPECIAL_TOKENS + chars + ["##" + c for c in chars] + common


def build_tokenizer(folder: Path, texts: list[str]) -> BertTokenizerFast:
    """A WordPiece tokenizer whose vocabulary comes from ``texts``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = list(dict.fromkeys(build_vocab(texts)))
    return BertTokenizerFast(
        vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True, model_max_length=512
    )


def build_tiny_base_model(folder: Path, texts: list[str], *, with_labels: bool = True) -> Path:
    """Write a random 2-layer BERT (hidden size 32) and its tokenizer into ``folder``."""
    tokenizer = build_tokenizer(folder, texts)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
    )
    if with_labels:
        config.label2id = dict(LABEL2ID)
        config.id2label = {v: k for k, v in LABEL2ID.items()}
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if with_labels:
        # What training records and a worker reads: a classifier folder is served at its trained length.
        metrics = {"model_id": "tiny-bert-test", "max_length": 128, "truncation": "head"}
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def sample_texts(path: Path, limit: int = 500) -> list[str]:
    """Review texts from a shipped sample file."""
    return pd.read_csv(path, keep_default_na=False)["review"].head(limit).tolist()
