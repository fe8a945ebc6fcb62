"""The producer client: validates reviews, enqueues them as RQ jobs and waits for their results.

Jobs cross Redis as JSON only (RQ's :class:`~rq.serializers.JSONSerializer`); each job names the
worker's task by the string :data:`~sentiq.contract.CLASSIFY_TASK` so that the producer never
imports the worker, and carries up to ``reviews_per_job`` reviews in one
:class:`~sentiq.contract.JobPayload`.

Enqueueing is pipelined: :meth:`Client.submit` writes all its jobs in one MULTI/EXEC round trip,
except for bulk inputs, which go in round trips of at most :data:`JOBS_PER_ROUND_TRIP` jobs or
:data:`TEXT_CHARS_PER_ROUND_TRIP` characters of review text, so that no single transaction holds
Redis (or the client's memory) for long.

Waiting never polls: the client blocks on the result store's stream (``XREAD BLOCK``) and re-reads
the stored values only every :data:`REFETCH_INTERVAL_S` seconds, as a safety net for stream
entries trimmed away before it read them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from producer.closing import Closing
from sentiq.contract import CLASSIFY_TASK, JobPayload, Prediction, Review, validate_reviews
from sentiq.errors import InvalidReviewError, RedisUnavailableError, ResultsTimeoutError
from sentiq.redis_connection import connect, redact_url
from sentiq.result_store import ResultStore
from sentiq.settings import Settings, load_settings

#: Most jobs written in one pipelined round trip by :meth:`Client.submit`.
JOBS_PER_ROUND_TRIP = 500
#: Most review characters written in one round trip (a second bound, for inputs of long reviews).
TEXT_CHARS_PER_ROUND_TRIP = 16 * 1024 * 1024
#: How long RQ keeps a finished job (its return value is a small summary; the reviews' results
#: live in the result store).
JOB_RESULT_TTL_S = 3_600
#: How often a waiting client re-reads the stored results, in case the capped stream was trimmed
#: past its cursor before it read the entries it waits for.
REFETCH_INTERVAL_S = 5.0
#: Most ids in one MGET, so that re-reading tens of thousands of results never blocks Redis long.
FETCH_BATCH = 5_000

#: Called after each enqueue round trip with the number of reviews enqueued so far.
EnqueuedCallback = Callable[[int], None]


class Client(Closing):
    """Submits reviews to the sentiq queue and reads their predictions.

    Defaults come from the settings (:func:`~sentiq.settings.load_settings` when none are given):
    ``SENTIQ_REDIS_URL``, ``SENTIQ_QUEUE_NAME``, ``SENTIQ_QUEUE_KEY_PREFIX`` and the
    ``SENTIQ_PRODUCER_*`` variables. ``redis_url`` and ``queue`` override the settings' values.

    Any Redis URL works: ``redis://``, ``rediss://`` (TLS) and ``unix://``, with a password or an
    ACL user. The server is pinged on construction, so a wrong URL or password raises
    :class:`~sentiq.errors.RedisUnavailableError` here. ``connection`` uses an existing client
    instead (it is then left open by :meth:`close`).

    Use as a context manager, or call :meth:`close`, to release the connection.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        queue: str | None = None,
        connection: Redis | None = None,
        jobs_per_round_trip: int = JOBS_PER_ROUND_TRIP,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
    ) -> None:
        if jobs_per_round_trip < 1:
            raise ValueError("jobs_per_round_trip must be at least 1")
        if refetch_interval_s <= 0:
            raise ValueError("refetch_interval_s must be positive")
        self.settings = _with_overrides(settings, redis_url, queue)
        self.jobs_per_round_trip = jobs_per_round_trip
        self.refetch_interval_s = refetch_interval_s
        self._owns_connection = connection is None
        self.redis: Redis = connection if connection is not None else connect(self.settings.redis)
        self.queue = Queue(self.settings.queue.name, connection=self.redis, serializer=JSONSerializer)
        self.store = ResultStore(
            self.redis,
            self.settings.queue.key_prefix,
            self.settings.queue.result_ttl_s,
            self.settings.queue.stream_maxlen,
        )
        # XREAD BLOCK must return before the socket timeout fires, or redis-py reports a timeout.
        self._max_block_s = min(refetch_interval_s, self.settings.redis.socket_timeout_s / 2)
        with self._redis_errors():
            # RQ asks the server's version (INFO) on the first enqueue and caches it on the
            # connection; asking now keeps every submit to its pipelined round trips.
            self.queue.get_redis_server_version()

    @classmethod
    def from_settings(cls, settings: Settings, *, connection: Redis | None = None) -> Client:
        """A client configured entirely by ``settings`` (optionally on an existing connection)."""
        return cls(settings=settings, connection=connection)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the Redis connection (unless it was passed in)."""
        if self._owns_connection:
            self.redis.close()

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        texts: Iterable[str],
        ids: Sequence[str | None] | None = None,
        *,
        on_enqueued: EnqueuedCallback | None = None,
    ) -> list[str]:
        """Enqueue reviews for classification and return their ids, in input order.

        ``ids`` are the caller's keys for the reviews (a result is stored under its review's id,
        so resubmitting an id overwrites its result); ``None`` entries, or no ``ids`` at all, get
        fresh UUIDs. Texts and ids are checked against the wire contract first, and
        :class:`~sentiq.errors.InvalidReviewError` names the first bad review's index; nothing
        is enqueued then. ``on_enqueued`` is called after each round trip with the number of
        reviews enqueued so far.
        """
        if isinstance(texts, str):
            raise InvalidReviewError("texts must be a sequence of review strings, not a single string")
        text_list = texts if isinstance(texts, Sequence) else list(texts)
        reviews = validate_reviews(text_list, ids, self.settings.producer.max_review_chars)
        self._enqueue(reviews, on_enqueued)
        return [review.id for review in reviews]

    def _enqueue(self, reviews: Sequence[Review], on_enqueued: EnqueuedCallback | None) -> None:
        per_job = self.settings.producer.reviews_per_job
        jobs = [reviews[start : start + per_job] for start in range(0, len(reviews), per_job)]
        pending: list[Sequence[Review]] = []
        pending_chars = 0
        enqueued = 0
        for index, job in enumerate(jobs):
            pending.append(job)
            pending_chars += sum(len(review.text) for review in job)
            is_last = index == len(jobs) - 1
            if (
                is_last
                or len(pending) >= self.jobs_per_round_trip
                or pending_chars >= TEXT_CHARS_PER_ROUND_TRIP
            ):
                self._write_jobs(pending)
                enqueued += sum(len(job) for job in pending)
                pending, pending_chars = [], 0
                if on_enqueued is not None:
                    on_enqueued(enqueued)

    def _write_jobs(self, jobs: Sequence[Sequence[Review]]) -> None:
        """Write ``jobs`` in one MULTI/EXEC round trip: all of them are queued, or none."""
        queue_settings = self.settings.queue
        retry = Retry(max=queue_settings.job_retries) if queue_settings.job_retries > 0 else None
        job_datas = [
            Queue.prepare_data(
                CLASSIFY_TASK,
                args=(JobPayload.from_reviews(job).model_dump(),),
                result_ttl=JOB_RESULT_TTL_S,
                failure_ttl=queue_settings.failure_ttl_s,
                # RQ's default description repeats every argument, i.e. all the review texts.
                description=_job_description(job),
                retry=retry,
            )
            for job in jobs
        ]
        with self._redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            # A resubmitted id must not answer with the result of its previous submit.
            self.store.forget([review.id for job in jobs for review in job], pipeline=pipe)
            self.queue.enqueue_many(job_datas, pipeline=pipe)
            pipe.execute()

    # -- reading results -----------------------------------------------------------------------

    def fetch(self, ids: Sequence[str]) -> dict[str, Prediction]:
        """The predictions already stored for ``ids`` (those with none are left out); no waiting."""
        found: dict[str, Prediction] = {}
        with self._redis_errors():
            for start in range(0, len(ids), FETCH_BATCH):
                found.update(self.store.fetch(ids[start : start + FETCH_BATCH]))
        return found

    def iter_results(self, ids: Sequence[str], timeout: float | None = None) -> Iterator[Prediction]:
        """Yield the prediction of each id once, as it arrives (results already stored come first).

        Waits up to ``timeout`` seconds in all (default ``settings.producer.result_timeout_s``),
        blocking on the result stream rather than polling, then raises
        :class:`~sentiq.errors.ResultsTimeoutError` listing the ids still missing. A review that
        could not be classified arrives as a prediction with ``error`` set.
        """
        timeout_s = self.settings.producer.result_timeout_s if timeout is None else timeout
        pending = dict.fromkeys(ids)
        if not pending:
            return
        deadline = time.monotonic() + timeout_s
        # The cursor is taken before the first read of the stored values: a result written after
        # it is in the stream, one written before it is in the MGET, so none slips between them.
        with self._redis_errors():
            cursor = self.store.last_stream_id()
        yield from _take(self.fetch(list(pending)), pending)
        next_refetch = time.monotonic() + self.refetch_interval_s
        while pending:
            now = time.monotonic()
            if now >= deadline:
                yield from _take(self.fetch(list(pending)), pending)
                if pending:
                    raise ResultsTimeoutError(list(pending), timeout_s)
                return
            wait_s = min(deadline - now, next_refetch - now, self._max_block_s)
            # BLOCK 0 would mean "forever".
            block_ms = max(1, int(wait_s * 1000))
            with self._redis_errors():
                cursor, entries = self.store.read_stream(cursor, block_ms=block_ms)
            for review_id, prediction in entries:
                if review_id in pending:
                    del pending[review_id]
                    yield prediction
            if pending and time.monotonic() >= next_refetch:
                yield from _take(self.fetch(list(pending)), pending)
                next_refetch = time.monotonic() + self.refetch_interval_s

    def results(self, ids: Sequence[str], timeout: float | None = None) -> list[Prediction]:
        """The predictions of ``ids``, in the same order, once all have arrived.

        Waits as :meth:`iter_results` does and raises
        :class:`~sentiq.errors.ResultsTimeoutError` (listing the missing ids) on timeout.
        """
        arrived = {prediction.id: prediction for prediction in self.iter_results(ids, timeout)}
        return [arrived[review_id] for review_id in ids]

    def classify(
        self,
        texts: Iterable[str],
        timeout: float | None = None,
        *,
        ids: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        """Submit ``texts`` and wait for their predictions (see :meth:`submit` and :meth:`results`)."""
        return self.results(self.submit(texts, ids), timeout)

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Report a lost or unreachable server as :class:`RedisUnavailableError`."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as error:
            raise RedisUnavailableError(
                f"Redis at {redact_url(self.settings.redis.url)} failed: {error}"
            ) from error


def _with_overrides(settings: Settings | None, redis_url: str | None, queue: str | None) -> Settings:
    if settings is None:
        return load_settings(redis={"url": redis_url}, queue={"name": queue})
    if redis_url is not None:
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": redis_url})})
    if queue is not None:
        if not queue:
            raise ValueError("queue name must not be empty")
        settings = settings.model_copy(update={"queue": settings.queue.model_copy(update={"name": queue})})
    return settings


def _job_description(job: Sequence[Review]) -> str:
    first, last = job[0].id, job[-1].id
    span = first if len(job) == 1 else f"{first} .. {last}"
    return f"{CLASSIFY_TASK}: {len(job)} review(s) {span}"


def _take(found: dict[str, Prediction], pending: dict[str, None]) -> Iterator[Prediction]:
    """Yield the found predictions still pending, in pending order, and mark them received."""
    for review_id in [review_id for review_id in pending if review_id in found]:
        del pending[review_id]
        yield found[review_id]
