"""sentiq's error hierarchy: every error sentiq raises on purpose is a :class:`SentiqError`."""

from __future__ import annotations

from collections.abc import Sequence


class SentiqError(Exception):
    """Base class for all errors raised by sentiq."""


class ConfigurationError(SentiqError):
    """Raised when a setting or command-line option cannot work as given."""


class RedisUnavailableError(SentiqError):
    """Raised when the configured Redis cannot be reached."""


class InvalidReviewError(SentiqError, ValueError):
    """Raised when a review's id or text breaks the wire contract."""


class MalformedJobError(SentiqError):
    """Raised when a job found in Redis does not decode into the wire contract."""


class ForbiddenTaskError(SentiqError):
    """Raised when a job names any callable other than sentiq's own classify task."""


class ModelLoadError(SentiqError):
    """Raised when a model folder cannot be loaded for inference."""


class DataError(SentiqError):
    """Raised when training or evaluation data cannot be read or has the wrong shape."""


class BaseModelUnavailableError(SentiqError):
    """Raised when the base model to fine-tune can be found neither locally nor on the hub."""


class ResultsTimeoutError(SentiqError, TimeoutError):
    """Raised when some results did not arrive before the timeout; ``missing`` lists their ids."""

    def __init__(self, missing: Sequence[str], timeout_s: float) -> None:
        self.missing = list(missing)
        self.timeout_s = timeout_s
        shown = ", ".join(self.missing[:20]) + (" ..." if len(self.missing) > 20 else "")
        super().__init__(f"{len(self.missing)} result(s) missing after {timeout_s:g}s: {shown}")
