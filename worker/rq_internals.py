"""Every RQ internal the sentiq worker relies on, in one module (``tests/worker/test_rq_internals.py``).

RQ is pinned (``rq~=3.0.0``). The worker needs a few things RQ does not offer as public API: its
key layout (to fail a job whose record cannot be read at all), the steps of RQ's start and success
bookkeeping (to start and finish all the jobs of a batch in one round trip each, writing what RQ
writes per job), two private finalizers (RQ's own per-job bookkeeping, for failures and for jobs
that use RQ features sentiq does not batch), the private enqueue used by retries (to put a retried
job at the front), and the fields of a job hash. Nothing else in sentiq names a
private RQ attribute; the pinning test fails as soon as a new RQ changes any of them.

The other half of this module is :class:`SentiqJob`, the job class of every queue and registry a
sentiq worker touches. RQ reaches jobs along many paths besides the dequeue (gathering, started and
intermediate registry clean-up, abandoned jobs, retries, failure handling); on every one of them it
fetches through the queue's job class, so that class is where "a worker never imports, calls or
fetches anything a job names" is enforced: callbacks always read as absent, webhooks are never sent,
the function a job names is never imported, repeats are ignored, and a record that cannot be read
raises :class:`~sentiq.errors.UnreadableJobError` instead of RQ's various errors.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple, cast

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import AuthenticationError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import JOB_ID_PATTERN, Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.serializers import resolve_serializer as rq_resolve_serializer
from rq.utils import get_version, now, parse_composite_key, utcformat
from rq.worker import BaseWorker, WorkerStatus

from sentiq.contract import CLASSIFY_TASK, MAX_JOB_DATA_BYTES
from sentiq.errors import ForbiddenTaskError, UnreadableJobError
from sentiq.redis_connection import credentials_refused

log = logging.getLogger(__name__)

#: Redis errors that mean "not now" rather than "never": the worker tries the step again until it works.
TRANSIENT_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, RedisOutOfMemoryError)
#: The RQ release these internals were read from.
PINNED_RQ_VERSION = "3.0.0"
#: Where RQ lists every queue's key (a set); producers in other languages SADD to it.
QUEUES_KEY = "rq:queues"
#: Job-hash fields that name code or URLs. A sentiq worker never reads them as anything but text.
FOREIGN_NAME_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name", "webhooks")
#: Job-hash field that marks a job's results as published (the execution that did it). Results of a
#: job are published once, however often RQ runs the job (see ResultStore.publish_once).
PUBLISHED_FIELD = "sentiq_published"

# One round trip, without loading a record that is not a job hash or is too big to hold in memory.
_READ_JOB_LUA = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return {'none'} end
if kind ~= 'hash' then return {'type', kind} end
local size = redis.call('HSTRLEN', KEYS[1], 'data')
if size == 0 then return {'nodata'} end
if size > tonumber(ARGV[1]) then return {'size', tostring(size)} end
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, 'ok')
return fields
"""


def job_key(job_id: str) -> str:
    """Redis key of a job's hash (``rq:job:<id>``)."""
    return str(Job.key_for(job_id))


def intermediate_queue_key(queue: Queue) -> str:
    """The list a job sits in between the dequeue (LMOVE) and the started registry."""
    return str(queue.intermediate_queue_key)


def _check_job_id(job_id: str) -> None:
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise UnreadableJobError(
            job_id, f"job id {job_id[:80]!r} has characters outside RQ's job-id charset (A-Z a-z 0-9 _ -)"
        )


