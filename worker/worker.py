"""The RQ worker: one process, one model, jobs gathered into shared forward passes.

It subclasses RQ's :class:`~rq.SimpleWorker` because the model must load once per process and
CUDA cannot be used in a forked child. RQ still does the bookkeeping (started, finished and
failed registries, retries, abandoned-job clean-up, warm shutdown); sentiq replaces how a job is
executed and makes every path RQ takes safe:

- every queue and registry uses :class:`~worker.rq_internals.SentiqJob`, so no path (dequeue,
  gathering, registry clean-up, abandoned jobs, retries, failure handling) imports or calls what a
  job names or fetches a URL it names; a job must name :data:`CLASSIFY_TASK`, carry a JSON payload
  and no callbacks, or it is refused without running anything;
- when the queue holds more jobs, it takes several at once (up to ``max_gather_tokens`` at the
  model's max length per review) and classifies their reviews in shared forward passes; a lone
  job is held back waiting for company only when ``max_wait_ms`` asks for it (0 by default);
- with ``overlap_batches`` (on GPUs by default) a batch's passes run on a model thread while the
  main thread starts the next batch and publishes the last; all Redis work stays on the main thread;
- job heartbeats run on a background thread, so a long forward pass never looks like a dead worker;
- every review gets an answer: a label, or an error result when its job is refused, fails for the
  last time, or is abandoned with no retries left; a job's results are published once, however
  often RQ runs it;
- Redis outages of any length are ridden out: each step waits with capped backoff until Redis
  answers, a batch's results are kept and written when it is back, and no Redis error or
  unreadable record ends the worker.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from redis.exceptions import AuthenticationError
from rq import Queue, SimpleWorker
from rq.exceptions import AbandonedJobError, DeserializationError, NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import WorkerStatus

from sentiq.contract import CLASSIFY_TASK, JobPayload, Prediction, error_result_id
from sentiq.errors import ForbiddenTaskError, MalformedJobError, RedisAuthenticationError, UnreadableJobError
from sentiq.redis_connection import credentials_refused
from sentiq.settings import QueueSettings, WorkerSettings
from sentiq.worker_info import WorkerInfo, WorkerInfoPublisher
from worker.healthcheck import idle_heartbeat_interval
from worker.heartbeats import HeartbeatThread
from worker.metrics import WorkerMetrics, engine_label, queue_wait_seconds
from worker.model import PassStats
from worker.model_thread import ModelThread
from worker.processing import Classifier, JobOutcome
from worker.rq_internals import (
    PUBLISHED_FIELD,
    TRANSIENT_REDIS_ERRORS,
    FinishedJob,
    SentiqJob,
    SentiqQueue,
    StartingJob,
    dequeue_jobs,
    dequeued_job_error,
    drop_from_intermediate,
    fill_missing_fields,
    finalize_failure,
    finish_jobs,
    forget_dequeued,
    hold_in_intermediate,
    intermediate_job_ids,
    job_key,
    last_dequeued,
    put_back_at_front,
    raw_job_arguments,
    record_unreadable,
    remember_serializer_resolution,
    requeue_stranded,
    rq_dequeue_moves,
    safe_queue,
    start_jobs,
    started_job_ids,
    stop_requested,
    stranded_seconds,
)

log = logging.getLogger(__name__)

#: Longest wait between two attempts to reach Redis during an outage.
REDIS_BACKOFF_CAP_S = 5.0
#: With max_gather_tokens 0, a gathering takes this many passes' worth of tokens: enough that
#: the per-batch round trips are shared by many reviews, few enough that results come back soon.
GATHER_PASSES = 8
#: Most jobs one take of a gathering moves off the queue (one pipeline of LMOVEs, one of reads).
MAX_JOBS_PER_TAKE = 64
#: While a batch waits for more jobs (``max_wait_ms``), the queues are looked at this often.
GATHER_POLL_S = 0.001
#: Error results are written in chunks of this many, so one huge refused job never blocks Redis.
ERROR_RESULTS_PER_WRITE = 1_000

#: Statuses of a job that must not be started again when its id turns up in a queue.
_TAKEN = (JobStatus.STARTED, JobStatus.FINISHED)

_T = TypeVar("_T")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


@dataclass
class _Admitted:
    job: Job
    queue: Queue
    execution: Execution
    payload: JobPayload


#: A batch's predictions and pass statistics, or the error its classification raised.
_Outcome = tuple[list[JobOutcome], PassStats] | Exception


class _Running:
    """A started batch: its jobs, kept alive by the heartbeat thread until released, and its passes.

    With a model thread the passes start there at once (after those of batches started before);
    without one they run in :meth:`outcome`.
    """

    def __init__(
        self,
        admitted: list[_Admitted],
        classifier: Classifier,
        heartbeats: HeartbeatThread,
        beat: Callable[[], None],
        model_thread: ModelThread | None,
    ) -> None:
        self.admitted = admitted
        self.started = time.perf_counter()
        self._classifier = classifier
        self._heartbeats = heartbeats
        self._future = model_thread.submit(self._classify) if model_thread is not None else None
        # Kept alive from here: a submit that raised above leaves no heartbeat behind.
        self._token: int | None = heartbeats.keep(beat)

    def _classify(self) -> tuple[list[JobOutcome], PassStats]:
        return self._classifier.classify([(item.job.id, item.payload) for item in self.admitted])

    def done(self) -> bool:
        """Whether the passes have ended (always, before :meth:`outcome`, without a model thread)."""
        return self._future is None or self._future.done()

    def outcome(self) -> _Outcome:
        """The batch's predictions, or the exception its classification raised (waits for it)."""
        try:
            return self._classify() if self._future is None else self._future.result()
        except Exception as error:
            return error

    def release(self) -> None:
        """Stop the heartbeats of the batch's jobs (they are finished, failed or left to RQ)."""
        if self._token is not None:
            self._heartbeats.release(self._token)
            self._token = None


