"""Pins every RQ internal that worker/rq_internals.py relies on: a new RQ that changes one fails here.

When this file fails after an RQ upgrade, read the new RQ's code for the named behaviour, adapt
worker/rq_internals.py (and only it), then update the pin.
"""

from __future__ import annotations

import importlib
import inspect
import time
import zlib
from pathlib import Path

import pytest
import rq
import rq.serializers
import rq.utils
from redis import Redis
from redis.connection import Connection
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry, clean_registries
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from sentiq.contract import CLASSIFY_TASK, MAX_JOB_DATA_BYTES
from sentiq.errors import UnreadableJobError
from worker.rq_internals import (
    PINNED_RQ_VERSION,
    SERIALIZER_RESOLVING_MODULES,
    FinishedJob,
    SentiqJob,
    SentiqQueue,
    StartingJob,
    dequeue_jobs,
    dequeued_job_error,
    finalize_success,
    finish_jobs,
    intermediate_queue_key,
    job_key,
    last_dequeued,
    remember_serializer_resolution,
    resolve_serializer_remembered,
    rq_dequeue_moves,
    safe_queue,
    start_jobs,
)


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_rq_is_the_pinned_release() -> None:
    assert rq.__version__ == PINNED_RQ_VERSION


def test_key_layout() -> None:
    queue = Queue("q", connection=Redis(), serializer=JSONSerializer)
    assert job_key("abc") == "rq:job:abc"
    assert queue.key == "rq:queue:q"
    assert intermediate_queue_key(queue) == "rq:queue:q:intermediate"
    assert StartedJobRegistry("q", connection=queue.connection).key == "rq:wip:q"
    assert FailedJobRegistry("q", connection=queue.connection).key == "rq:failed:q"
    assert Queue.redis_queues_keys == "rq:queues"


def test_private_methods_the_worker_calls() -> None:
    assert parameters(BaseWorker._finalize_success) == ["self", "job", "queue", "execution", "return_value"]
    assert parameters(BaseWorker._finalize_failure) == ["self", "job", "queue", "execution", "exc_info"]
    assert parameters(Queue._enqueue_job) == ["self", "job", "pipeline", "at_front", "unique"]
    assert parameters(BaseWorker.handle_job_failure) == [
        "self",
        "job",
        "queue",
        "started_job_registry",
        "exc_string",
        "execution",
    ]
    assert hasattr(BaseWorker, "max_connection_wait_time")
    # SentiqQueue.dequeue_any remembers what RQ's dequeue took, so a stop right after can put it back;
    # the worker turns busy (set_state assigns the state before its Redis write) before any stop
    # could strand the job.
    dequeue = inspect.getsource(BaseWorker.dequeue_job_and_maintain_ttl)
    assert "self.queue_class.dequeue_any(" in dequeue
    # ... and it remembers the id as soon as RQ's move or pop hands it over, before RQ builds the
    # queue and fetches the job: the class methods SentiqQueue wraps, called in this order.
    assert parameters(Queue.lmove) == ["connection", "queue_key", "timeout"]
    assert parameters(Queue.lpop) == ["queue_keys", "timeout", "connection"]
    assert parameters(Queue._fetch_dequeued_job) == [
        "connection",
        "queue_key",
        "job_id",
        "job_class",
        "serializer",
        "death_penalty_class",
    ]
    any_queue = inspect.getsource(Queue.dequeue_any)
    steps = ("cls.lmove(", "cls.lpop(", "cls._fetch_dequeued_job(")
    assert [any_queue.index(step) for step in steps] == sorted(any_queue.index(step) for step in steps)
    set_state = inspect.getsource(BaseWorker.set_state)
    assert set_state.index("self._state = state") < set_state.index("connection.hset(")
    # stop_requested reads the flag RQ's warm shutdown sets on a busy worker.
    assert "self._stop_requested = True" in inspect.getsource(BaseWorker._shutdown)
    assert "self._stop_requested: bool = False" in inspect.getsource(BaseWorker.__init__)
    # The steps of RQ's start and success bookkeeping that start_jobs and finish_jobs write in one go
    # (their effect is compared with RQ's own in the batched-bookkeeping tests below).
    assert parameters(Execution.create) == ["job", "ttl", "pipeline", "worker_name"]
    assert parameters(Job.prepare_for_execution) == ["self", "worker_name", "pipeline"]
    assert parameters(Job._handle_success) == [
        "self",
        "result_ttl",
        "pipeline",
        "worker_name",
        "execution_id",
        "execution_started_at",
        "execution_ended_at",
    ]
    assert parameters(Job.cleanup) == ["self", "ttl", "pipeline", "remove_from_queue"]
    assert parameters(BaseWorker.cleanup_execution) == ["self", "job", "pipeline", "execution"]
    assert parameters(BaseWorker.increment_total_working_time) == ["self", "job_execution_time", "pipeline"]
    success = inspect.getsource(BaseWorker.handle_job_success)
    for step in (
        "pipeline.watch(job.dependents_key)",
        "increment_successful_job_count",
        "job._handle_success(",
        "job.cleanup(",
        "self.cleanup_execution(",
        "release_slot(job)",
    ):
        assert step in success, step


