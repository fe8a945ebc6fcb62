"""sentiq's RQ worker: loads a fine-tuned model once and classifies review jobs in batches.

Run it with ``python -m worker --model DIR``; see :mod:`worker.cli`. The names below load
lazily, so light entry points such as ``python -m worker.healthcheck`` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.model import SentimentModel
    from worker.processing import Classifier
    from worker.worker import SentiqWorker

__all__ = ["Classifier", "SentimentModel", "SentiqWorker"]

_HOMES = {
    "Classifier": "worker.processing",
    "SentimentModel": "worker.model",
    "SentiqWorker": "worker.worker",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
