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


class UnreadableJobError(MalformedJobError):
    """Raised when a job's record in Redis cannot be read at all (not a hash, no data, too large)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"unreadable job {job_id}: {reason}")


class ForbiddenTaskError(SentiqError):
    """Raised when a job names any callable other than sentiq's own classify task."""


class QueueFullError(SentiqError):
    """Raised when the queue stayed at its maximum depth for the whole wait; nothing was enqueued."""

    def __init__(self, queue: str, depth: int, limit: int, waited_s: float) -> None:
        self.queue = queue
        self.depth = depth
        self.limit = limit
        self.waited_s = waited_s
        super().__init__(
            f"queue {queue!r} is full: {depth} jobs waiting (limit {limit}) after waiting {waited_s:g}s; "
            "nothing was enqueued, try again later or add workers"
        )


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