def test_rq_resolves_serializers_as_remembered_in_every_module_on_the_workers_path() -> None:
    # Why it is remembered: RQ's check is an isinstance() against a runtime-checkable Protocol.
    assert "isinstance(serializer, Serializer)" in inspect.getsource(rq.serializers.resolve_serializer)
    # Every RQ module that resolves a serializer is patched, or never runs in a sentiq worker: the
    # definition itself, RQ's scheduler and cron (a sentiq worker runs neither) and RQ's own CLI.
    package = Path(rq.__file__).parent
    resolving = {
        ".".join(("rq", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
        if "resolve_serializer(" in path.read_text(encoding="utf-8")
    }
    not_on_the_workers_path = {"rq.serializers", "rq.scheduler", "rq.cron", "rq.cli.workers"}
    assert resolving == set(SERIALIZER_RESOLVING_MODULES) | not_on_the_workers_path
    remember_serializer_resolution()
    for name in SERIALIZER_RESOLVING_MODULES:
        module = importlib.import_module(name)
        assert "resolve_serializer(serializer)" in inspect.getsource(module), name
        assert module.resolve_serializer is resolve_serializer_remembered, name
    # The same answers as RQ's, and the same refusals, every time (a refusal is not remembered).
    for serializer in (JSONSerializer, "json", "rq.serializers.JSONSerializer", None):
        for _ in range(2):
            assert resolve_serializer_remembered(serializer) is rq.serializers.resolve_serializer(serializer)
    for wrong in (object(), {"not": "hashable"}):
        for _ in range(2):
            with pytest.raises(NotImplementedError):
                resolve_serializer_remembered(wrong)


def test_job_fields_sentiq_job_neutralises() -> None:
    job = Job(connection=Redis())
    for attribute in (
        "_success_callback_name",
        "_failure_callback_name",
        "_stopped_callback_name",
        "webhooks",
        "repeats_left",
        "retries_left",
        "failure_ttl",
        "origin",
    ):
        assert hasattr(job, attribute), attribute
    source = inspect.getsource(Job.restore)
    for field in (
        "success_callback_name",
        "failure_callback_name",
        "stopped_callback_name",
        "webhooks",
        "data",
    ):
        assert f"'{field}'" in source, field


def test_every_path_that_runs_callbacks_or_webhooks_fetches_through_the_job_class() -> None:
    """The paths SentiqJob makes safe: each must fetch jobs with the registry's or queue's job class."""
    cleanup = inspect.getsource(StartedJobRegistry.cleanup)
    assert "self.job_class.fetch" in cleanup
    assert "execute_failure_callback" in cleanup and "send_webhooks" in cleanup and "job.retry(" in cleanup
    assert "call_exception_handlers" in cleanup
    assert "job_class=queue.job_class" in inspect.getsource(clean_registries)
    intermediate = inspect.getsource(IntermediateQueue.cleanup)
    assert "queue.fetch_job" in intermediate and "worker.handle_job_failure" in intermediate
    fetch = inspect.getsource(Queue._fetch_dequeued_job)
    assert "job_cls.fetch" in fetch and "e.job_id = job_id" in fetch
    assert "def refresh" in inspect.getsource(Job) and "self.restore(" in inspect.getsource(Job.refresh)
    assert "import_attribute" in inspect.getsource(Job.failure_callback.fget)  # type: ignore[attr-defined]


def test_failed_registry_score_is_the_expiry_time(redis_client: Redis) -> None:
    name = f"pin-{time.time_ns()}"
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "a", "text": "b"}]})
    registry = FailedJobRegistry(name, connection=redis_client)
    try:
        registry.add(job, ttl=1000)
        score = redis_client.zscore(registry.key, job.id)
        assert score is not None and abs(score - (time.time() + 1000)) < 5
    finally:
        redis_client.delete(registry.key, job.key, queue.key)
        redis_client.srem("rq:queues", queue.key)


