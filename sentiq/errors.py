"""sentiq's error hierarchy: every error sentiq raises on purpose is a :class:`SentiqError`."""

from __future__ import annotations

from collections.abc import Sequence

#: Longest message :func:`one_line` keeps.
_MAX_REASON_CHARS = 300


def one_line(error: BaseException) -> str:
    """``ExceptionClass: message`` on one line, at most a few hundred characters."""
    message = " ".join(str(error).split())
    if len(message) > _MAX_REASON_CHARS:
        message = message[: _MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class SentiqError(Exception):
    """Base class for all errors raised by sentiq."""


class ConfigurationError(SentiqError):
    """Raised when a setting or command-line option cannot work as given."""


class InvalidRedisUrlError(ConfigurationError, ValueError):
    """Raised when a Redis URL is not a usable ``redis://``, ``rediss://`` or ``unix://`` URL.

    Its message never contains the URL's password.
    """


class RedisUnavailableError(SentiqError):
    """Raised when the configured Redis cannot be reached.

    Every enqueue is one MULTI/EXEC transaction, so a submit that raised this wrote either all of
    the round trip it was in or none of it: resubmitting the same ids is safe.
    """


class RedisAuthenticationError(RedisUnavailableError, ConfigurationError):
    """Raised when Redis refused the credentials (a wrong or missing password, an unknown ACL user)
    or refused the ACL user a command it needs (``NOPERM``).

    Retrying cannot help, so a starting worker does not wait for this Redis and the CLIs exit with
    :data:`EXIT_USAGE`. Its message never contains the password.
    """


class RedisFullError(SentiqError):
    """Raised when Redis refused an enqueue because it reached ``maxmemory`` (``OOM command not allowed``).

    The refused round trip was one MULTI/EXEC transaction, so none of it was enqueued;
    ``enqueued_ids`` lists the reviews that earlier round trips of the same submit did enqueue
    (empty for most submits, which fit in one round trip).
    """

    def __init__(self, queue: str, detail: str, enqueued_ids: Sequence[str] = ()) -> None:
        self.queue = queue
        self.detail = detail
        self.enqueued_ids = list(enqueued_ids)
        super().__init__(
            f"Redis is out of memory and refused to enqueue on queue {queue!r} ({detail}); "
            f"{_enqueued_note(self.enqueued_ids)}; free memory, raise maxmemory or add workers, "
            "then submit again"
        )


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
    """Raised when the queue stayed at its maximum depth for the whole wait.

    Nothing of the refused round trip was enqueued; ``enqueued_ids`` lists the reviews that
    earlier round trips of the same submit did enqueue (a big submit fills the room left in the
    queue before it waits), so a caller can resubmit exactly the rest.
    """

    def __init__(
        self, queue: str, depth: int, limit: int, waited_s: float, enqueued_ids: Sequence[str] = ()
    ) -> None:
        self.queue = queue
        self.depth = depth
        self.limit = limit
        self.waited_s = waited_s
        self.enqueued_ids = list(enqueued_ids)
        super().__init__(
            f"queue {queue!r} is full: {depth} jobs waiting (limit {limit}) after waiting {waited_s:g}s; "
            f"{_enqueued_note(self.enqueued_ids)}; try again later or add workers"
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


def _enqueued_note(enqueued_ids: Sequence[str]) -> str:
    if not enqueued_ids:
        return "nothing was enqueued"
    return f"the first {len(enqueued_ids)} review(s) of this submit were enqueued, the rest were not"


# The exit statuses of the three command lines (python -m worker, producer, training): one scheme.
EXIT_SUCCESS = 0
#: A run-time failure that may pass on a retry (Redis unreachable, results late, hub unreachable).
EXIT_FAILURE = 1
#: Bad input or configuration (an option, a setting, a file, a model folder): retrying cannot help.
EXIT_USAGE = 2
#: Interrupted (Ctrl-C), as shells report a SIGINT.
EXIT_INTERRUPTED = 130
#: The lines every command line's ``--help`` ends with; each adds its own examples.
EXIT_STATUS_SUMMARY = f"""\
exit status (the same for python -m worker, producer and training):
  {EXIT_SUCCESS}    success
  {EXIT_FAILURE}    run-time failure that may pass on a retry
  {EXIT_USAGE}    bad input or configuration: retrying cannot help
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
Every failure is one 'error: ...' line on stderr; no password is ever printed."""

#: Errors that say the input or configuration must change.
_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    InvalidReviewError,
    ModelLoadError,
    DataError,
    # The cure is another --base-model (`bundled` offline), also when the hub is out of reach.
    BaseModelUnavailableError,
)


def exit_code_for(error: BaseException) -> int:
    """:data:`EXIT_USAGE` for what the caller must change, :data:`EXIT_FAILURE` for what may pass on retry."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if isinstance(error, _USAGE_ERRORS) else EXIT_FAILURE