class SentiqWorker(SimpleWorker):
    """An RQ worker that runs only sentiq's classify task, in batches, on a preloaded model."""

    job_class = SentiqJob
    # RQ dequeues through it (queue_class.dequeue_any): it remembers the job a stop may interrupt.
    queue_class = SentiqQueue
    # RQ's own dequeue loop backs off this far at most while Redis is away.
    max_connection_wait_time = REDIS_BACKOFF_CAP_S

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        classifier: Classifier,
        settings: WorkerSettings,
        queue_settings: QueueSettings | None = None,
        metrics: WorkerMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        remember_serializer_resolution()  # RQ would check the serializer for every job it builds
        # Not defaults: a sentiq worker reads JSON only and fetches every job through SentiqJob.
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = SentiqJob
        kwargs.setdefault("maintenance_interval", settings.maintenance_interval_s)
        # RQ blocks on the queue for worker_ttl - 15 s and heartbeats in between; tie it to the
        # heartbeat TTL so an idle worker also looks for abandoned jobs that often.
        kwargs.setdefault("worker_ttl", idle_heartbeat_interval(settings) + 15)
        super().__init__([safe_queue(queue) for queue in queues], **kwargs)
        self.classifier = classifier
        self.settings = settings
        #: Set once Redis refused this worker's credentials: it stops, and the CLI exits 2.
        self.credentials_refused: RedisAuthenticationError | None = None
        self._heartbeats = HeartbeatThread(max(1.0, settings.heartbeat_ttl_s / 3))
        #: Whether batches overlap: passes on the model thread while the next batch starts.
        self.overlap_batches = settings.overlap_batches == "on" or (
            settings.overlap_batches == "auto" and classifier.model.device.startswith("cuda")
        )
        log.info(
            "batches %s (overlap_batches %s)",
            "overlap: passes on the model thread" if self.overlap_batches else "run one at a time",
            settings.overlap_batches,
        )
        self._model_thread = ModelThread()
        #: Most reviews one gathering takes: the token limit at the model's max length per review.
        gather_tokens = settings.max_gather_tokens or GATHER_PASSES * classifier.model.max_batch_tokens
        self.gather_reviews = max(1, gather_tokens // classifier.model.info.max_length)
        self.queue_settings = queue_settings or QueueSettings()
        # Always recorded (a few microseconds a batch); served only when the CLI asks for it.
        self.metrics = metrics or WorkerMetrics()
        model = classifier.model
        engine = engine_label(model.int8.version if model.int8 is not None else None)
        self.metrics.set_model_info(
            worker=self.name,
            model=classifier.model_id,
            device=model.device,
            precision=model.precision,
            engine=engine,
        )
        self.metrics.watch_gpu_memory(model.device)
        info = WorkerInfo(
            name=self.name,
            host=self.hostname or "",
            pid=self.pid or 0,
            model=classifier.model_id,
            device=model.device,
            precision=model.precision,
            engine=engine,
            started_at=time.time(),
        )
        # It expires with RQ's own worker record (worker_ttl + 60), renewed at each heartbeat.
        self.info = WorkerInfoPublisher(
            self.connection, self.queue_settings.key_prefix, info, ttl_s=self.worker_ttl + 60
        )
        # The job being refused right now: its final failure counts as refused, not failed.
        self._refusing: str | None = None
        # Whether the last gathering found the queue empty (the worker is about to wait).
        self._queue_ran_dry = False
        self.push_exc_handler(self._answer_abandoned)  # type: ignore[no-untyped-call]

    # -- liveness ---------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short on purpose: a killed worker's jobs are retried this many seconds after it died."""
        return self.settings.heartbeat_ttl_s

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat, plus touching the ready file that container healthchecks read.

        While Redis is away the heartbeat is skipped (and logged): the worker is alive and will
        reconnect, so the ready file is still touched. When Redis refuses the credentials it is
        not: the refusal is recorded (:meth:`_refused`), the ready file is left to go stale, and
        the next dequeue stops the worker.
        """
        try:
            super().heartbeat(timeout, pipeline)
            self.info.record(0)
        except AuthenticationError as error:
            self._refused(credentials_refused(error))
            return
        except TRANSIENT_REDIS_ERRORS as error:
            self.metrics.redis_reconnect("heartbeat")
            log.warning("worker heartbeat skipped, Redis unavailable: %s", error)
        touch_ready_file(self.settings.ready_file)

    def register_birth(self) -> None:
        """RQ's registration, waiting for Redis if it went away while the model loaded."""
        self._until_redis_answers("register the worker", super().register_birth)  # type: ignore[no-untyped-call]
        self._until_redis_answers("write the worker record", self.info.publish)

    def subscribe(self) -> None:
        """RQ's command channel subscription, waiting for Redis likewise."""
        self._until_redis_answers("subscribe to worker commands", super().subscribe)  # type: ignore[no-untyped-call]

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's state update, which must not end the worker while Redis is away."""
        try:
            super().set_state(state, pipeline)
        except TRANSIENT_REDIS_ERRORS as error:
            self.metrics.redis_reconnect("state")
            log.warning("worker state %r not recorded, Redis unavailable: %s", state, error)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's `rq suspend` check; a Redis outage is left to the dequeue's backoff."""
        try:
            super().check_for_suspension(burst)
        except TRANSIENT_REDIS_ERRORS as error:
            self.metrics.redis_reconnect("suspension check")
            log.warning("suspension check skipped, Redis unavailable: %s", error)

    def teardown(self) -> None:
        """Remove the ready file and sentiq's worker record before RQ unregisters the worker."""
        self._heartbeats.stop()
        self._model_thread.stop()
        if self.settings.ready_file is not None:
            self.settings.ready_file.unlink(missing_ok=True)
        try:
            self.info.remove()
            super().teardown()  # type: ignore[no-untyped-call]
        except TRANSIENT_REDIS_ERRORS as error:
            log.warning("could not unregister the worker, Redis unavailable: %s", error)

    def _record_answered(self, reviews: int, *, flush: bool = False) -> None:
        """Count answered reviews in the worker's record (``python -m producer status``)."""
        try:
            self.info.record(reviews, flush=flush)
        except TRANSIENT_REDIS_ERRORS as error:
            # The count is kept and written with the next record; the answers themselves are stored.
            self.metrics.redis_reconnect("worker record")
            log.warning("worker record not written, Redis unavailable: %s", error)

    # -- maintenance ------------------------------------------------------------------------

    def run_maintenance_tasks(self) -> None:
        """RQ's registry clean-up, after unreadable records are taken out of its way.

        RQ's clean-up stops at the first record it cannot read, which would leave every abandoned
        job behind it stranded; and no maintenance failure may end the worker.
        """
        try:
            for queue in self.queues:
                self._sweep(queue)
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        except TRANSIENT_REDIS_ERRORS as error:
            self.metrics.redis_reconnect("maintenance")
            log.warning("maintenance skipped, Redis unavailable: %s", error)
            self.last_cleaned_at = now()  # type: ignore[assignment]
        except StopRequested:
            raise
        except Exception:
            log.exception("maintenance pass failed; the worker carries on")
            self.last_cleaned_at = now()  # type: ignore[assignment]

    def _sweep(self, queue: Queue) -> None:
        """Fail unreadable records, and re-queue jobs that a dead worker dequeued but never started.

        The sweep alone cleans the queue's intermediate list (RQ's own clean-up of it, which drops or
        fails such jobs, is turned off: :class:`~worker.rq_internals.SentiqQueue`). A job that has
        sat there for a heartbeat TTL, which no live worker's gathering comes near, goes back to the
        front of the queue it was taken from, whatever queue its ``origin`` names, without spending
        a retry; the id of a job whose record is gone is dropped, as RQ's clean-up dropped it.
        """
        intermediate = intermediate_job_ids(queue)
        for job_id in dict.fromkeys(started_job_ids(queue, expired_only=True) + intermediate):
            try:
                job = SentiqJob.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
            except NoSuchJobError:
                if job_id in intermediate:
                    drop_from_intermediate(queue, job_id)
                continue
            except UnreadableJobError as error:
                self._refuse_unreadable(job_id, queue, error.reason)
                continue
            if job_id not in intermediate or job.get_status(refresh=False) == JobStatus.STARTED:
                continue
            if stranded_seconds(queue, job_id) >= self.settings.heartbeat_ttl_s and requeue_stranded(
                queue, job_id
            ):
                log.warning(
                    "job %s: its worker stopped before starting it; back at the front of the queue", job_id
                )

    def _refuse_unreadable(self, job_id: str, queue: Queue, reason: str) -> None:
        log.error("refused unreadable job %s: %s", job_id, reason)
        self.metrics.job_refused()
        # Its reviews are answered when its data can be read at all, before the record is replaced.
        review_ids = _review_ids_of_arguments(raw_job_arguments(self.connection, job_id))
        self._answer_reviews(job_id, review_ids, f"not classified: job refused: {reason}")
        record_unreadable(self.connection, job_id, queue, reason, self.queue_settings.failure_ttl_s)

    # -- dequeueing -------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, except that a job that cannot be read fails alone and the worker goes on,
        and that a stop signal before the job starts puts it back at the front of its queue.

        RQ would let the error end the worker's loop; one corrupt record must not stop a worker.
        The worker is busy from the moment the job is taken (after a popped one is held, see
        :meth:`_hold_if_popped`), so a stop signal after that lets its batch run.
        """
        while True:
            forget_dequeued()
            if self.credentials_refused is not None:
                raise StopRequested()  # RQ's loop ends quietly; the CLI reports the refusal
            try:
                dequeued = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                if dequeued is not None:
                    self._hold_if_popped(*dequeued)
                    self.set_state(WorkerStatus.BUSY)
                return dequeued
            except StopRequested as stop:
                # How RQ's signal handler ends an idle worker's wait (SIGTERM): raised while the
                # job just dequeued was read, or in RQ's steps after the dequeue, that job goes back.
                self._put_back_dequeued(dequeued_job_error(stop))
                raise
            except TRANSIENT_REDIS_ERRORS:
                raise
            except RedisAuthenticationError as refused:
                # RQ's loop ends quietly on a stop; the CLI reports the refusal (exit 2).
                self._refused(refused)
                raise StopRequested() from None
            except Exception as error:
                # An unreadable job (the error names it), or a step after the dequeue that failed.
                taken = dequeued_job_error(error)
                try:
                    if taken is None:
                        # Readable, but a step after its dequeue failed: back at the front for the
                        # next dequeue, not left in no list (popped) or for the sweep.
                        self._put_back_dequeued(None)
                    self._handle_dequeue_error(error)
                except StopRequested as stop:
                    # A stop while the job is refused (the worker idle) must not leave it half refused
                    # in no list (popped) or in the intermediate list: the refusal is done again.
                    self._put_back_dequeued(taken or dequeued_job_error(stop))
                    raise

    def _hold_if_popped(self, job: Job, queue: Queue) -> None:
        """Keep a job RQ popped in its queue's intermediate list until it starts (see
        :func:`hold_in_intermediate`)."""
        if not rq_dequeue_moves(self.queues, self.connection):
            self._until_redis_answers(
                "hold a dequeued job", functools.partial(hold_in_intermediate, queue, job.id)
            )

    def _put_back_dequeued(self, taken: tuple[str, Queue] | None) -> None:
        """Put the job whose dequeue a stop (or a failed step) interrupted back at the front of its
        queue, if any (``taken``, the id and queue an error named, else the last dequeue's job).

        RQ moved it into its queue's intermediate list (one queue), where it would wait a heartbeat
        TTL for the sweep, or popped it (several queues), when it would be in no list at all:
        never run and never answered.
        """
        named = taken or last_dequeued()
        if named is None:
            return
        job_id, queue = named
        self._until_redis_answers("put back a dequeued job", lambda: put_back_at_front(queue, job_id))
        # Forgotten once back: a stop before that puts it back again (a copy runs once), not never.
        forget_dequeued()
        log.warning(
            "job %s: the worker stopped (or a step failed) before starting it; back at the front of %s",
            job_id,
            queue.name,
        )

    def _handle_dequeue_error(self, error: Exception) -> None:
        named = dequeued_job_error(error)
        if named is None:
            log.exception("dequeue failed; trying again in 1 s")
            time.sleep(1)
            return
        job_id, queue = named
        reason = error.reason if isinstance(error, UnreadableJobError) else f"{type(error).__name__}: {error}"
        self._until_redis_answers(
            "refuse an unreadable job", lambda: self._refuse_unreadable(job_id, safe_queue(queue), reason)
        )

    def _gather_more(
        self, gathered: list[tuple[Job, Queue]], keep_waiting: Callable[[], bool] = lambda: True
    ) -> list[tuple[Job, Queue]]:
        """``gathered`` (the job RQ dequeued, or none) and the jobs waiting in the queues, up to the
        gathering's review limit.

        Jobs are taken several at a time (two round trips each time, :func:`dequeue_jobs`): as many
        as the jobs gathered so far suggest will fill the limit, but never more than have been
        gathered already, so one-review jobs are gathered in a handful of round trips while a
        surprise of big jobs overshoots the limit by at most the jobs of the last take. What the
        queues hold is taken without a clock: the limit alone bounds the work, and decoding big jobs
        must not cut a batch short (on a GPU that left batches of two jobs where fourteen waited).
        When the queues run dry first, the batch waits up to ``max_wait_ms`` from the start of the
        gathering for more (as a dynamic batcher's queue delay; 0, the default, never holds a job
        back), looking with one LMOVE a millisecond, and only while ``keep_waiting()`` holds. A job
        counts as at least one review, so jobs that carry none cannot make a gathering unbounded.
        """
        gathered_ids = {job.id for job, _ in gathered}
        self._queue_ran_dry = False
        reviews = sum(_gathered_reviews(job) for job, _ in gathered)
        # Ids taken that added no job (gone, unreadable, a duplicate) count as a review each: with
        # no clock, only the limit stops a queue full of them from holding the batch back.
        passed_over = 0
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while reviews + passed_over < self.gather_reviews:
            per_job = max(1.0, reviews / max(1, len(gathered)))
            wanted = min(
                math.ceil((self.gather_reviews - reviews - passed_over) / per_job),
                max(1, len(gathered) + passed_over),
                MAX_JOBS_PER_TAKE,
            )
            if self._queue_ran_dry:
                wanted = 1  # waiting for a job to arrive: one LMOVE a look, not a take's worth
            try:
                dequeued = dequeue_jobs(self._ordered_queues, wanted, self.connection)
            except AuthenticationError as error:
                self._refused(credentials_refused(error))  # not an outage: logged once, then it stops
                break
            except TRANSIENT_REDIS_ERRORS as error:
                self.metrics.redis_reconnect("gather jobs")
                log.warning("stopped gathering jobs, Redis unavailable: %s", error)
                break
            except StopRequested:
                raise
            except Exception:
                log.exception("stopped gathering jobs: the dequeue failed")
                break
            passed_over += dequeued.taken
            for item in dequeued.jobs:
                if isinstance(item, Exception):
                    self._handle_dequeue_error(item)
                    continue
                if item[0].id in gathered_ids:
                    # Its id was queued twice (pushed again by another client): one run is enough.
                    # This copy leaves the intermediate list it was moved into now: the start,
                    # refusal or pass-over only clears the list of the queue the gathered copy
                    # came from, and a copy left in another queue's list would be put back in that
                    # queue by the sweep and taken again.
                    log.warning("job %s: its id was queued more than once; it runs once", item[0].id)
                    copy_of, taken_from = item
                    self._until_redis_answers(
                        "drop a copy of a gathered job",
                        functools.partial(drop_from_intermediate, taken_from, copy_of.id, 1),
                    )
                    continue
                gathered_ids.add(item[0].id)
                gathered.append(item)
                reviews += _gathered_reviews(item[0])
                passed_over -= 1
            self._queue_ran_dry = dequeued.taken < wanted
            if self._queue_ran_dry:
                remaining = deadline - time.monotonic()
                # An empty gathering has no batch to hold back: the worker goes back to RQ's wait.
                if remaining <= 0 or not gathered or stop_requested(self) or not keep_waiting():
                    break
                time.sleep(min(GATHER_POLL_S, remaining))
        return gathered

    # -- execution --------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` together with whatever else is waiting, in shared forward passes.

        With :attr:`overlap_batches`, batch after batch while the queues hold jobs: each batch's
        passes run on the model thread while this thread starts the next batch and then publishes
        and finishes the last, so a fast device does not wait for Redis (``benchmarks.simulated_device``
        on 2 cores: C/B 0.54 one batch at a time, 0.70 overlapping). It returns to RQ's loop when
        the queues run dry, a stop is requested or maintenance is due.

        Nothing that happens to one batch ends the worker or harms the batch beside it: an
        unexpected error is logged, and that batch's jobs are left to RQ's abandoned-job recovery
        (or, gathered but not started, to the sweep); the other batch is still finished.
        """
        # Busy, so that a SIGTERM lets the batches finish instead of interrupting them.
        self.set_state(WorkerStatus.BUSY)
        running = self._unless_it_fails(lambda: self._start_batch(self._gather_more([(job, queue)])))
        while running is not None:
            # Started while the running batch is in its passes; the model thread takes it next.
            following = (
                self._unless_it_fails(functools.partial(self._start_following, running))
                if self._take_another_batch()
                else None
            )
            # Its heartbeats are released whatever happens (_finish_batch's finally).
            self._unless_it_fails(functools.partial(self._finish_batch, running, running.outcome()))
            running = following
        self.set_state(WorkerStatus.IDLE)

    @staticmethod
    def _unless_it_fails(step: Callable[[], _T]) -> _T | None:
        """``step()``, or None once an unexpected error it raised is logged (a stop goes through).

        Refused credentials are not unexpected: logged once where they were recorded
        (:meth:`_refused`), they end the worker at its next dequeue, and its jobs are recovered
        as those of any stopped worker.
        """
        try:
            return step()
        except StopRequested:
            raise
        except RedisAuthenticationError:
            return None
        except Exception:
            log.exception(
                "a batch step failed unexpectedly; jobs it started are recovered after their heartbeats "
                "expire, jobs it gathered by the sweep"
            )
            return None

    def _start_following(self, running: _Running) -> _Running | None:
        """Gather and start the batch that follows ``running`` while its passes run.

        Waiting for jobs (``max_wait_ms``) ends when those passes do: it must not hold back the
        running batch's results.
        """
        return self._start_batch(self._gather_more([], keep_waiting=lambda: not running.done()))

    def _take_another_batch(self) -> bool:
        """Whether to start the next batch before the running one is finished (overlap_batches)."""
        return (
            self.overlap_batches
            and not self._queue_ran_dry
            and not stop_requested(self)
            and not self.should_run_maintenance_tasks
        )

    def _start_batch(self, batch: Sequence[tuple[Job, Queue]]) -> _Running | None:
        """Start the jobs of ``batch`` that may run and set their passes going; None if none may.

        Jobs already taken are passed over and jobs wrong in themselves refused. With
        :attr:`overlap_batches` the passes start on the model thread (after those of batches
        started before); without, they run in :meth:`_Running.outcome`.
        """
        starting: list[tuple[StartingJob, JobPayload]] = []
        for job, queue in batch:
            if job.get_status(refresh=False) in _TAKEN:
                self._until_redis_answers(
                    "pass over a taken job", functools.partial(self._pass_over, job, queue)
                )
                continue
            item = self._until_redis_answers(
                "admit a job", functools.partial(self._admit_or_refuse, job, queue)
            )
            if item is not None:
                starting.append(item)
        if not starting:
            return None
        # Executions of start attempts whose reply was lost, deleted by the attempt that gets one.
        attempted: list[Execution] = []
        executions = self._until_redis_answers(
            "start jobs",
            functools.partial(
                start_jobs,
                self,
                [start for start, _ in starting],
                # Gathered jobs wait in their queue's intermediate list with several queues too
                # (dequeue_jobs), and so does a first job RQ popped (_hold_if_popped).
                remove_from_intermediate_queue=True,
                attempted=attempted,
            ),
        )
        admitted = [
            _Admitted(start.job, start.queue, execution, payload)
            for (start, payload), execution in zip(starting, executions, strict=True)
        ]
        self.metrics.observe_queue_waits(
            [queue_wait_seconds(item.job.enqueued_at, item.job.started_at or now()) for item in admitted]
        )
        return _Running(
            admitted,
            self.classifier,
            self._heartbeats,
            lambda: self._beat(admitted),
            self._model_thread if self.overlap_batches else None,
        )

    def _finish_batch(self, running: _Running, outcome: _Outcome) -> None:
        """Publish a classified batch's results and finish its jobs (or fail them all)."""
        admitted = running.admitted
        try:
            if isinstance(outcome, Exception):
                failure: ExcInfo = (type(outcome), outcome, outcome.__traceback__)
                log.error("batch of %d job(s) failed", len(admitted), exc_info=failure)
                self._fail_all(admitted, failure)
                return
            outcomes, stats = outcome
            marker = f"{self.name}:{admitted[0].execution.id}"
            try:
                self._until_redis_answers(
                    "publish results",
                    lambda: self.classifier.store.publish_once(
                        [
                            (item.job.key, result.predictions)
                            for item, result in zip(admitted, outcomes, strict=True)
                        ],
                        PUBLISHED_FIELD,
                        marker,
                    ),
                )
            except RedisAuthenticationError:
                raise  # failing the jobs would be refused too; they are retried once their heartbeats expire
            except Exception:
                exc_info = _exc_info()
                log.exception("could not publish the results of %d job(s)", len(admitted))
                self._fail_all(admitted, exc_info)
                return
            finished = [
                FinishedJob(item.job, item.queue, item.execution, result.summary)
                for item, result in zip(admitted, outcomes, strict=True)
            ]
            self._until_redis_answers("finish jobs", functools.partial(finish_jobs, self, finished))
        finally:
            running.release()
        reviews = sum(len(result.predictions) for result in outcomes)
        errors = sum(1 for result in outcomes for p in result.predictions if p.error is not None)
        elapsed = time.perf_counter() - running.started
        log.info(
            "batch jobs=%d reviews=%d errors=%d passes=%d padded_len=%d padded_tokens=%d ms=%.1f",
            len(admitted),
            reviews,
            errors,
            stats.passes,
            stats.max_padded_length,
            stats.padded_tokens,
            elapsed * 1000,
        )
        self.metrics.observe_batch(
            jobs=len(admitted),
            classified=reviews - errors,
            review_errors=errors,
            rows=stats.rows,
            pass_lengths=stats.lengths,
            padded_tokens=stats.padded_tokens,
            forward_seconds=stats.milliseconds / 1000,
            batch_seconds=elapsed,
        )
        self._record_answered(reviews, flush=self._queue_ran_dry)

    def _pass_over(self, job: Job, queue: Queue) -> None:
        """Leave alone a job that another worker runs or that has finished, whose id was queued again.

        Only another client puts such an id in a queue: RQ and sentiq set a job's status back to
        queued whenever they queue it again (a retry, a stranded job put back). Running it would
        run it twice (at the same time, for a job another worker runs); its reviews are answered,
        or will be by its worker, or, if that worker dies, by RQ's abandoned-job recovery.
        """
        log.warning(
            "job %s is already %s; its id was queued again and is passed over",
            job.id,
            job.get_status(refresh=False),
        )
        queue.intermediate_queue.remove(job.id)

    def _admit_or_refuse(self, job: Job, queue: Queue) -> tuple[StartingJob, JobPayload] | None:
        """The job ready to start, with its payload; ``None`` once a job wrong in itself is refused."""
        try:
            payload = self._admit(job)
        except (ForbiddenTaskError, MalformedJobError) as error:
            self._refuse(job, queue, self.prepare_execution(job), error)
            return None
        except TRANSIENT_REDIS_ERRORS:
            raise
        except Exception as error:
            # Whatever else a hostile payload makes decoding raise, the job is refused, not stranded.
            malformed = MalformedJobError(
                f"job {job.id}: payload does not decode: {type(error).__name__}: {error}"
            )
            self._refuse(job, queue, self.prepare_execution(job), malformed)
            return None
        filled = fill_missing_fields(
            job, queue, self.queue_settings.job_retries, self.queue_settings.failure_ttl_s
        )
        return StartingJob(job, queue, filled), payload

    def _admit(self, job: Job) -> JobPayload:
        """The job's payload, if it is a sentiq classify job; raises without running anything otherwise."""
        foreign = job.foreign_names if isinstance(job, SentiqJob) else []
        try:
            func_name = job.func_name
            args, kwargs = job.args, job.kwargs
        except DeserializationError as error:
            raise MalformedJobError(
                f"job {job.id}: payload is not JSON (pickled or corrupt data); "
                "sentiq workers only accept JSON jobs and never unpickle"
            ) from error
        if func_name != CLASSIFY_TASK:
            raise ForbiddenTaskError(
                f"job {job.id} names {func_name!r}; sentiq workers only run {CLASSIFY_TASK!r}"
            )
        if foreign:
            raise ForbiddenTaskError(
                f"job {job.id} names callbacks or webhooks ({', '.join(foreign)}); sentiq workers run none"
            )
        return JobPayload.decode(args, kwargs)

    def _refuse(self, job: Job, queue: Queue, execution: Execution, error: Exception) -> None:
        """Fail a job that is wrong in itself: no retries, kept for the failure TTL with its reason."""
        log.error("refused job %s: %s", job.id, error)
        self.metrics.job_refused()
        self._refusing = job.id
        job.retries_left = 0
        job.failure_ttl = self.queue_settings.failure_ttl_s
        job.started_at = now()
        queue.intermediate_queue.remove(job.id)
        try:
            finalize_failure(self, job, queue, execution, (type(error), error, error.__traceback__))
        finally:
            self._refusing = None

    def _fail_all(self, admitted: Sequence[_Admitted], exc_info: ExcInfo) -> None:
        """RQ's failure handling for each job: a retry at the front, or a final failure."""
        for item in admitted:
            self._until_redis_answers(
                "record a failed job",
                functools.partial(finalize_failure, self, item.job, item.queue, item.execution, exc_info),
            )

    def _beat(self, admitted: Sequence[_Admitted]) -> None:
        for item in admitted:
            self.maintain_heartbeats(item.job, item.execution)

    # -- final answers ----------------------------------------------------------------------

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's failure handling, after a job that will not run again has answered every review."""
        if job.should_retry:
            self.metrics.job_retried()
        else:
            if job.id != self._refusing:
                self.metrics.job_failed()
            self._answer_with_errors(job, _reason(exc_string))
        super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )

    def _answer_abandoned(
        self, job: Job, exc_type: type[BaseException], exc_value: BaseException, traceback: Any
    ) -> bool:
        """Exception handler: an abandoned job with no retries left answers every review."""
        if issubclass(exc_type, AbandonedJobError) and job.should_retry:
            self.metrics.job_retried()
        elif issubclass(exc_type, AbandonedJobError):
            self.metrics.job_failed()
            self._answer_with_errors(
                job, "not classified: the worker running this review stopped and the job has no retries left"
            )
        return True

    def _answer_with_errors(self, job: Job, message: str) -> None:
        """Give every review of ``job`` an error result, unless the job's results were published."""
        self._answer_reviews(job.id, _review_ids(job), message)

    def _answer_reviews(self, job_id: str, review_ids: list[tuple[int, object]], message: str) -> None:
        if not review_ids:
            return
        model_id = self.classifier.model_id
        predictions = [
            Prediction(id=error_result_id(job_id, index, review_id), model=model_id, error=message)
            for index, review_id in review_ids
        ]
        store = self.classifier.store
        first, rest = predictions[:ERROR_RESULTS_PER_WRITE], predictions[ERROR_RESULTS_PER_WRITE:]
        (written,) = store.publish_once([(job_key(job_id), first)], PUBLISHED_FIELD, f"{self.name}:failed")
        if written < 0:
            return
        for start in range(0, len(rest), ERROR_RESULTS_PER_WRITE):
            store.publish(rest[start : start + ERROR_RESULTS_PER_WRITE])
        self.metrics.job_reviews_answered_with_errors(len(predictions))
        self._record_answered(len(predictions))
        log.warning("job %s: %d review(s) answered with an error: %s", job_id, len(predictions), message)

    # -- Redis outages ----------------------------------------------------------------------

    def _until_redis_answers(self, step: str, action: Callable[[], _T]) -> _T:
        """Run ``action``, retrying with capped backoff for as long as Redis is unavailable."""
        try:
            return until_redis_answers(step, action, on_retry=lambda: self.metrics.redis_reconnect(step))
        except RedisAuthenticationError as refused:
            self._refused(refused)
            raise

    def _refused(self, error: RedisAuthenticationError) -> None:
        """Remember that Redis refused the credentials; the worker's next dequeue stops it.

        The password is read once, at start: only a restart (with the right one) can help. Jobs
        this worker started are retried by other workers once their heartbeats expire.
        """
        if self.credentials_refused is None:
            log.error("%s; this worker stops", error)
            self.credentials_refused = error