def test_sentiq_job_never_resolves_callbacks_or_functions(redis_client: Redis) -> None:
    job = SentiqJob(connection=redis_client, serializer=JSONSerializer)
    job._failure_callback_name = "os.abort"
    assert job.failure_callback is None and job.success_callback is None and job.stopped_callback is None
    assert SimpleWorker.job_class is not SentiqJob  # the plain worker is untouched; only sentiq's is safe


def test_rq_recompresses_job_data_in_to_dict() -> None:
    # Why SentiqJob.to_dict writes the stored bytes back: RQ compresses self.data on every save.
    source = inspect.getsource(Job.to_dict)
    assert "'data': zlib.compress(self.data)" in source
    assert "mapping = self.to_dict(" in inspect.getsource(Job.save)


def test_a_fetched_job_is_saved_with_its_data_bytes_unchanged_and_not_recompressed(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"pin-{time.time_ns()}"
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    reviews = [{"id": f"r{i}", "text": f"review number {i} " * 40} for i in range(300)]
    job = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews})
    try:
        stored = redis_client.hget(job.key, "data")
        fetched = SentiqJob.fetch(job.id, connection=redis_client, serializer=JSONSerializer)
        assert fetched.args[0]["reviews"] == reviews
        compressed: list[int] = []
        real_compress = zlib.compress
        monkeypatch.setattr(
            zlib, "compress", lambda data, *a: compressed.append(len(data)) or real_compress(data, *a)
        )
        fetched.started_at = rq.utils.now()
        fetched.save()
        assert redis_client.hget(job.key, "data") == stored
        assert max(compressed, default=0) < 1000  # meta and the like; never the reviews
        # A job whose data was changed after reading is written with the new data.
        fetched.data = JSONSerializer.dumps((CLASSIFY_TASK, None, ({"v": 1, "reviews": reviews[:1]},), {}))
        fetched.save()
        again = SentiqJob.fetch(job.id, connection=redis_client, serializer=JSONSerializer)
        assert again.args[0]["reviews"] == reviews[:1]
    finally:
        redis_client.delete(job.key, queue.key)
        redis_client.srem("rq:queues", queue.key)


# -- batched start and finish: what RQ writes, in fewer round trips --------------------------


def _plain_worker(queue: Queue) -> SimpleWorker:
    worker = SimpleWorker(
        [queue], connection=queue.connection, job_class=SentiqJob, serializer=JSONSerializer
    )
    worker.register_birth()  # type: ignore[no-untyped-call]
    return worker


def _enqueue(queue: Queue, count: int, **options: object) -> list[SentiqJob]:
    jobs = []
    for _ in range(count):
        queued = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "r", "text": "fine"}]}, **options)
        popped = queue.connection.lmove(queue.key, intermediate_queue_key(queue), "LEFT", "RIGHT")
        assert popped is not None and popped.decode() == queued.id
        jobs.append(SentiqJob.fetch(queued.id, connection=queue.connection, serializer=JSONSerializer))
    return jobs