class SentiqJob(Job):
    """An RQ job that can never make a worker import, call or fetch what its hash names."""

    #: The names a job's hash carried in :data:`FOREIGN_NAME_FIELDS` (set by ``restore``).
    foreign_names: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.foreign_names = []
        # The compressed data as read from Redis, and the bytes it decompressed to.
        self._stored_data: tuple[bytes, bytes] | None = None

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def fetch(cls, id: str, connection: Redis | None = None, serializer: Any = None) -> SentiqJob:
        """RQ's fetch, refusing an id outside RQ's job-id charset instead of silently cutting it.

        RQ reads ``a:b`` as job ``a`` (execution ``b``), finds no such job and drops the queued
        ``a:b`` without a trace; sentiq fails it visibly instead.
        """
        _check_job_id(id)
        job = cls(id, connection=connection, serializer=serializer)
        job.refresh()
        return job

    @classmethod
    def from_read(cls, id: str, reply: Sequence[Any], connection: Redis, serializer: Any = None) -> SentiqJob:
        """The job whose record the job-reading script returned as ``reply``, checked as in :meth:`fetch`."""
        _check_job_id(id)
        job = cls(id, connection=connection, serializer=serializer)
        job._restore_read(reply)
        return job

    def refresh(self) -> None:
        """Read the job hash in one round trip, refusing records that are not readable jobs.

        Raises :class:`NoSuchJobError` when there is no record, and
        :class:`~sentiq.errors.UnreadableJobError` when it is not a hash, has no ``data``, has more
        than :data:`~sentiq.contract.MAX_JOB_DATA_BYTES` of data, or does not parse.
        """
        self._restore_read(
            self.connection.register_script(_READ_JOB_LUA)(keys=[self.key], args=[MAX_JOB_DATA_BYTES])
        )

    def _restore_read(self, reply: Sequence[Any]) -> None:
        verdict = _text(reply[0])
        if verdict == "none":
            raise NoSuchJobError(f"No such job: {self.key}")
        if verdict == "type":
            raise UnreadableJobError(self.id, f"{self.key} holds a Redis {_text(reply[1])}, not a job hash")
        if verdict == "nodata":
            raise UnreadableJobError(self.id, "the job hash has no 'data' field")
        if verdict == "size":
            raise UnreadableJobError(
                self.id,
                f"its data is {_text(reply[1])} bytes, more than the limit of {MAX_JOB_DATA_BYTES} "
                "(sentiq.contract.MAX_JOB_DATA_BYTES); split the reviews into smaller jobs",
            )
        fields = reply[1:]
        self.restore(dict(zip(fields[0::2], fields[1::2], strict=True)))

    def restore(self, raw_data: Mapping[bytes, bytes]) -> Any:
        """RQ's restore, then everything a job could name is dropped before anyone reads it."""
        try:
            result = super().restore(raw_data)
        except NoSuchJobError as error:
            raise UnreadableJobError(self.id, f"the job hash does not parse: {error}") from error
        except StopRequested:
            # RQ's SIGTERM handler raises it wherever an idle worker is, this read included: a stop,
            # not a bad record (taken for one, it refused a healthy job and the stop was lost).
            raise
        except Exception as error:
            detail = str(error) or "a field such as timeout, created_at, status or retries_left is malformed"
            raise UnreadableJobError(
                self.id, f"the job hash does not parse: {type(error).__name__}: {detail}"
            ) from error
        stored = raw_data.get(b"data") or cast("Mapping[Any, bytes]", raw_data).get("data")
        data = self._data
        self._stored_data = (stored, data) if isinstance(stored, bytes) and isinstance(data, bytes) else None
        self.foreign_names = [
            name
            for name, value in (
                ("on_success", self._success_callback_name),
                ("on_failure", self._failure_callback_name),
                ("on_stopped", self._stopped_callback_name),
                ("webhooks", self.webhooks),
            )
            if value
        ]
        self._success_callback_name = self._failure_callback_name = self._stopped_callback_name = None
        self.webhooks = []
        # Repeats would make RQ enqueue the job again and again after each success.
        self.repeats_left = None
        return result

    # -- writing -----------------------------------------------------------------------------

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        """RQ's fields, with the job's data written back as it was read rather than recompressed.

        RQ recompresses all of a job's reviews at every status change (started, finished, failed):
        about 0.05 ms per review, a third of the queue path. A job's data never changes after it
        is enqueued, so the bytes read from Redis are written back as they were.
        """
        stored = self._stored_data
        if stored is None or self._data is not stored[1]:
            return super().to_dict(include_meta, include_result)
        self._data = b""
        try:
            fields = super().to_dict(include_meta, include_result)
        finally:
            self._data = stored[1]
        fields["data"] = stored[0]
        return fields

    # -- what a job names --------------------------------------------------------------------

    @property
    def func(self) -> Any:
        """Never imported: sentiq runs its own classify code, and nothing else."""
        raise ForbiddenTaskError(
            f"job {self.id} names {self.func_name!r}; sentiq workers never import what a job names"
            if self.func_name != CLASSIFY_TASK
            else f"job {self.id}: sentiq workers classify in batches and never call the task function"
        )

    @property
    def success_callback(self) -> None:
        """Always absent, whatever the hash names."""
        return None

    @property
    def failure_callback(self) -> None:
        """Always absent, whatever the hash names."""
        return None

    @property
    def stopped_callback(self) -> None:
        """Always absent, whatever the hash names."""
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        """Never sends anything: a job cannot make a worker fetch a URL."""

    # -- retries -----------------------------------------------------------------------------

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        """Re-queue at the front, at once: a retried job was accepted long ago and must not wait
        behind the whole backlog, and retry intervals would need a scheduler sentiq does not run."""
        self.retries_left = max(0, (self.retries_left or 1) - 1)
        queue._enqueue_job(self, pipeline=pipeline, at_front=True)