def until_redis_answers(
    step: str, action: Callable[[], _T], on_retry: Callable[[], None] | None = None
) -> _T:
    """Run ``action``, retrying with capped backoff (0.5 s doubling to 5 s) while Redis is away.

    Refused credentials raise :class:`~sentiq.errors.RedisAuthenticationError` at once.
    """
    delay = 0.5
    while True:
        try:
            return action()
        except AuthenticationError as error:
            raise credentials_refused(error) from None  # retrying cannot help
        except TRANSIENT_REDIS_ERRORS as error:
            if on_retry is not None:
                on_retry()
            log.warning("Redis unavailable while trying to %s (%s); retrying in %.1fs", step, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, REDIS_BACKOFF_CAP_S)


def _exc_info() -> ExcInfo:
    exc_type, exc_value, traceback = sys.exc_info()
    assert exc_type is not None and exc_value is not None
    return exc_type, exc_value, traceback


def _reason(exc_string: str) -> str:
    """A one-line reason for a review's error result, from RQ's formatted traceback."""
    lines = [line.strip() for line in exc_string.strip().splitlines() if line.strip()]
    return f"not classified: {lines[-1][:500]}" if lines else "not classified: the job failed"


def _gathered_reviews(job: Job) -> int:
    """What a job counts toward the gathering limit: its reviews (without trusting it: none when
    it does not decode), and at least one."""
    return max(1, len(_job_reviews(job)))


def _review_ids(job: Job) -> list[tuple[int, object]]:
    """(index, id) of each review a job carries, without trusting it (empty when it does not decode)."""
    return _ids_of(_job_reviews(job))


def _review_ids_of_arguments(args: object) -> list[tuple[int, object]]:
    """(index, id) of each review in a job's positional arguments, whatever their shape."""
    return _ids_of(_reviews_of_arguments(args))


def _job_reviews(job: Job) -> list[Any]:
    try:
        args = job.args
    except Exception:
        return []
    return _reviews_of_arguments(args)


def _reviews_of_arguments(args: object) -> list[Any]:
    first = args[0] if isinstance(args, (list, tuple)) and args else None
    reviews = first.get("reviews") if isinstance(first, dict) else None
    return reviews if isinstance(reviews, list) else []


def _ids_of(reviews: list[Any]) -> list[tuple[int, object]]:
    return [
        (index, review.get("id") if isinstance(review, dict) else None)
        for index, review in enumerate(reviews)
    ]


def touch_ready_file(path: Path | None) -> None:
    """Create or refresh the healthcheck's ready file."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