def _footprint(redis: Redis, queue: Queue, worker: SimpleWorker, job_id: str) -> dict[str, object]:
    """Everything RQ keeps about one job, with ids and times left out so that two jobs compare."""
    fields = {key.decode(): value for key, value in redis.hgetall(job_key(job_id)).items()}
    ttl = redis.ttl(job_key(job_id))
    started = [
        member.decode()
        for member in redis.zrange(StartedJobRegistry(queue.name, connection=redis).key, 0, -1)
    ]
    executions = [key.decode() for key in redis.scan_iter(match=f"rq:execution:{job_id}:*")]
    worker_executions = [member.decode() for member in redis.smembers(f"rq:worker:{worker.name}:executions")]
    results = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).results()
    return {
        "fields": sorted(fields),
        "status": fields.get("status", b"").decode(),
        "worker_name": fields.get("worker_name") == worker.name.encode(),
        "data": redis.hget(job_key(job_id), "data"),
        "expires": "never" if ttl == -1 else ("soon" if ttl > 0 else ttl),
        "started_registry": sum(member.startswith(f"{job_id}:") for member in started),
        "finished_registry": redis.zscore(f"rq:finished:{queue.name}", job_id) is not None,
        "intermediate": job_id.encode() in redis.lrange(intermediate_queue_key(queue), 0, -1),
        "executions": len(executions),
        "worker_executions": sum(member.startswith(f"{job_id}:") for member in worker_executions),
        "results": [(result.type.name, result.return_value) for result in results],
    }


def _forget(redis: Redis, queue: Queue, worker: SimpleWorker, job_ids: list[str]) -> None:
    keys = [key for job_id in job_ids for key in redis.scan_iter(match=f"rq:*{job_id}*")]
    keys += [key for key in redis.scan_iter(match=f"rq:*{queue.name}*")]
    keys += [key for key in redis.scan_iter(match=f"rq:worker:{worker.name}*")]
    if keys:
        redis.delete(*keys)
    redis.srem("rq:queues", queue.key)
    redis.srem("rq:workers", worker.key)
    redis.srem(f"rq:workers:{queue.name}", worker.key)


