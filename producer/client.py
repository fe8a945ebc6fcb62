"""The producer client: validates reviews, enqueues them as RQ jobs and waits for their results.

Jobs cross Redis as JSON only (RQ's :class:`~rq.serializers.JSONSerializer`); each job names the
worker's task by the string :data:`~sentiq.contract.CLASSIFY_TASK` so that the producer never
imports the worker, and carries up to ``reviews_per_job`` reviews in one
:class:`~sentiq.contract.JobPayload`.

Enqueueing is pipelined: :meth:`Client.submit` writes all its jobs in one MULTI/EXEC round trip,
except for bulk inputs, which go in round trips of at most :data:`JOBS_PER_ROUND_TRIP` jobs or
:data:`TEXT_CHARS_PER_ROUND_TRIP` characters of review text, so that no single transaction holds
Redis (or the client's memory) for long.

Backpressure: with ``producer.max_queue_depth`` set (2,000 jobs by default), a submit that finds
the queue full waits for workers to make room, up to ``producer.queue_full_timeout_s``, then raises
:class:`~sentiq.errors.QueueFullError`. The depth is read before each round trip, so concurrent
producers can overshoot the limit by about one round trip each. Nothing accepted is ever dropped.

Waiting never polls: the client blocks on the result store's stream (``XREAD BLOCK``) and re-reads
the stored values only every :data:`REFETCH_INTERVAL_S` seconds, as a safety net for stream
entries trimmed away before it read them. A wait survives a Redis restart: the client reconnects
with capped backoff until its deadline, then re-reads the stored values.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import AuthenticationError, OutOfMemoryError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from producer.closing import Closing
from producer.jobs import ProducerJob
from sentiq.contract import (
    CLASSIFY_TASK,
    MAX_JOB_DATA_BYTES,
    JobPayload,
    Prediction,
    Review,
    explain_problem,
    validate_reviews,
)
from sentiq.errors import (
    ConfigurationError,
    InvalidRedisUrlError,
    InvalidReviewError,
    QueueFullError,
    RedisFullError,
    RedisUnavailableError,
    ResultsTimeoutError,
)
from sentiq.redis_connection import (
    connect,
    credentials_refused,
    eviction_problem,
    redact_secrets,
    redact_url,
)
from sentiq.result_store import ResultStore
from sentiq.settings import (
    RedisSettings,
    Settings,
    describe_validation_error,
    load_settings,
    redis_url_problem,
)

log = logging.getLogger(__name__)

#: Most jobs written in one pipelined round trip by :meth:`Client.submit`.
JOBS_PER_ROUND_TRIP = 500
#: Most review characters written in one round trip (a second bound, for inputs of long reviews).
#: About 800 IMDB reviews: a big submit reaches workers in steps, so they start on its first jobs
#: while the client still packs the rest (4,000 reviews in one round trip left the worker idle for
#: the whole 0.15 s of packing).
TEXT_CHARS_PER_ROUND_TRIP = 1024 * 1024
#: How long RQ keeps a finished job (its return value is a small summary; the reviews' results
#: live in the result store).
JOB_RESULT_TTL_S = 3_600
#: How often a waiting client re-reads the stored results, in case the capped stream was trimmed
#: past its cursor before it read the entries it waits for.
REFETCH_INTERVAL_S = 5.0
#: Most ids in one MGET, so that re-reading tens of thousands of results never blocks Redis long.
FETCH_BATCH = 5_000

#: Bound on one job's serialized review text, under the workers' :data:`MAX_JOB_DATA_BYTES` with
#: room for the ids and the JSON around them.
JOB_TEXT_BYTES = MAX_JOB_DATA_BYTES - 1024 * 1024
#: Most bytes one character can take in RQ's JSON (``ensure_ascii``: a character outside the BMP
#: becomes two ``\uXXXX`` escapes). Packing by this bound needs no serialization.
JSON_BYTES_PER_CHAR = 12
#: First and longest pause while a submit waits for room in a full queue.
QUEUE_FULL_FIRST_WAIT_S = 0.05
QUEUE_FULL_MAX_WAIT_S = 1.0
#: First and longest pause between reconnection attempts while a wait rides out a Redis outage.
RECONNECT_FIRST_WAIT_S = 0.1
RECONNECT_MAX_WAIT_S = 1.0

#: Called after each enqueue round trip with the number of reviews enqueued so far.
EnqueuedCallback = Callable[[int], None]


class Client(Closing):
    """Submits reviews to the sentiq queue and reads their predictions.

    Defaults come from the settings (:func:`~sentiq.settings.load_settings` when none are given):
    ``SENTIQ_REDIS_URL``, ``SENTIQ_QUEUE_NAME``, ``SENTIQ_QUEUE_KEY_PREFIX`` and the
    ``SENTIQ_PRODUCER_*`` variables. ``redis_url`` and ``queue`` override the settings' values.

    Any Redis URL works: ``redis://``, ``rediss://`` (TLS) and ``unix://``, with a password or an
    ACL user; the password can also come from ``SENTIQ_REDIS_PASSWORD`` or
    ``SENTIQ_REDIS_PASSWORD_FILE`` (see :func:`~sentiq.redis_connection.connect`). Another URL
    raises :class:`~sentiq.errors.InvalidRedisUrlError`, other invalid settings
    :class:`~sentiq.errors.ConfigurationError`. The server is pinged on construction, so a wrong
    URL or password raises :class:`~sentiq.errors.RedisUnavailableError` here, and a Redis that
    may evict keys (``maxmemory`` with a policy other than ``noeviction``) is warned about in the
    log. ``connection`` uses an existing client instead (it is then left open by :meth:`close`).
    No message names a password.

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
        try:
            self._warn_if_redis_may_evict()
        except BaseException:
            self.close()
            raise
        self.queue = Queue(
            self.settings.queue.name, connection=self.redis, serializer=JSONSerializer, job_class=ProducerJob
        )
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

    def _warn_if_redis_may_evict(self) -> None:
        with self._redis_errors():
            problem = eviction_problem(self.redis)
        if problem is None:
            return
        url = redact_url(self.settings.redis.url)
        if self.settings.redis.allow_eviction:
            log.info("Redis at %s: %s (accepted: SENTIQ_REDIS_ALLOW_EVICTION is set)", url, problem)
            return
        log.warning(
            "REDIS MAY DROP QUEUED REVIEWS: Redis at %s: %s. Queued jobs and results can vanish "
            "without any error; set maxmemory-policy noeviction on the server. Workers refuse to "
            "start on this Redis unless SENTIQ_REDIS_ALLOW_EVICTION=true.",
            url,
            problem,
        )

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
        explain: int = 0,
    ) -> list[str]:
        """Enqueue reviews for classification and return their ids, in input order.

        ``texts`` is a list, tuple or other iterable of strings (a single string, bytes, a
        mapping or a non-iterable raise :class:`~sentiq.errors.InvalidReviewError`). ``ids``
        are the caller's keys for the reviews (a result is stored under its review's id, so
        resubmitting an id overwrites its result); ``None`` entries, or no ``ids`` at all, get
        fresh UUIDs. Texts and ids are checked against the wire contract first, and
        :class:`~sentiq.errors.InvalidReviewError` names the first bad review's index; nothing
        is enqueued then. ``on_enqueued`` is called after
        each round trip with the number of reviews enqueued so far.

        When the queue holds ``producer.max_queue_depth`` jobs, submit waits for room up to
        ``producer.queue_full_timeout_s``, then raises :class:`~sentiq.errors.QueueFullError`.
        A Redis that is out of memory raises :class:`~sentiq.errors.RedisFullError`, an
        unreachable one :class:`~sentiq.errors.RedisUnavailableError`. Each round trip is one
        MULTI/EXEC transaction, so on any of these errors that round trip wrote nothing:
        resubmitting the same ids is safe (the two full-errors list in ``enqueued_ids`` what
        earlier round trips of a big submit did enqueue).

        ``explain`` asks for each review's ``explain`` most influential words in its prediction's
        ``attributions`` (0, the default: none; at most
        :data:`~sentiq.contract.MAX_EXPLAIN_WORDS`, else :class:`ValueError`). Explaining costs
        a worker far more than classifying (README "Explanations").
        """
        problem = explain_problem(explain)
        if problem is not None:
            raise ValueError(problem)
        reviews = validate_reviews(
            _sequence_of("texts", texts, InvalidReviewError),
            None if ids is None else _sequence_of("ids", ids, InvalidReviewError),
            self.settings.queue.max_review_chars,
        )
        self._enqueue(reviews, on_enqueued, explain)
        return [review.id for review in reviews]

    def _enqueue(
        self, reviews: Sequence[Review], on_enqueued: EnqueuedCallback | None, explain: int = 0
    ) -> None:
        jobs = _pack_jobs(reviews, self.settings.producer.reviews_per_job)
        enqueued: list[str] = []
        start = 0
        while start < len(jobs):
            end, chars = start, 0
            while end < len(jobs) and (
                end == start or (end - start < self.jobs_per_round_trip and chars < TEXT_CHARS_PER_ROUND_TRIP)
            ):
                chars += sum(len(review.text) for review in jobs[end])
                end += 1
            end = start + self._room_for(end - start, enqueued)
            self._write_jobs(jobs[start:end], enqueued, explain)
            enqueued.extend(review.id for job in jobs[start:end] for review in job)
            start = end
            if on_enqueued is not None:
                on_enqueued(len(enqueued))

    def _room_for(self, wanted: int, enqueued: Sequence[str]) -> int:
        """How many of ``wanted`` jobs fit in the queue now, waiting for at least one to fit."""
        limit = self.settings.producer.max_queue_depth
        if limit == 0:
            return wanted
        timeout_s = self.settings.producer.queue_full_timeout_s
        started = time.monotonic()
        pause = QUEUE_FULL_FIRST_WAIT_S
        while True:
            with self._redis_errors():
                depth = int(self.redis.llen(self.queue.key))  # type: ignore[arg-type]
            if depth < limit:
                return min(wanted, limit - depth)
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise QueueFullError(self.queue.name, depth, limit, round(waited, 2), enqueued)
            if pause == QUEUE_FULL_FIRST_WAIT_S:
                log.info(
                    "queue %r is full (%d jobs, limit %d): waiting up to %gs for workers to make room",
                    self.queue.name,
                    depth,
                    limit,
                    timeout_s,
                )
            time.sleep(min(pause, timeout_s - waited))
            pause = min(pause * 2, QUEUE_FULL_MAX_WAIT_S)

    def _write_jobs(
        self, jobs: Sequence[Sequence[Review]], enqueued: Sequence[str], explain: int = 0
    ) -> None:
        """Write ``jobs`` in one MULTI/EXEC round trip: all of them are queued, or none."""
        queue_settings = self.settings.queue
        retry = Retry(max=queue_settings.job_retries) if queue_settings.job_retries > 0 else None
        job_datas = [
            Queue.prepare_data(
                CLASSIFY_TASK,
                args=(JobPayload.from_reviews(job, explain).model_dump(),),
                result_ttl=JOB_RESULT_TTL_S,
                failure_ttl=queue_settings.failure_ttl_s,
                # RQ's default description repeats every argument, i.e. all the review texts.
                description=_job_description(job),
                retry=retry,
            )
            for job in jobs
        ]
        try:
            with self._redis_errors(), self.redis.pipeline(transaction=True) as pipe:
                # A resubmitted id must not answer with the result of its previous submit.
                self.store.forget([review.id for job in jobs for review in job], pipeline=pipe)
                self.queue.enqueue_many(job_datas, pipeline=pipe)
                pipe.execute()
        except OutOfMemoryError as error:
            # redis-py prefixes the failed command, with its arguments (review texts): keep the reason.
            detail = str(error).rsplit("caused error: ", 1)[-1][:200]
            raise RedisFullError(self.queue.name, detail, enqueued) from None

    # -- reading results -----------------------------------------------------------------------

    def fetch(self, ids: Sequence[str]) -> dict[str, Prediction]:
        """The predictions already stored for ``ids`` (those with none are left out); no waiting.

        ``ids`` is a list or tuple of review id strings (a single string raises :class:`TypeError`).
        """
        id_list = _review_ids(ids)
        with self._redis_errors():
            return self._fetch(id_list)

    def _fetch(self, ids: Sequence[str]) -> dict[str, Prediction]:
        found: dict[str, Prediction] = {}
        for start in range(0, len(ids), FETCH_BATCH):
            found.update(self.store.fetch(ids[start : start + FETCH_BATCH]))
        return found

    def iter_results(self, ids: Sequence[str], timeout: float | None = None) -> Iterator[Prediction]:
        """Yield the prediction of each id once, as it arrives (results already stored come first).

        ``ids`` is a list or tuple of review id strings (a single string raises :class:`TypeError`
        here, before any waiting). Waits up to ``timeout`` seconds in all (default
        ``settings.producer.result_timeout_s``), blocking on the result stream rather than
        polling, then raises :class:`~sentiq.errors.ResultsTimeoutError` listing the ids still
        missing. A review that could not be classified arrives as a prediction with ``error`` set.

        The wait survives Redis restarts: on a lost connection the client reconnects with capped
        backoff (logged as a warning) and re-reads the stored results, so results written during
        or after the outage still arrive. Only when Redis is still unreachable at the deadline
        does it raise :class:`~sentiq.errors.RedisUnavailableError`.
        """
        id_list = _review_ids(ids)
        timeout_s = self.settings.producer.result_timeout_s if timeout is None else timeout
        return self._iter_results(id_list, timeout_s)

    def _iter_results(self, ids: Sequence[str], timeout_s: float) -> Iterator[Prediction]:
        pending = dict.fromkeys(ids)
        deadline = time.monotonic() + timeout_s
        # None until the client is in sync with the stream: at the start and after an outage.
        cursor: str | None = None
        next_refetch = 0.0
        while pending:
            arrived: list[Prediction] = []
            past_deadline = False
            try:
                if cursor is None:
                    # The cursor is taken before the stored values are read: a result written
                    # after it is in the stream, one written before it is in the MGET, so none
                    # slips between them (also across a restart that lost or reset the stream).
                    cursor = self.store.last_stream_id()
                    arrived.extend(_take(self._fetch(list(pending)), pending))
                    next_refetch = time.monotonic() + self.refetch_interval_s
                elif time.monotonic() >= deadline:
                    past_deadline = True
                    arrived.extend(_take(self._fetch(list(pending)), pending))
                else:
                    now = time.monotonic()
                    wait_s = min(deadline - now, next_refetch - now, self._max_block_s)
                    # BLOCK 0 would mean "forever".
                    cursor, entries = self.store.read_stream(
                        cursor, block_ms=max(1, int(wait_s * 1000)), wanted=pending
                    )
                    for review_id, prediction in entries:
                        if review_id in pending:
                            del pending[review_id]
                            arrived.append(prediction)
                    if pending and time.monotonic() >= next_refetch:
                        arrived.extend(_take(self._fetch(list(pending)), pending))
                        next_refetch = time.monotonic() + self.refetch_interval_s
            except AuthenticationError as error:
                raise credentials_refused(error, self.settings.redis) from None
            except (RedisConnectionError, RedisTimeoutError) as error:
                self._reconnect(error, deadline, timeout_s)
                cursor = None
            yield from arrived
            if past_deadline and pending:
                raise ResultsTimeoutError(list(pending), timeout_s)

    def _reconnect(self, error: Exception, deadline: float, timeout_s: float) -> None:
        """Wait for Redis to answer again, with capped backoff, until ``deadline``."""
        url = redact_url(self.settings.redis.url)
        reason = redact_secrets(f"{type(error).__name__}: {error}", self.settings.redis)
        log.warning("lost Redis at %s while waiting for results (%s); reconnecting", url, reason)
        lost_at = time.monotonic()
        pause = RECONNECT_FIRST_WAIT_S
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise RedisUnavailableError(
                    f"Redis at {url} failed while waiting for results and was still unreachable "
                    f"at the {timeout_s:g}s deadline: {reason}"
                ) from None
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, RECONNECT_MAX_WAIT_S)
            try:
                self.redis.ping()
            except AuthenticationError as refused:
                # Redis came back with other credentials: waiting longer cannot help.
                raise credentials_refused(refused, self.settings.redis) from None
            except (RedisConnectionError, RedisTimeoutError) as retry_error:
                log.debug("Redis at %s still unreachable: %s", url, type(retry_error).__name__)
                continue
            log.warning(
                "reconnected to Redis at %s after %.1fs; re-reading the stored results",
                url,
                time.monotonic() - lost_at,
            )
            return

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
        explain: int = 0,
    ) -> list[Prediction]:
        """Submit ``texts`` and wait for their predictions (see :meth:`submit` and :meth:`results`)."""
        return self.results(self.submit(texts, ids, explain=explain), timeout)

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Report a lost or unreachable server as :class:`RedisUnavailableError`."""
        try:
            yield
        except AuthenticationError as error:
            raise credentials_refused(error, self.settings.redis) from None
        except (RedisConnectionError, RedisTimeoutError) as error:
            reason = redact_secrets(str(error), self.settings.redis)
            raise RedisUnavailableError(
                f"Redis at {redact_url(self.settings.redis.url)} failed: {reason}; every enqueue is "
                "one transaction, so submitting the same reviews again is safe"
            ) from None


def _with_overrides(settings: Settings | None, redis_url: str | None, queue: str | None) -> Settings:
    if redis_url is not None:
        problem = redis_url_problem(redis_url)
        if problem is not None:
            raise InvalidRedisUrlError(f"invalid Redis URL {redact_url(redis_url)}: {problem}")
    if queue is not None and not queue:
        raise ValueError("queue name must not be empty")
    try:
        if settings is None:
            return load_settings(redis={"url": redis_url}, queue={"name": queue})
        if redis_url is not None:
            redis = RedisSettings.model_validate({**settings.redis.model_dump(), "url": redis_url})
            settings = settings.model_copy(update={"redis": redis})
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None
    if queue is not None:
        settings = settings.model_copy(update={"queue": settings.queue.model_copy(update={"name": queue})})
    return settings


def _sequence_of(name: str, values: object, error: type[Exception] = TypeError) -> list[object]:
    """``values`` as a list, or ``error`` when it is not a collection of items.

    A string, bytes or a mapping is iterable, but as a collection of reviews or ids it would be
    silent nonsense (one review per character or per key).
    """
    if isinstance(values, str):
        raise error(f"{name} must be a list or tuple of strings, not a single string")
    if isinstance(values, (bytes | bytearray, Mapping)) or not isinstance(values, Iterable):
        raise error(f"{name} must be a list or tuple of strings, got {type(values).__name__}")
    return list(values)


def _review_ids(ids: object) -> list[str]:
    """``ids`` as a list of strings, or a :class:`TypeError` naming what is wrong."""
    id_list = _sequence_of("ids", ids)
    for index, review_id in enumerate(id_list):
        if not isinstance(review_id, str):
            raise TypeError(f"ids[{index}] must be a review id string, got {type(review_id).__name__}")
    return id_list  # type: ignore[return-value]


def _pack_jobs(reviews: Sequence[Review], per_job: int) -> list[Sequence[Review]]:
    """Consecutive jobs of at most ``per_job`` reviews, each below the workers' data limit."""
    jobs: list[Sequence[Review]] = []
    start, size = 0, 0
    for index, review in enumerate(reviews):
        review_bytes = JSON_BYTES_PER_CHAR * len(review.text)
        if index > start and (index - start >= per_job or size + review_bytes > JOB_TEXT_BYTES):
            jobs.append(reviews[start:index])
            start, size = index, 0
        size += review_bytes
    if start < len(reviews):
        jobs.append(reviews[start:])
    return jobs


def _job_description(job: Sequence[Review]) -> str:
    first, last = job[0].id, job[-1].id
    span = first if len(job) == 1 else f"{first} .. {last}"
    return f"{CLASSIFY_TASK}: {len(job)} review(s) {span}"


def _take(found: dict[str, Prediction], pending: dict[str, None]) -> Iterator[Prediction]:
    """Yield the found predictions still pending, in pending order, and mark them received."""
    for review_id in [review_id for review_id in pending if review_id in found]:
        del pending[review_id]
        yield found[review_id]
