"""benchmarks.head_padding: heads padded with zero dimensions give the model's own logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from benchmarks.head_padding import padded_heads


def _model(hidden: int, heads: int, attention: str) -> Any:
    torch.manual_seed(0)
    shape: dict[str, Any] = {
        "vocab_size": 50,
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "intermediate_size": 2 * hidden,
        "max_position_embeddings": 16,
        "num_labels": 2,
        "attn_implementation": attention,
        # Large weights, so that attention is far from uniform and a wrong softmax scale shows.
        "initializer_range": 0.5,
    }
    model: Any = BertForSequenceClassification(BertConfig(**shape))
    return model.eval()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padded_heads_compute_the_same_logits(attention: str) -> None:
    model = _model(hidden=12, heads=3, attention=attention)  # heads of 4 dimensions
    wide: Any = padded_heads(model)
    assert wide is not None
    assert wide.bert.encoder.layer[0].attention.self.attention_head_size == 8
    assert model.bert.encoder.layer[0].attention.self.attention_head_size == 4  # the model is untouched
    ids = torch.randint(5, 50, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = wide(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_heads_already_a_multiple_of_eight_are_left_alone() -> None:
    assert padded_heads(_model(hidden=32, heads=2, attention="sdpa")) is None
