"""sentiq's producer: submit reviews to the workers over Redis/RQ and read their predictions.

>>> from producer import Client
>>> with Client("redis://localhost:6379/0") as client:  # doctest: +SKIP
...     for prediction in client.classify(["A wonderful film.", "Dull and far too long."]):
...         print(prediction.label, prediction.score)

The producer needs only redis, rq and pydantic: it never imports torch, transformers or the worker.
"""

from producer.client import Client
from sentiq.contract import Prediction
from sentiq.errors import (
    ConfigurationError,
    InvalidRedisUrlError,
    InvalidReviewError,
    QueueFullError,
    RedisAuthenticationError,
    RedisFullError,
    RedisUnavailableError,
    ResultsTimeoutError,
)

__all__ = [
    "Client",
    "ConfigurationError",
    "InvalidRedisUrlError",
    "InvalidReviewError",
    "Prediction",
    "QueueFullError",
    "RedisAuthenticationError",
    "RedisFullError",
    "RedisUnavailableError",
    "ResultsTimeoutError",
]