class _SweptIntermediateQueue(IntermediateQueue):
    """A queue's intermediate list, left alone by RQ's registry clean-up (see :class:`SentiqQueue`)."""

    def cleanup(self, worker: BaseWorker, queue: Queue) -> None:
        """Nothing: the sentiq worker's sweep cleans the list."""


class SentiqQueue(Queue):
    """An RQ queue whose intermediate list only the sentiq worker's sweep cleans.

    RQ's registry clean-up (``BaseWorker.clean_registries``) cleans each queue's intermediate list
    too, in ways that lose or fail jobs that never ran: it drops at first sight an id whose job's
    ``origin`` names another queue (a job moved from one queue to another and stranded there by a
    dead worker or a Redis crash was lost, in no list and no registry), and it fails a job it first
    saw there over a minute ago as "stuck" (spending a retry, or answering its reviews with errors),
    before the sweep puts it back once it has sat there a heartbeat TTL, when that is over a
    minute. The sweep puts each stranded job back in the queue it was taken from, and drops the
    ids of jobs whose record is gone, as RQ did.
    """

    @property
    def intermediate_queue(self) -> IntermediateQueue:
        """RQ's intermediate list of this queue, with a clean-up that does nothing."""
        return _SweptIntermediateQueue(self.key, connection=self.connection)

    @classmethod
    def dequeue_any(cls, *args: Any, **kwargs: Any) -> tuple[Job, Queue] | None:
        """RQ's dequeue (what its worker calls through ``queue_class``), remembering what it took.

        RQ's worker makes several Redis calls after the dequeue before the job runs (logging the job,
        its heartbeat), while it is idle: a stop signal there raises in the middle of them, and the
        job it took, in no registry yet, waited a heartbeat TTL for the sweep. :func:`last_dequeued`
        names it (recorded by :meth:`lmove` or :meth:`lpop` below, the moment Redis hands the id
        over), so the stop can put it back at once.
        """
        _LAST_DEQUEUED.set(None)
        try:
            return super().dequeue_any(*args, **kwargs)
        except AuthenticationError as error:
            # A ConnectionError, which RQ's dequeue retries for ever: refused credentials end the worker.
            raise credentials_refused(error) from None

    # RQ's dequeue moves (one queue) or pops (several) the id, then builds the queue and fetches the
    # job: a stop signal in between used to leave the id unnamed, so the job waited a heartbeat TTL
    # in the intermediate list, or was in no list at all once popped. The id is remembered as soon
    # as Redis hands it over; only the few bytecodes of returning from that call remain unguarded.

    @classmethod
    def lmove(cls, connection: Redis, queue_key: str, timeout: int | None) -> Any:
        """RQ's move of the queue's first id into its intermediate list, remembered at once."""
        return _remember_taken(connection, super().lmove(connection, queue_key, timeout))

    @classmethod
    def lpop(cls, queue_keys: Sequence[str], timeout: int | None, connection: Redis | None = None) -> Any:
        """RQ's pop of the first id of the first non-empty queue, remembered at once."""
        result = super().lpop(queue_keys, timeout, connection=connection)
        return result if connection is None else _remember_taken(connection, result)

    @classmethod
    def _fetch_dequeued_job(  # noqa: PLR0917 (RQ's signature)
        cls,
        connection: Redis,
        queue_key: str,
        job_id: str,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        """RQ's fetch of the job it took; ``None`` (its record is gone) forgets the id again."""
        fetched = super()._fetch_dequeued_job(
            connection,
            queue_key,
            job_id,
            job_class=job_class,
            serializer=serializer,
            death_penalty_class=death_penalty_class,
        )
        if fetched is None:
            _LAST_DEQUEUED.set(None)  # RQ dequeues again; the sweep drops the id of a missing record
        return fetched


def _remember_taken(connection: Redis, taken: Any) -> Any:
    """Remember the ``(queue key, job id)`` RQ's move or pop returned as :func:`last_dequeued`.

    An id that is not UTF-8 is not remembered: RQ fails on it right after, and the dequeue's
    error handling deals with it as before.
    """
    if taken is None:
        return None
    try:
        queue_key, job_id = (part.decode() if isinstance(part, bytes) else str(part) for part in taken)
    except UnicodeDecodeError:
        return taken
    _LAST_DEQUEUED.set((job_id, queue_key, connection))
    return taken


#: The RQ modules on a worker's path that resolve a serializer whenever they build an object (a
#: job, queue, registry, result or worker), by the name they imported from ``rq.serializers``.
SERIALIZER_RESOLVING_MODULES = ("rq.job", "rq.queue", "rq.registry", "rq.results", "rq.worker.base")


def remember_serializer_resolution() -> None:
    """Make RQ resolve each serializer once per process, not for every object it builds.

    RQ checks a serializer with ``isinstance`` against a runtime-checkable Protocol, which walks
    the protocol's attributes on every call on Python 3.11 (about 18 us on a 2-core AMD EPYC), and
    a worker builds about seven jobs, queues and registries per job it runs. The answer depends
    only on the argument, so it is kept. Measured with ``python -m benchmarks.job_overhead
    --reviews 1500 --repeats 2``, six alternating pairs: one-review jobs 791 -> 876 jobs/s on
    average (1.11x, faster in 5 of 6), 0.11 ms less per job. Idempotent.
    """
    for name in SERIALIZER_RESOLVING_MODULES:
        module = importlib.import_module(name)
        module.resolve_serializer = resolve_serializer_remembered  # type: ignore[attr-defined]


def resolve_serializer_remembered(serializer: Any = None) -> Any:
    """RQ's ``resolve_serializer``, its answer kept for each (hashable) argument."""
    try:
        return _resolved_once(serializer)
    except TypeError:  # an unhashable serializer object: RQ's own check, every time
        return rq_resolve_serializer(serializer)


@functools.lru_cache(maxsize=32)
def _resolved_once(serializer: Any) -> Any:
    return rq_resolve_serializer(serializer)


#: What SentiqQueue.dequeue_any took last in this thread (context), until the next dequeue: the job
#: id, its queue's key and the connection (the queue is built when asked for: nothing but the
#: record happens between Redis handing the id over and the id being remembered).
_LAST_DEQUEUED: ContextVar[tuple[str, str, Redis] | None] = ContextVar("sentiq_last_dequeued", default=None)


def last_dequeued() -> tuple[str, Queue] | None:
    """The id and queue of the job the last :meth:`SentiqQueue.dequeue_any` of this thread took."""
    taken = _LAST_DEQUEUED.get()
    if taken is None:
        return None
    job_id, queue_key, connection = taken
    queue = SentiqQueue.from_queue_key(
        queue_key, connection=connection, job_class=SentiqJob, serializer=JSONSerializer
    )
    return job_id, queue


def forget_dequeued() -> None:
    """Forget the last dequeued job (it started, or was put back)."""
    _LAST_DEQUEUED.set(None)


def safe_queue(queue: Queue) -> Queue:
    """The same queue as a :class:`SentiqQueue`, with :class:`SentiqJob` and the JSON serializer for it
    and its registries.

    Whatever serializer the caller's queue had: RQ's default would unpickle job data during registry
    clean-up, which is running code a job names.
    """
    return SentiqQueue(
        queue.name, connection=queue.connection, serializer=JSONSerializer, job_class=SentiqJob
    )


def dequeued_job_error(error: Exception) -> tuple[str, Queue] | None:
    """The job id and queue RQ attaches to an error from fetching a job it just dequeued."""
    job_id, queue = getattr(error, "job_id", None), getattr(error, "queue", None)
    if isinstance(job_id, str) and isinstance(queue, Queue):
        return job_id, queue
    return None


def rq_dequeue_moves(queues: Sequence[Queue], connection: Redis) -> bool:
    """Whether RQ's dequeue moves a job into its queue's intermediate list (LMOVE, one queue on
    Redis >= 6.2) rather than popping it (LPOP or BLPOP, several queues or an older Redis)."""
    return len(queues) == 1 and get_version(connection) >= (6, 2, 0)


def stop_requested(worker: BaseWorker) -> bool:
    """Whether a warm shutdown was asked for while the worker was busy (RQ's private flag).

    RQ's signal handler sets it instead of raising when the worker is busy, and checks it only
    after the job; the gathering checks it so that a stop does not wait out ``max_wait_ms``.
    """
    return bool(getattr(worker, "_stop_requested", False))


def put_back_at_front(queue: Queue, job_id: str) -> None:
    """Push a job id RQ popped, but that never ran, back at the front of its queue.

    A copy :func:`hold_in_intermediate` may have recorded leaves the intermediate list in the same
    transaction, so the sweep does not put the job back a second time, and so does the sweep's
    first-seen marker.
    """
    with queue.connection.pipeline() as pipe:
        pipe.lrem(intermediate_queue_key(queue), 1, job_id)
        pipe.lpush(queue.key, job_id)
        # Waiting in the queue again: a sweep's first sight of it (see start_jobs) no longer counts.
        pipe.delete(queue.intermediate_queue.get_first_seen_key(job_id))
        pipe.execute()


def hold_in_intermediate(queue: Queue, job_id: str) -> None:
    """Record a job id RQ popped in its queue's intermediate list, as RQ's LMOVE would have.

    RQ pops the job it dequeues when the worker has several queues (or Redis is older than 6.2);
    until the job starts it would then be in no list, and a worker or Redis dying in between lost
    it. In the intermediate list the sweep finds it, and the start takes it out (LREM). Safe to
    repeat after a lost reply: the transaction first drops the copy an applied attempt pushed.
    """
    with queue.connection.pipeline() as pipe:
        pipe.lrem(intermediate_queue_key(queue), -1, job_id)
        pipe.rpush(intermediate_queue_key(queue), job_id)
        # Held from now: a first sight a sweep recorded before (see start_jobs) no longer counts.
        pipe.delete(queue.intermediate_queue.get_first_seen_key(job_id))
        pipe.execute()


class Dequeued(NamedTuple):
    """What :func:`dequeue_jobs` took: how many ids left the queues, and each readable job or error."""

    taken: int
    jobs: list[tuple[SentiqJob, Queue] | Exception]


def dequeue_jobs(queues: Sequence[Queue], most: int, connection: Redis) -> Dequeued:
    """Up to ``most`` waiting jobs, taken as RQ's non-blocking dequeue takes them, in two round trips.

    RQ's ``Queue.dequeue_any`` without a timeout moves one job id into the queue's intermediate
    list (LMOVE; LPOP from each queue in turn when there are several) and then reads that job's
    hash: two round trips a job. Here up to ``most`` ids are moved in one pipeline per queue
    visited (queues in the given order, as RQ takes them) and their hashes read in one more, with
    :class:`SentiqJob`'s checks. As in RQ, a job whose hash is gone is passed over (it still counts
    in ``taken``), and a job that cannot be read comes back as its error, carrying ``job_id`` and
    ``queue`` as RQ's errors do (:func:`dequeued_job_error`). Should Redis or the worker fail
    before the jobs start, the moved ids wait in their queue's intermediate list, where a worker's
    sweep puts them back in the queue. With several queues too, unlike RQ's LPOP, which would lose
    up to ``most`` jobs there; before Redis 6.2 (no LMOVE) the ids are popped, as RQ pops them.
    """
    in_intermediate = get_version(connection) >= (6, 2, 0)
    taken: list[tuple[bytes, Queue]] = []
    for queue in queues:
        wanted = most - len(taken)
        if wanted <= 0:
            break
        if in_intermediate:
            with connection.pipeline(transaction=False) as pipe:
                for _ in range(wanted):
                    pipe.lmove(queue.key, intermediate_queue_key(queue), "LEFT", "RIGHT")
                taken.extend((job_id, queue) for job_id in pipe.execute() if job_id is not None)
        else:
            popped = cast("list[bytes] | None", connection.lpop(queue.key, wanted))
            taken.extend((job_id, queue) for job_id in popped or [])
    moved = _text_ids(connection, taken, in_intermediate=in_intermediate)
    if not moved:
        return Dequeued(len(taken), [])
    with connection.pipeline(transaction=False) as pipe:
        for job_id, _ in moved:
            # EVAL, not a registered script: redis-py checks a pipeline's scripts in a round trip
            # of its own first, and Redis caches the compiled script either way.
            pipe.eval(_READ_JOB_LUA, 1, job_key(job_id), MAX_JOB_DATA_BYTES)
        replies = pipe.execute(raise_on_error=False)
    jobs: list[tuple[SentiqJob, Queue] | Exception] = []
    for (job_id, queue), reply in zip(moved, replies, strict=True):
        try:
            if isinstance(reply, TRANSIENT_REDIS_ERRORS):
                raise reply
            if isinstance(reply, Exception):
                raise UnreadableJobError(job_id, f"its record could not be read: {reply}")
            jobs.append((SentiqJob.from_read(job_id, reply, connection, JSONSerializer), queue))
        except NoSuchJobError:
            continue
        except (*TRANSIENT_REDIS_ERRORS, StopRequested):
            raise
        except Exception as error:
            error.job_id = job_id  # type: ignore[attr-defined]
            error.queue = queue  # type: ignore[attr-defined]
            jobs.append(error)
    return Dequeued(len(taken), jobs)


def _text_ids(
    connection: Redis, ids: Sequence[tuple[bytes, Queue]], *, in_intermediate: bool
) -> list[tuple[str, Queue]]:
    """The ids that are text; one that is not UTF-8 is dropped (and out of the intermediate list).

    RQ's job ids are ASCII, so no job has such an id: only another client can have pushed it. Left
    in the intermediate list, it would make every later sweep, and RQ's own clean-up, fail on it
    before reaching the jobs behind it; failing the take on it would strand the take's other jobs.
    """
    decoded: list[tuple[str, Queue]] = []
    for raw, queue in ids:
        try:
            decoded.append((raw.decode(), queue))
        except UnicodeDecodeError:
            log.error("dropped id %r from queue %s: not UTF-8, so no job's id", raw[:80], queue.name)
            if in_intermediate:
                connection.lrem(intermediate_queue_key(queue), 1, raw)  # type: ignore[arg-type]  # the raw bytes
    return decoded


def record_unreadable(connection: Redis, job_id: str, queue: Queue, reason: str, failure_ttl_s: int) -> None:
    """Fail a job whose record cannot be read, visibly and for ``failure_ttl_s`` seconds.

    It leaves the intermediate queue and the started registry, and enters the failed registry with
    an expiry ``failure_ttl_s`` from now (RQ's score is the expiry time). A record that is not a hash
    is replaced by a small failed-job hash carrying the reason; a hash keeps its fields, gains the
    failed status and the reason, and expires with its registry entry.
    """
    key = job_key(job_id)
    started = StartedJobRegistry(queue.name, connection=connection)
    members = _started_members(connection, started.key, job_id)
    record: dict[Any, Any] = {
        "status": JobStatus.FAILED.value,
        "origin": queue.name,
        "exc_info": f"refused by sentiq: {reason}",
        "ended_at": utcformat(now()),
    }
    is_hash = _text(connection.type(key)) in ("hash", "none")
    with connection.pipeline(transaction=True) as pipe:
        pipe.lrem(intermediate_queue_key(queue), 0, job_id)
        if members:
            pipe.zrem(started.key, *members)
        if not is_hash:
            pipe.delete(key)
        pipe.hset(key, mapping=record)
        pipe.expire(key, failure_ttl_s)
        pipe.zadd(
            FailedJobRegistry(queue.name, connection=connection).key, {job_id: time.time() + failure_ttl_s}
        )
        pipe.execute()


def raw_job_arguments(connection: Redis, job_id: str) -> object:
    """The arguments a job record's ``data`` holds, read without RQ (``None`` when it has none).

    For a record RQ cannot restore (a malformed field beside readable data), so that its reviews
    can still be answered.
    """
    key = job_key(job_id)
    if _text(connection.type(key)) != "hash" or connection.hstrlen(key, "data") > MAX_JOB_DATA_BYTES:
        return None
    raw = connection.hget(key, "data")
    if not isinstance(raw, bytes):
        return None
    try:
        data = zlib.decompress(raw)
    except zlib.error:
        data = raw
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    return decoded[2] if isinstance(decoded, list) and len(decoded) == 4 else None


# Only the worker whose LREM takes the id out of the intermediate list puts it back in the queue.
_REQUEUE_STRANDED_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""


def drop_from_intermediate(queue: Queue, job_id: str, copies: int = 0) -> None:
    """Take ``copies`` copies of ``job_id`` (0: every copy) out of the queue's intermediate list."""
    queue.connection.lrem(intermediate_queue_key(queue), copies, job_id)


def stranded_seconds(queue: Queue, job_id: str) -> float:
    """How long a job has been seen in the intermediate list (0 the first time it is seen).

    Uses RQ's own first-seen marker of the intermediate list.
    """
    intermediate = queue.intermediate_queue
    if intermediate.set_first_seen(job_id):
        return 0.0
    first_seen = intermediate.get_first_seen(job_id)
    return (now() - first_seen).total_seconds() if first_seen else 0.0


def requeue_stranded(queue: Queue, job_id: str) -> bool:
    """Put a job that a dead worker dequeued but never started back at the front, without spending a
    retry (it never ran); ``False`` when another worker got there first."""
    connection = queue.connection
    keys = [intermediate_queue_key(queue), queue.key, queue.intermediate_queue.get_first_seen_key(job_id)]
    moved = bool(connection.register_script(_REQUEUE_STRANDED_LUA)(keys=keys, args=[job_id]))
    if moved:
        started = StartedJobRegistry(queue.name, connection=connection)
        members = _started_members(connection, started.key, job_id)
        if members:
            connection.zrem(started.key, *members)
    return moved


def _started_members(connection: Redis, key: str, job_id: str) -> list[Any]:
    """The started registry's ``<job id>:<execution id>`` members of one job."""
    return [
        member for member in connection.zrange(key, 0, -1) if parse_composite_key(_text(member))[0] == job_id
    ]


def started_job_ids(queue: Queue, expired_only: bool) -> list[str]:
    """Ids in the queue's started registry (only those whose heartbeat expired, with ``expired_only``)."""
    registry = StartedJobRegistry(queue.name, connection=queue.connection, job_class=SentiqJob)
    ids = registry.get_expired_job_ids() if expired_only else registry.get_job_ids(cleanup=False)
    return list(dict.fromkeys(str(job_id) for job_id in ids))


def intermediate_job_ids(queue: Queue) -> list[str]:
    """Ids in the queue's intermediate list (dequeued, not yet started); ids that are not text are
    taken out of it (see :func:`_text_ids`)."""
    listed = cast("list[bytes]", queue.connection.lrange(intermediate_queue_key(queue), 0, -1))
    return [
        job_id
        for job_id, _ in _text_ids(queue.connection, [(raw, queue) for raw in listed], in_intermediate=True)
    ]


def finalize_success(
    worker: BaseWorker, job: Job, queue: Queue, execution: Execution, summary: object
) -> None:
    """RQ's own success bookkeeping for a job the worker ran itself (registries, result, status)."""
    worker._finalize_success(job, queue, execution, summary)


def finalize_failure(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None:
    """RQ's own failure bookkeeping (retry at the front, or the failed registry) for such a job."""
    worker._finalize_failure(job, queue, execution, exc_info)


class StartingJob(NamedTuple):
    """A job about to run in a batch, the queue it came from, and fields to fill in its hash."""

    job: Job
    queue: Queue
    filled: Mapping[Any, Any]


def start_jobs(
    worker: BaseWorker,
    starting: Sequence[StartingJob],
    *,
    remove_from_intermediate_queue: bool,
    attempted: list[Execution] | None = None,
) -> list[Execution]:
    """Record jobs that run together as started, in one round trip; returns their executions.

    For each job it writes what RQ's ``prepare_execution`` and ``prepare_job_execution`` write (an
    execution record in the job's execution registry, the started registry and the worker's
    execution index; the job's heartbeat, ``started`` status, start time and worker; no expiry on
    the job hash; out of the intermediate list), plus the job's filled-in fields; the worker's busy
    state and heartbeat once. RQ's own functions do it in two round trips per job.

    ``attempted`` makes a start that is tried again after a Redis error safe: a transaction whose
    reply was lost may still have been applied, leaving executions that nothing heartbeats, which
    RQ's clean-up would later take for an abandoned run of a job that is still running (retried
    under the worker, or failed with error answers). Each call deletes, in the same transaction,
    the executions that earlier calls with the same list created, and adds its own to the list.
    """
    executions: list[Execution] = []
    ttl = 0
    with worker.connection.pipeline() as pipe:
        for earlier in attempted or ():
            earlier.delete(earlier.job, pipeline=pipe)
        for job, queue, filled in starting:
            job_ttl = worker.get_heartbeat_ttl(job)
            ttl = max(ttl, job_ttl)
            executions.append(Execution.create(job, job_ttl, pipeline=pipe, worker_name=worker.name))
            if filled:
                pipe.hset(job.key, mapping=filled)
            job.heartbeat(now(), job_ttl, pipeline=pipe)
            job.prepare_for_execution(worker.name, pipeline=pipe)
            pipe.persist(job.key)
            if remove_from_intermediate_queue:
                # Every copy: an id queued twice (pushed again by another client) runs once.
                pipe.lrem(intermediate_queue_key(queue), 0, job.id)
                # And the sweep's first sight of it (RQ keeps it a day): held again after a retry,
                # the job would look stranded since then and be put back while its worker holds it.
                pipe.delete(queue.intermediate_queue.get_first_seen_key(job.id))
        worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
        worker.heartbeat(ttl, pipeline=pipe)
        if attempted is not None:
            attempted.extend(executions)
        pipe.execute()
    for execution in executions:
        worker.executions[execution.id] = execution
    return executions


class FinishedJob(NamedTuple):
    """A job of a batch that ran to the end: its queue, execution and return value (RQ's result)."""

    job: Job
    queue: Queue
    execution: Execution
    return_value: object


def finish_jobs(worker: BaseWorker, finished: Sequence[FinishedJob]) -> None:
    """RQ's success bookkeeping for jobs that ran together: three round trips for the whole batch.

    For each job it writes what RQ's ``_finalize_success`` writes for a job that returned (end
    time and heartbeat, ``finished`` status, the job hash, RQ's result record, the finished
    registry, expiry after its result TTL, the execution removed, the worker's success count and
    working time), in one transaction. Like RQ, it watches the jobs' dependents sets so that a
    dependent added meanwhile is not missed. Jobs that use what this does not cover (dependents,
    a rate limit, a group) go through RQ's own finalizer, one by one.
    """
    plain = [item for item in finished if not (item.job.has_rate_limit or item.job.group_id)]
    others = [item for item in finished if item.job.has_rate_limit or item.job.group_id]
    if plain:
        keys = [item.job.dependents_key for item in plain]
        with worker.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                    if pipe.exists(*keys):
                        pipe.unwatch()
                        others = list(finished)
                        break
                    pipe.multi()
                    for item in plain:
                        _record_success(worker, pipe, item)
                    pipe.execute()
                    break
                except WatchError:
                    continue
    # One job that RQ cannot finish (say its dependents set names a record that does not parse, or
    # is not a set) must not leave the batch's other jobs unfinished: each is finished, then the
    # first such error is raised. A Redis outage is raised at once, for the caller to wait out.
    first_error: Exception | None = None
    for item in others:
        try:
            finalize_success(worker, item.job, item.queue, item.execution, item.return_value)
        except TRANSIENT_REDIS_ERRORS:
            raise
        except Exception as error:
            log.exception(
                "job %s: RQ's success bookkeeping failed; the batch's other jobs go on", item.job.id
            )
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def _record_success(worker: BaseWorker, pipe: Pipeline, item: FinishedJob) -> None:
    """Queue on ``pipe`` what RQ's success path writes for one job without dependents."""
    job, execution = item.job, item.execution
    job.ended_at = now()
    job.heartbeat(job.ended_at, 0, pipeline=pipe)
    job._result = item.return_value
    job._status = JobStatus.FINISHED
    worker.increment_successful_job_count(pipeline=pipe)
    worker.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[operator]
    result_ttl = job.get_result_ttl(worker.default_result_ttl)
    if result_ttl != 0:
        job._handle_success(
            result_ttl,
            pipeline=pipe,
            worker_name=worker.name,
            execution_id=execution.id,
            execution_started_at=execution.created_at,
            execution_ended_at=job.ended_at,
        )
    job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
    worker.cleanup_execution(job, pipeline=pipe, execution=execution)


def fill_missing_fields(job: Job, queue: Queue, job_retries: int, failure_ttl_s: int) -> dict[Any, Any]:
    """Defaults for the fields a job from another producer may lack; returns what was filled in.

    Without ``retries_left`` a job whose worker dies would fail at once; without ``failure_ttl`` it
    would stay failed for RQ's default of a year; without ``origin`` RQ could not re-queue it.
    """
    filled: dict[Any, Any] = {}
    if job.retries_left is None and job_retries > 0:
        job.retries_left = job_retries
        filled["retries_left"] = str(job_retries)
    if job.failure_ttl is None:
        job.failure_ttl = failure_ttl_s
        filled["failure_ttl"] = str(failure_ttl_s)
    if not job.origin:
        job.origin = queue.name
        filled["origin"] = queue.name
    return filled


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
