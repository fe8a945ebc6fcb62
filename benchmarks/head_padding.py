"""Attention heads zero-padded to a multiple of 8 dimensions: the same model, maybe faster kernels.

The TinyBERT shape has 12 heads of 26 dimensions. PyTorch's fused attention kernels on a GPU
(flash, memory-efficient) want head sizes that are multiples of 8, so these heads may run on the
slower math kernel: on one H200 the passes alone ran at 17,078 reviews/s. A copy whose query, key
and value projections give each head 32 dimensions, the extra ones zero, computes the same
logits (the zero dimensions add nothing to the dot products, the softmax scale stays that of 26,
and the output projection ignores them), so the kernels can be compared on the same weights.
:mod:`benchmarks.stages` times the copy next to the model when a head size is not a multiple of 8.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def padded_heads(model: torch.nn.Module, multiple: int = 8) -> torch.nn.Module | None:
    """A copy of a BERT-family ``model`` with every attention head padded to ``multiple`` dims.

    None when no head needs it, or when the attention modules are not laid out as transformers'
    BERT lays them out (``attention.self.{query,key,value}`` with a ``scaling``,
    ``attention.output.dense``): then the padded copy could compute something else.
    """
    import torch

    padded = copy.deepcopy(model)
    changed = False
    for attention in padded.modules():
        inner: Any = getattr(attention, "self", None)
        output: Any = getattr(attention, "output", None)
        if not all(hasattr(inner, name) for name in ("query", "key", "value", "attention_head_size")):
            continue
        if not isinstance(getattr(output, "dense", None), torch.nn.Linear) or not hasattr(inner, "scaling"):
            return None
        heads, size = int(inner.num_attention_heads), int(inner.attention_head_size)
        wide = -(-size // multiple) * multiple
        if wide == size:
            continue
        # Where each head's real dimensions sit in the padded layout.
        real = torch.cat([torch.arange(head * wide, head * wide + size) for head in range(heads)])
        with torch.no_grad():
            for name in ("query", "key", "value"):
                old = getattr(inner, name)
                new = torch.nn.Linear(
                    old.in_features, heads * wide, device=old.weight.device, dtype=old.weight.dtype
                )
                new.weight.zero_()
                new.bias.zero_()
                new.weight[real] = old.weight
                new.bias[real] = old.bias
                setattr(inner, name, new)
            old_dense = output.dense
            dense = torch.nn.Linear(
                heads * wide,
                old_dense.out_features,
                device=old_dense.weight.device,
                dtype=old_dense.weight.dtype,
            )
            dense.weight.zero_()
            dense.weight[:, real] = old_dense.weight
            dense.bias.copy_(old_dense.bias)
            output.dense = dense
        # The softmax scale stays 1/sqrt(size): transformers' BERT reads it from `scaling`.
        inner.attention_head_size = wide
        inner.all_head_size = heads * wide
        changed = True
    return padded if changed else None