def _count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now until ``monkeypatch.undo()``, one entry per packed command sent to Redis (a round trip)."""
    sent: list[int] = []
    real_send = Connection.send_packed_command

    def counting_send(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(1)
        real_send(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(Connection, "send_packed_command", counting_send)
    return sent


def test_batched_start_and_finish_write_what_rqs_own_bookkeeping_writes(redis_client: Redis) -> None:
    queue = Queue(
        f"pin-{time.time_ns()}", connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob
    )
    worker = _plain_worker(queue)
    ours, theirs = _enqueue(queue, 2, result_ttl=600, failure_ttl=60, ttl=900)
    try:
        execution = worker.prepare_execution(theirs)
        worker.prepare_job_execution(theirs, remove_from_intermediate_queue=True)
        [our_execution] = start_jobs(
            worker, [StartingJob(ours, queue, {})], remove_from_intermediate_queue=True
        )
        started = _footprint(redis_client, queue, worker, ours.id)
        assert started == _footprint(redis_client, queue, worker, theirs.id)
        assert started["status"] == "started" and started["started_registry"] == 1
        assert started["expires"] == "never" and not started["intermediate"]
        assert our_execution.id in worker.executions

        counts_before = redis_client.hmget(worker.key, "successful_job_count", "total_working_time")
        finalize_success(worker, theirs, queue, execution, {"reviews": 1})
        counts_between = redis_client.hmget(worker.key, "successful_job_count", "total_working_time")
        finish_jobs(worker, [FinishedJob(ours, queue, our_execution, {"reviews": 1})])
        counts_after = redis_client.hmget(worker.key, "successful_job_count", "total_working_time")

        finished = _footprint(redis_client, queue, worker, ours.id)
        assert finished == _footprint(redis_client, queue, worker, theirs.id)
        assert finished["status"] == "finished" and finished["finished_registry"]
        assert finished["expires"] == "soon" and finished["started_registry"] == 0
        assert finished["executions"] == 0 and finished["worker_executions"] == 0
        assert finished["results"] == [("SUCCESSFUL", {"reviews": 1})]
        assert our_execution.id not in worker.executions
        assert int(counts_after[0] or 0) - int(counts_between[0] or 0) == 1
        assert int(counts_between[0] or 0) - int(counts_before[0] or 0) == 1
        assert float(counts_after[1] or 0) > float(counts_between[1] or 0)
    finally:
        _forget(redis_client, queue, worker, [ours.id, theirs.id])


def test_filled_fields_are_written_with_the_start(redis_client: Redis) -> None:
    queue = Queue(
        f"pin-{time.time_ns()}", connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob
    )
    worker = _plain_worker(queue)
    [job] = _enqueue(queue, 1)
    try:
        start_jobs(
            worker, [StartingJob(job, queue, {"retries_left": "3"})], remove_from_intermediate_queue=False
        )
        assert redis_client.hget(job.key, "retries_left") == b"3"
        assert redis_client.lrange(intermediate_queue_key(queue), 0, -1) == [job.id.encode()]
    finally:
        _forget(redis_client, queue, worker, [job.id])


def test_a_batch_starts_in_one_round_trip_and_finishes_in_three(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(
        f"pin-{time.time_ns()}", connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob
    )
    worker = _plain_worker(queue)
    jobs = _enqueue(queue, 20)
    try:
        sent = _count_sends(monkeypatch)
        executions = start_jobs(
            worker, [StartingJob(job, queue, {}) for job in jobs], remove_from_intermediate_queue=True
        )
        assert len(sent) == 1
        sent.clear()
        finish_jobs(
            worker,
            [
                FinishedJob(job, queue, execution, None)
                for job, execution in zip(jobs, executions, strict=True)
            ],
        )
        assert len(sent) == 3  # WATCH, EXISTS, MULTI...EXEC
        monkeypatch.undo()
        assert {_footprint(redis_client, queue, worker, job.id)["status"] for job in jobs} == {"finished"}
    finally:
        monkeypatch.undo()
        _forget(redis_client, queue, worker, [job.id for job in jobs])


def test_a_job_with_dependents_is_finished_by_rq_and_its_dependents_are_enqueued(redis_client: Redis) -> None:
    queue = Queue(
        f"pin-{time.time_ns()}", connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob
    )
    worker = _plain_worker(queue)
    [parent, plain] = _enqueue(queue, 2)
    dependent = queue.enqueue(
        CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "d", "text": "x"}]}, depends_on=parent.id
    )
    try:
        assert dependent.get_status() == "deferred"
        executions = start_jobs(
            worker,
            [StartingJob(job, queue, {}) for job in (parent, plain)],
            remove_from_intermediate_queue=True,
        )
        finish_jobs(
            worker,
            [
                FinishedJob(job, queue, execution, None)
                for job, execution in zip((parent, plain), executions, strict=True)
            ],
        )
        assert dependent.get_status(refresh=True) == "queued"
        assert dependent.id.encode() in redis_client.lrange(queue.key, 0, -1)
        for job in (parent, plain):
            assert _footprint(redis_client, queue, worker, job.id)["status"] == "finished"
    finally:
        _forget(redis_client, queue, worker, [parent.id, plain.id, dependent.id])


# -- batched dequeue: RQ's non-blocking dequeue, many jobs in two round trips ---------------------


def _queue(redis_client: Redis, name: str) -> Queue:
    return Queue(name, connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob)


def _queued(queue: Queue, count: int, prefix: str) -> list[str]:
    payloads = [{"v": 1, "reviews": [{"id": f"{prefix}-{n}", "text": f"review {n}"}]} for n in range(count)]
    return [queue.enqueue(CLASSIFY_TASK, payload).id for payload in payloads]


def _forget_queues(redis: Redis, queues: list[Queue], job_ids: list[str]) -> None:
    keys = [key for queue in queues for key in redis.scan_iter(match=f"rq:*{queue.name}*")]
    keys += [job_key(job_id) for job_id in job_ids]
    if keys:
        redis.delete(*keys)
    redis.srem("rq:queues", *[queue.key for queue in queues])


def test_jobs_dequeued_together_are_what_rqs_one_by_one_dequeue_takes(redis_client: Redis) -> None:
    stamp = time.time_ns()
    ours, theirs = _queue(redis_client, f"deq-ours-{stamp}"), _queue(redis_client, f"deq-theirs-{stamp}")
    our_ids, their_ids = _queued(ours, 5, "a"), _queued(theirs, 5, "a")
    try:
        theirs_taken = [
            Queue.dequeue_any(
                [theirs], None, connection=redis_client, job_class=SentiqJob, serializer=JSONSerializer
            )
            for _ in range(5)
        ]
        dequeued = dequeue_jobs([ours], 5, redis_client)
        assert dequeued.taken == 5
        ours_taken = dequeued.jobs
        assert [job.id for job, _ in ours_taken] == our_ids
        assert [item[0].id for item in theirs_taken if item] == their_ids
        for (our_job, our_queue), their in zip(ours_taken, theirs_taken, strict=True):
            assert their is not None
            their_job, their_queue = their
            assert isinstance(our_job, SentiqJob) and our_queue is ours
            assert (our_job.func_name, our_job.args, our_job.origin, our_job.get_status(refresh=False)) == (
                their_job.func_name,
                their_job.args,
                their_job.origin.replace("theirs", "ours"),
                their_job.get_status(refresh=False),
            )
            assert our_queue.name == their_queue.name.replace("theirs", "ours")
        # The same place in Redis: out of the queue, into its intermediate list in order.
        assert redis_client.llen(ours.key) == redis_client.llen(theirs.key) == 0
        assert [m.decode() for m in redis_client.lrange(intermediate_queue_key(ours), 0, -1)] == our_ids
        assert [m.decode() for m in redis_client.lrange(intermediate_queue_key(theirs), 0, -1)] == their_ids
    finally:
        _forget_queues(redis_client, [ours, theirs], our_ids + their_ids)


def test_twenty_jobs_are_dequeued_in_two_round_trips(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _queue(redis_client, f"deq-{time.time_ns()}")
    ids = _queued(queue, 25, "b")
    dequeue_jobs([queue], 1, redis_client)  # RQ's cache of the server version is filled, as in a worker
    try:
        sent = _count_sends(monkeypatch)
        dequeued = dequeue_jobs([queue], 20, redis_client)
        monkeypatch.undo()
        assert len(sent) == 2
        assert dequeued.taken == 20 and [job.id for job, _ in dequeued.jobs] == ids[1:21]
        # Fewer waiting than asked for: what there is, and ``taken`` says the queue ran dry.
        rest = dequeue_jobs([queue], 20, redis_client)
        assert rest.taken == 4 and len(rest.jobs) == 4
        assert dequeue_jobs([queue], 20, redis_client) == (0, [])
    finally:
        monkeypatch.undo()
        _forget_queues(redis_client, [queue], ids)


def test_a_dequeued_job_that_is_gone_is_passed_over_and_an_unreadable_one_comes_back_as_its_error(
    redis_client: Redis,
) -> None:
    queue = _queue(redis_client, f"deq-{time.time_ns()}")
    good, gone, garbage, too_big, a_string = _queued(queue, 5, "c")
    redis_client.delete(job_key(gone))
    # Data that does not parse is read as RQ reads it (lazily); the worker refuses it when it admits it.
    redis_client.hset(job_key(garbage), "data", b"neither zlib nor JSON")
    redis_client.hset(job_key(too_big), "data", b"x" * (MAX_JOB_DATA_BYTES + 1))
    redis_client.delete(job_key(a_string))
    redis_client.set(job_key(a_string), "a string, not a hash")
    redis_client.rpush(queue.key, "a:b")  # outside RQ's job-id charset
    try:
        dequeued = dequeue_jobs([queue], 10, redis_client)
        assert dequeued.taken == 6
        jobs = [item for item in dequeued.jobs if not isinstance(item, Exception)]
        errors = [item for item in dequeued.jobs if isinstance(item, Exception)]
        assert [job.id for job, _ in jobs] == [good, garbage]
        assert all(isinstance(error, UnreadableJobError) for error in errors)
        named = [dequeued_job_error(error) for error in errors]
        assert named == [(too_big, queue), (a_string, queue), ("a:b", queue)]
        assert "more than the limit" in str(errors[0]) and "not a job hash" in str(errors[1])
        assert "job-id charset" in str(errors[2])
    finally:
        _forget_queues(redis_client, [queue], [good, gone, garbage, too_big, a_string])


@pytest.mark.parametrize("several", [False, True], ids=["moved", "popped"])
def test_rqs_dequeue_remembers_what_it_took_and_forgets_a_job_whose_record_is_gone(
    redis_client: Redis, several: bool
) -> None:
    stamp = time.time_ns()
    queue = _queue(redis_client, f"remember-{stamp}")
    queues = [queue, _queue(redis_client, f"remember-low-{stamp}")] if several else [queue]
    gone, kept, last = _queued(queue, 3, "r")
    redis_client.delete(job_key(gone), job_key(last))
    try:
        taken = SentiqQueue.dequeue_any(
            queues, None, connection=redis_client, job_class=SentiqJob, serializer=JSONSerializer
        )
        assert taken is not None and taken[0].id == kept  # the missing record was passed over
        remembered = last_dequeued()
        assert remembered is not None and remembered[0] == kept and remembered[1].key == queue.key
        # Only a missing record is left: RQ passes over it and finds nothing; nothing to put back.
        assert SentiqQueue.dequeue_any(queues, None, connection=redis_client, job_class=SentiqJob) is None
        assert last_dequeued() is None
    finally:
        _forget_queues(redis_client, queues, [gone, kept, last])


def test_with_several_queues_jobs_are_taken_in_queue_order_as_rq_takes_them(redis_client: Redis) -> None:
    stamp = time.time_ns()
    high, low = _queue(redis_client, f"deq-high-{stamp}"), _queue(redis_client, f"deq-low-{stamp}")
    high_ids, low_ids = _queued(high, 2, "h"), _queued(low, 3, "l")
    try:
        dequeued = dequeue_jobs([high, low], 4, redis_client)
        assert dequeued.taken == 4
        assert [(job.id, q.name) for job, q in dequeued.jobs] == [
            *((job_id, high.name) for job_id in high_ids),
            *((job_id, low.name) for job_id in low_ids[:2]),
        ]
        # Several queues: where RQ pops (LPOP), losing the ids should the worker die before the
        # jobs start, each id waits in its queue's intermediate list, as with one queue.
        assert [m.decode() for m in redis_client.lrange(intermediate_queue_key(high), 0, -1)] == high_ids
        assert [m.decode() for m in redis_client.lrange(intermediate_queue_key(low), 0, -1)] == low_ids[:2]
        assert [m.decode() for m in redis_client.lrange(low.key, 0, -1)] == low_ids[2:]
    finally:
        _forget_queues(redis_client, [high, low], high_ids + low_ids)


def test_rqs_non_blocking_dequeue_is_what_dequeue_jobs_repeats() -> None:
    # RQ: one queue on Redis >= 6.2, LMOVE to the intermediate list; several, LPOP in turn; then fetch.
    source = inspect.getsource(Queue.dequeue_any) + inspect.getsource(Queue.lmove)
    assert "get_version(connection) >= (6, 2, 0)" in source
    assert "connection.lmove(queue_key, intermediate_queue.key)" in source
    assert "cls.lpop(queue_keys, timeout, connection=connection)" in source
    assert "except NoSuchJobError:" in inspect.getsource(Queue._fetch_dequeued_job)
    assert parameters(rq.utils.get_version) == ["connection"]


def test_rqs_registry_clean_up_cleans_intermediate_lists_through_the_queue_sentiq_replaces_it_on() -> None:
    # SentiqQueue turns RQ's clean-up of its intermediate list off by overriding the property RQ's
    # registry clean-up reaches it through, and the clean-up it calls there.
    assert "queue.intermediate_queue.cleanup(self, queue)" in inspect.getsource(BaseWorker.clean_registries)
    assert isinstance(vars(Queue)["intermediate_queue"], property)
    assert parameters(IntermediateQueue) == ["queue_key", "connection"]
    assert parameters(IntermediateQueue.cleanup) == ["self", "worker", "queue"]
    queue = safe_queue(Queue("q", connection=Redis(), serializer=JSONSerializer))
    assert isinstance(queue, SentiqQueue) and queue.job_class is SentiqJob
    assert queue.intermediate_queue.key == intermediate_queue_key(queue)
    assert type(queue.intermediate_queue).cleanup is not IntermediateQueue.cleanup


def test_rq_moves_the_job_it_dequeues_only_from_one_queue_on_redis_6_2(redis_client: Redis) -> None:
    # What rq_dequeue_moves repeats, for a stop signal that lands while RQ reads the job it dequeued:
    # a popped job is put back in its queue, a moved one waits in the intermediate list for the sweep.
    assert "if len(queue_keys) == 1 and get_version(connection) >= (6, 2, 0):" in inspect.getsource(
        Queue.dequeue_any
    )
    queue = Queue("q", connection=redis_client)
    assert rq_dequeue_moves([queue], redis_client) == (rq.utils.get_version(redis_client) >= (6, 2, 0))
    assert not rq_dequeue_moves([queue, Queue("r", connection=redis_client)], redis_client)
