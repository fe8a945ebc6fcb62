"""The RQ worker: one process, one model, jobs gathered into shared forward passes.

It subclasses RQ's :class:`~rq.SimpleWorker` because the model must load once per process and
CUDA cannot be used in a forked child. RQ still does the bookkeeping (started, finished and
failed registries, retries, abandoned-job clean-up, warm shutdown); sentiq replaces only how a
job is executed:

- it never imports or calls what a job names: a job must name :data:`CLASSIFY_TASK`, carry a
  JSON payload and no callbacks, or it fails without running anything;
- when the queue holds more jobs, it takes several at once (up to ``max_batch_size`` reviews,
  for at most ``max_wait_ms``) and classifies their reviews in shared forward passes; a lone job
  is never held back waiting for company.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError
from rq.executions import Execution
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import WorkerStatus

from sentiq.contract import CLASSIFY_TASK, JobPayload
from sentiq.errors import ForbiddenTaskError, MalformedJobError
from sentiq.settings import WorkerSettings
from worker.healthcheck import idle_heartbeat_interval
from worker.processing import Classifier

log = logging.getLogger(__name__)

_CALLBACK_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name", "webhooks")


@dataclass
class _Admitted:
    job: Job
    queue: Queue
    execution: Execution
    payload: JobPayload


class SentiqWorker(SimpleWorker):
    """An RQ worker that runs only sentiq's classify task, in batches, on a preloaded model."""

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        classifier: Classifier,
        settings: WorkerSettings,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("maintenance_interval", settings.maintenance_interval_s)
        # RQ blocks on the queue for worker_ttl - 15 s and heartbeats in between; tie it to the
        # heartbeat TTL so an idle worker also looks for abandoned jobs that often.
        kwargs.setdefault("worker_ttl", idle_heartbeat_interval(settings) + 15)
        super().__init__(list(queues), **kwargs)
        self.classifier = classifier
        self.settings = settings
        self._last_job_heartbeat = 0.0

    # -- liveness ---------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short on purpose: a killed worker's jobs are retried this many seconds after it died."""
        return self.settings.heartbeat_ttl_s

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat, plus touching the ready file that container healthchecks read."""
        super().heartbeat(timeout, pipeline)
        touch_ready_file(self.settings.ready_file)

    def teardown(self) -> None:
        """Remove the ready file before RQ unregisters the worker."""
        if self.settings.ready_file is not None:
            self.settings.ready_file.unlink(missing_ok=True)
        super().teardown()  # type: ignore[no-untyped-call]

    # -- dequeueing -------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, except that a job hash that cannot even be read fails alone.

        RQ would let the error end the worker's loop; one corrupt job must not stop a worker.
        """
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except (RedisConnectionError, RedisTimeoutError):
                raise
            except Exception as error:
                self._fail_unreadable(error)

    def _fail_unreadable(self, error: Exception) -> None:
        """Fail the job that RQ dequeued but could not read; re-raise ``error`` if it names none.

        RQ attaches ``job_id`` and ``queue`` to errors from fetching a dequeued job.
        """
        job_id, queue = getattr(error, "job_id", None), getattr(error, "queue", None)
        if job_id is None or queue is None:
            raise error
        message = f"unreadable job {job_id}: {type(error).__name__}: {error}"
        log.error("refused %s", message)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job_id)
            pipe.hset(f"rq:job:{job_id}", mapping={"status": "failed", "exc_info": message})
            pipe.zadd(FailedJobRegistry(queue.name, connection=self.connection).key, {job_id: time.time()})
            pipe.execute()

    def _gather_more(self, first: Job, queue: Queue) -> list[tuple[Job, Queue]]:
        """Jobs already waiting in the queues, up to the batch size and the max wait."""
        gathered: list[tuple[Job, Queue]] = [(first, queue)]
        reviews = _review_count(first)
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while reviews < self.settings.max_batch_size and time.monotonic() < deadline:
            try:
                more = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    None,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                )
            except (RedisConnectionError, RedisTimeoutError):
                raise
            except Exception as error:
                self._fail_unreadable(error)
                continue
            if more is None:
                break
            gathered.append(more)
            reviews += _review_count(more[0])
        return gathered

    # -- execution --------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` together with whatever else is waiting, in shared forward passes."""
        self._run_batch(self._gather_more(job, queue))
        self.set_state(WorkerStatus.IDLE)

    def _admit(self, job: Job) -> JobPayload:
        """The job's payload, if it is a sentiq classify job; raises without running anything otherwise."""
        named_callbacks = _strip_callbacks(job)
        if named_callbacks:
            self.connection.hdel(job.key, *_CALLBACK_FIELDS)
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
        if named_callbacks:
            raise ForbiddenTaskError(
                f"job {job.id} names callbacks or webhooks ({', '.join(named_callbacks)}); "
                "sentiq workers run none"
            )
        return JobPayload.decode(args, kwargs)

    def _run_batch(self, batch: Sequence[tuple[Job, Queue]]) -> None:
        admitted: list[_Admitted] = []
        for job, queue in batch:
            execution = self.prepare_execution(job)
            try:
                # Admission comes first: RQ's own preparation already reads the job's function name.
                payload = self._admit(job)
            except (ForbiddenTaskError, MalformedJobError) as error:
                # Retrying cannot fix a job that is wrong in itself.
                job.retries_left = 0
                job.started_at = now()
                log.error("rejected job %s: %s", job.id, error)
                queue.intermediate_queue.remove(job.id)
                self._finalize_failure(job, queue, execution, sys.exc_info())
                continue
            self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
            job.started_at = now()
            admitted.append(_Admitted(job, queue, execution, payload))
        if not admitted:
            return

        started = time.perf_counter()
        self._last_job_heartbeat = time.monotonic()
        try:
            outcomes, stats = self.classifier.classify(
                [(item.job.id, item.payload) for item in admitted],
                on_pass=lambda: self._keep_alive(admitted),
            )
            self.classifier.publish(outcomes)
        except Exception:
            exc_info = sys.exc_info()
            log.exception("batch of %d job(s) failed", len(admitted))
            message = f"worker error: {exc_info[1]!r}"
            for item in admitted:
                if not item.job.should_retry:
                    self.classifier.publish_failure(item.job.id, item.payload, message)
                self._finalize_failure(item.job, item.queue, item.execution, exc_info)
            return

        for item, outcome in zip(admitted, outcomes, strict=True):
            self._finalize_success(item.job, item.queue, item.execution, outcome.summary)
        log.info(
            "batch jobs=%d reviews=%d errors=%d passes=%d padded_len=%d padded_tokens=%d ms=%.1f",
            len(admitted),
            sum(len(outcome.predictions) for outcome in outcomes),
            sum(1 for outcome in outcomes for p in outcome.predictions if p.error is not None),
            stats.passes,
            stats.max_padded_length,
            stats.padded_tokens,
            (time.perf_counter() - started) * 1000,
        )

    def _keep_alive(self, admitted: Sequence[_Admitted]) -> None:
        """Refresh the jobs' heartbeats during a long batch, so they are not taken for abandoned."""
        if time.monotonic() - self._last_job_heartbeat < self.settings.heartbeat_ttl_s / 3:
            return
        self._last_job_heartbeat = time.monotonic()
        for item in admitted:
            self.maintain_heartbeats(item.job, item.execution)


def _review_count(job: Job) -> int:
    """How many reviews a job carries, without trusting it (0 when it does not decode)."""
    try:
        args = job.args
        reviews = args[0].get("reviews") if args and isinstance(args[0], dict) else None
    except Exception:
        return 0
    return len(reviews) if isinstance(reviews, list) else 0


def _strip_callbacks(job: Job) -> list[str]:
    """Drop any callbacks and webhooks a job names, so RQ never imports or calls them."""
    named = [
        name
        for name, value in (
            ("on_success", job._success_callback_name),
            ("on_failure", job._failure_callback_name),
            ("on_stopped", job._stopped_callback_name),
            ("webhooks", job.webhooks),
        )
        if value
    ]
    job._success_callback_name = job._failure_callback_name = job._stopped_callback_name = None
    # None, not UNEVALUATED: RQ then treats the callbacks as absent and never imports a name.
    job._success_callback = None  # type: ignore[assignment]
    job._failure_callback = None  # type: ignore[assignment]
    job._stopped_callback = None
    job.webhooks = []
    return named


def touch_ready_file(path: Path | None) -> None:
    """Create or refresh the healthcheck's ready file."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
