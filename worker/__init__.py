"""sentiq's RQ worker: loads a fine-tuned model once and classifies review jobs in batches.

Run it with ``python -m worker --model DIR``; see :mod:`worker.cli`.
"""

from worker.model import SentimentModel
from worker.processing import Classifier
from worker.worker import SentiqWorker

__all__ = ["Classifier", "SentimentModel", "SentiqWorker"]
