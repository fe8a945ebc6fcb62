"""The batched start and finish (``start_jobs`` / ``finish_jobs``) broken the way production breaks them.

Redis dies at exact points of a batch (the test's own append-only Redis, SIGKILLed and restarted),
a reply is lost after Redis applied the transaction, the watched dependents keys change on every
attempt, an attacker with Redis write access rewrites or deletes a batch's jobs mid-batch, and jobs
are cancelled or put back in the queue while their batch runs. Whatever happens: every review gets
exactly one answer, no job stays in the started registry, nothing a job names is imported, and the
worker keeps serving.

Points no real kill can hit (a reply lost after Redis applied the transaction, another client
writing between a WATCH and its EXEC) are reached by wrapping redis-py's own pipeline methods
around a real Redis; everything else is the real worker, the real RQ and the real tiny model.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from sentiq.contract import CLASSIFY_TASK
from sentiq.result_store import ResultStore
from sentiq.settings import QueueSettings, WorkerSettings
from tests.support.batch_worker import (
    assert_answered_once,
    assert_settled,
    enqueue,
    make_worker,
    review_list,
    serves_another_job,
    started_members,
)
from tests.support.killed_redis import Outage, outage  # noqa: F401 (a fixture)
from tests.worker.test_rq_internals import _enqueue, _footprint, _forget, _plain_worker
from tests.worker.test_trust import (
    MARKER_MODULE,
    WebhookSink,
    foreign_fields,
    marker_module,  # noqa: F401 (a fixture)
    webhook_server,  # noqa: F401 (a fixture)
    write_raw_job,
)
from worker import worker as worker_module
from worker.model import SentimentModel
from worker.rq_internals import (
    FinishedJob,
    SentiqJob,
    StartingJob,
    finish_jobs,
    intermediate_queue_key,
    start_jobs,
)
from worker.worker import SentiqWorker

#: WatchErrors a deterministic storm causes before it stops.
STORM = 6


# -- Redis dies at exact points of a batch (the test's own server, killed and restarted) ----------


def kill_at(point: str, outage: Outage, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Kill Redis once, at ``point`` of the worker's batch."""
    finishing = threading.Event()  # set while the worker's main thread is inside finish_jobs
    real_finish, real_start = finish_jobs, start_jobs
    real_watch: Callable[..., Any] = Pipeline.watch  # type: ignore[assignment]
    real_execute = Pipeline.execute

    def finish(*args: Any, **kwargs: Any) -> None:
        if point == "before the finish":
            outage.kill_once()
        finishing.set()
        try:
            real_finish(*args, **kwargs)
        finally:
            finishing.clear()

    def start(*args: Any, **kwargs: Any) -> Any:
        executions = real_start(*args, **kwargs)
        outage.kill_once()
        return executions

    def watch(self: Pipeline, *names: Any) -> Any:
        reply = real_watch(self, *names)
        if finishing.is_set():
            outage.kill_once()
        return reply

    def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        if finishing.is_set() and self.explicit_transaction:
            outage.kill_once()
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(worker_module, "finish_jobs", finish)
    if point == "after the start":
        monkeypatch.setattr(worker_module, "start_jobs", start)
    elif point == "after finish's WATCH":
        monkeypatch.setattr(Pipeline, "watch", watch)
    elif point == "right before finish's EXEC":
        monkeypatch.setattr(Pipeline, "execute", execute)


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["after the start", "before the finish", "after finish's WATCH", "right before finish's EXEC"]
)
def test_redis_dying_between_start_and_finish_or_inside_the_finish_loses_and_doubles_nothing(
    point: str,
    outage: Outage,  # noqa: F811
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Redis.from_url(outage.server.url, socket_timeout=5, socket_connect_timeout=1)
    try:
        queue = Queue("adversarial", connection=client, serializer=JSONSerializer)
        store = ResultStore(client, "adversarial", 600, 10_000)
        worker = make_worker(
            queue,
            store,
            tiny_model,
            WorkerSettings(device="cpu", precision="fp32", heartbeat_ttl_s=5),
            QueueSettings(),
        )
        jobs = [enqueue(queue, f"j{index}") for index in range(4)]
        ids = [f"j{index}-{review}" for index in range(4) for review in range(2)]
        kill_at(point, outage, monkeypatch)
        worker.work(burst=True)  # returns once the queue is empty: the worker rode the outage out
        assert outage.kills == 1 and outage.restarted.is_set(), point
        monkeypatch.undo()
        assert_settled(client, queue, store, jobs, ids)
        assert not worker.executions
        # Each job's retries are untouched: nothing took a live batch for an abandoned one.
        assert [client.hget(job.key, "retries_left") for job in jobs] == [b"2"] * len(jobs)
        assert serves_another_job(worker, queue, store)
    finally:
        client.close()


# -- a reply lost after Redis applied the transaction ---------------------------------------------


def test_a_finish_whose_exec_reply_is_lost_is_finished_once_and_answered_once(
    worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = [enqueue(queue, f"lost{index}") for index in range(3)]
    ids = [f"lost{index}-{review}" for index in range(3) for review in range(2)]
    finishing = threading.Event()
    real_finish = finish_jobs
    real_transaction = Pipeline._execute_transaction  # type: ignore[attr-defined]
    lost: list[int] = []

    def finish(*args: Any, **kwargs: Any) -> None:
        finishing.set()
        try:
            real_finish(*args, **kwargs)
        finally:
            finishing.clear()

    def applied_then_lost(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        finish_exec = finishing.is_set() and self.watching  # not a heartbeat's transaction
        reply = real_transaction(self, *args, **kwargs)
        if finish_exec and not lost:
            lost.append(1)
            # The state redis-py is in when the connection drops before EXEC's reply is read.
            self.watching = True
            raise RedisConnectionError("connection lost before EXEC's reply (test)")
        return reply

    monkeypatch.setattr(worker_module, "finish_jobs", finish)
    monkeypatch.setattr(Pipeline, "_execute_transaction", applied_then_lost)
    worker.work(burst=True)
    monkeypatch.undo()
    assert lost == [1]
    assert_settled(redis_client, queue, store, jobs, ids)
    assert serves_another_job(worker, queue, store)


@pytest.mark.slow
def test_a_start_whose_reply_is_lost_leaves_no_execution_that_makes_a_long_batch_look_abandoned(  # noqa: PLR0917
    worker: SentiqWorker,
    other_worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis applies the start, its reply is lost and the worker starts the batch again.

    The first attempt's executions must not survive: nothing heartbeats them, so once the heartbeat
    TTL passes (a pass longer than that is normal) any worker's clean-up would take the job for
    abandoned while it is still being classified, and with no retries left answer its reviews with
    errors before their labels are published.
    """
    job_id = write_raw_job(
        redis_client, queue.name, review_list("long", 2), status="queued", retries_left="0"
    )
    redis_client.rpush(queue.key, job_id)
    redis_client.sadd("rq:queues", queue.key)
    real_start = start_jobs
    real_classify = worker.classifier.classify
    lost: list[int] = []

    def start_then_lose_reply(*args: Any, **kwargs: Any) -> Any:
        executions = real_start(*args, **kwargs)
        if not lost:
            lost.append(1)
            raise RedisConnectionError("connection lost before EXEC's reply (test)")
        return executions

    def long_pass(*args: Any, **kwargs: Any) -> Any:
        time.sleep(worker.settings.heartbeat_ttl_s + 1.5)  # the other worker's clean-up runs late
        other_worker.run_maintenance_tasks()
        return real_classify(*args, **kwargs)

    monkeypatch.setattr(worker_module, "start_jobs", start_then_lose_reply)
    monkeypatch.setattr(worker.classifier, "classify", long_pass)
    worker.work(burst=True)
    monkeypatch.undo()
    assert lost == [1]
    assert redis_client.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert_answered_once(redis_client, store, ["long-0", "long-1"])
    assert started_members(redis_client, queue) == []


def test_a_start_tried_again_deletes_what_the_earlier_attempts_wrote(
    plain_queue: Queue, redis_client: Redis
) -> None:
    """The unit behind the test above: only the last attempt's executions are left, in one round trip."""
    worker = _plain_worker(plain_queue)
    jobs = _enqueue(plain_queue, 2)
    attempted: list[Execution] = []
    try:
        for _ in range(3):  # two attempts whose replies were lost, then the one that got its reply
            executions = start_jobs(
                worker,
                [StartingJob(job, plain_queue, {}) for job in jobs],
                remove_from_intermediate_queue=True,
                attempted=attempted,
            )
        assert len(attempted) == 6
        for job, execution in zip(jobs, executions, strict=True):
            footprint = _footprint(redis_client, plain_queue, worker, job.id)
            assert (
                footprint["started_registry"],
                footprint["executions"],
                footprint["worker_executions"],
            ) == (1, 1, 1)
            assert f"{job.id}:{execution.id}" in started_members(redis_client, plain_queue)
    finally:
        _forget(redis_client, plain_queue, worker, [job.id for job in jobs])


# -- a WatchError storm on the watched dependents keys --------------------------------------------


@pytest.fixture
def plain_queue(redis_client: Redis) -> Queue:
    return Queue(
        f"storm-{time.time_ns()}", connection=redis_client, serializer=JSONSerializer, job_class=SentiqJob
    )


def started_batch(queue: Queue, count: int) -> tuple[Any, list[FinishedJob]]:
    worker = _plain_worker(queue)
    jobs = _enqueue(queue, count)
    executions = start_jobs(
        worker, [StartingJob(job, queue, {}) for job in jobs], remove_from_intermediate_queue=True
    )
    return worker, [
        FinishedJob(job, queue, execution, {"reviews": 1})
        for job, execution in zip(jobs, executions, strict=True)
    ]


def blink(client: Redis, key: str) -> None:
    """Write ``key`` and delete it in one transaction: a WATCH on it fires, EXISTS never sees it."""
    with client.pipeline() as pipe:
        pipe.sadd(key, "ghost")
        pipe.delete(key)
        pipe.execute()


def successes(client: Redis, worker: Any) -> int:
    return int(client.hget(worker.key, "successful_job_count") or 0)


def touching_before_multi(
    monkeypatch: pytest.MonkeyPatch, touch: Callable[[int], None], times: int
) -> list[int]:
    """Another client writes ``touch(n)`` between finish's WATCH and its MULTI, the first ``times`` times."""
    real_multi = Pipeline.multi
    touched: list[int] = []
    inside = threading.Event()

    def multi(self: Pipeline) -> None:
        if self.watching and len(touched) < times and not inside.is_set():
            inside.set()
            try:
                touch(len(touched))
            finally:
                inside.clear()
            touched.append(1)
        real_multi(self)

    monkeypatch.setattr(Pipeline, "multi", multi)
    return touched


def test_a_watch_error_storm_ends_with_every_job_finished_once(
    plain_queue: Queue, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, finished = started_batch(plain_queue, 3)
    hot = finished[1].job.dependents_key
    try:

        def touch(_: int) -> None:
            blink(redis_client, hot)

        before = successes(redis_client, worker)
        touched = touching_before_multi(monkeypatch, touch, STORM)
        finish_jobs(worker, finished)
        monkeypatch.undo()
        assert len(touched) == STORM
        for item in finished:
            footprint = _footprint(redis_client, plain_queue, worker, item.job.id)
            assert footprint["status"] == "finished" and footprint["started_registry"] == 0
            assert footprint["results"] == [("SUCCESSFUL", {"reviews": 1})]  # aborted EXECs wrote nothing
        assert successes(redis_client, worker) - before == 3
        assert not redis_client.exists(hot)
    finally:
        monkeypatch.undo()
        _forget(redis_client, plain_queue, worker, [item.job.id for item in finished])


def test_a_dependent_added_during_the_storm_is_enqueued_and_no_job_is_lost(
    plain_queue: Queue, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, finished = started_batch(plain_queue, 3)
    parent = finished[0].job
    dependents: list[str] = []
    try:

        def touch(attempt: int) -> None:
            if attempt == 2:  # a real dependent arrives in the middle of the storm
                dependent = plain_queue.enqueue(
                    CLASSIFY_TASK, {"v": 1, "reviews": [{"id": "d", "text": "x"}]}, depends_on=parent.id
                )
                dependents.append(dependent.id)
            else:
                blink(redis_client, finished[2].job.dependents_key)

        touched = touching_before_multi(monkeypatch, touch, STORM)
        finish_jobs(worker, finished)
        monkeypatch.undo()
        assert len(touched) == STORM and len(dependents) == 1
        for item in finished:
            assert _footprint(redis_client, plain_queue, worker, item.job.id)["status"] == "finished"
        assert redis_client.hget(f"rq:job:{dependents[0]}", "status") == b"queued"
        assert dependents[0].encode() in redis_client.lrange(plain_queue.key, 0, -1)
    finally:
        monkeypatch.undo()
        _forget(redis_client, plain_queue, worker, [item.job.id for item in finished] + dependents)


def test_a_client_hammering_a_dependents_key_delays_the_finish_but_loses_and_doubles_nothing(
    plain_queue: Queue, redis_client: Redis
) -> None:
    worker, finished = started_batch(plain_queue, 3)
    hot = finished[0].job.dependents_key
    stop = threading.Event()

    def hammer() -> None:
        client = Redis(connection_pool=redis_client.connection_pool)
        while not stop.is_set():
            blink(client, hot)

    storm = threading.Thread(target=hammer, daemon=True)
    stopper = threading.Timer(0.5, stop.set)
    try:
        before = successes(redis_client, worker)
        storm.start()
        stopper.start()
        started = time.monotonic()
        finish_jobs(worker, finished)
        assert time.monotonic() - started < 10
        stop.set()
        storm.join(timeout=5)
        for item in finished:
            footprint = _footprint(redis_client, plain_queue, worker, item.job.id)
            assert footprint["status"] == "finished" and footprint["started_registry"] == 0
            assert len(footprint["results"]) == 1  # type: ignore[arg-type]
        assert successes(redis_client, worker) - before == 3
    finally:
        stopper.cancel()
        stop.set()
        storm.join(timeout=5)
        redis_client.delete(hot)
        _forget(redis_client, plain_queue, worker, [item.job.id for item in finished])


# -- an attacker rewrites a batch's jobs between the start and the finish -------------------------


def test_jobs_deleted_or_rewritten_mid_batch_do_not_stop_the_rest_of_the_batch(  # noqa: PLR0917
    worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    marker_module: Path,  # noqa: F811
    webhook_server: WebhookSink,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The jobs whose dependents are hostile come first: RQ's finalizer fails on them, and must not
    # take the finish of the jobs behind them down too.
    names = ["bad-dependent", "wrong-type", "deleted", "garbage", "hostile", "bad-fields", "plain"]
    jobs = {name: enqueue(queue, name) for name in names}
    ids = [f"{name}-{review}" for name in names for review in range(2)]
    unreadable = str(uuid.uuid4())
    real_classify = worker.classifier.classify

    hostile_names: dict[Any, Any] = foreign_fields(webhook_server.url)

    def tamper(*args: Any, **kwargs: Any) -> Any:
        redis_client.hset(
            f"rq:job:{unreadable}", mapping={"data": "x", "created_at": "not a date", "status": "x"}
        )
        redis_client.sadd(jobs["bad-dependent"].dependents_key, unreadable)
        redis_client.set(jobs["wrong-type"].dependents_key, "not a set")
        redis_client.delete(jobs["deleted"].key)
        redis_client.hset(jobs["garbage"].key, "data", b"\x00\xff neither zlib nor JSON")
        redis_client.hset(
            jobs["hostile"].key,
            mapping={"data": json.dumps([f"{MARKER_MODULE}.hit", None, [{}], {}]), **hostile_names},
        )
        redis_client.hset(
            jobs["bad-fields"].key,
            mapping={"created_at": "yesterday", "status": "no-such", "timeout": "forever"},
        )
        return real_classify(*args, **kwargs)

    monkeypatch.setattr(worker.classifier, "classify", tamper)
    try:
        worker.work(burst=True)
        monkeypatch.undo()
        time.sleep(0.2)
        assert not list(marker_module.iterdir()), "a job-named function or callback was imported or called"
        assert MARKER_MODULE not in sys.modules
        assert webhook_server.requests == [], "a job-named webhook was fetched"
        # Every review was classified from what was read at the start, and answered once.
        assert_answered_once(redis_client, store, ids)
        finishable = [name for name in names if name not in ("bad-dependent", "wrong-type")]
        assert {name: redis_client.hget(jobs[name].key, "status") for name in finishable} == dict.fromkeys(
            finishable, b"finished"
        )
        # Only the two jobs RQ could not finish are still started (heartbeats stopped: RQ's clean-up
        # takes them over; their reviews were answered, so that answers nothing twice).
        still_started = {member.split(":")[0] for member in started_members(redis_client, queue)}
        assert still_started == {jobs["bad-dependent"].id, jobs["wrong-type"].id}
        assert serves_another_job(worker, queue, store)
    finally:
        redis_client.delete(
            f"rq:job:{unreadable}", jobs["wrong-type"].dependents_key, jobs["bad-dependent"].dependents_key
        )


# -- jobs cancelled or put back in the queue while their batch runs -------------------------------


def test_jobs_cancelled_or_requeued_mid_batch_are_answered_once(  # noqa: PLR0917
    worker: SentiqWorker,
    other_worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["cancelled", "requeued", "pushed-back", "taken-for-abandoned", "plain"]
    jobs = {name: enqueue(queue, name) for name in names}
    ids = [f"{name}-{review}" for name in names for review in range(2)]
    real_classify = worker.classifier.classify
    calls: list[int] = []

    def meddle(*args: Any, **kwargs: Any) -> Any:
        if not calls:

            def fetch(name: str) -> SentiqJob:
                return SentiqJob.fetch(jobs[name].id, connection=redis_client, serializer=JSONSerializer)

            fetch("cancelled").cancel()
            queue.enqueue_job(fetch("requeued"))  # `rq requeue`-like: back in the queue, status queued
            redis_client.lpush(queue.key, jobs["pushed-back"].id)  # as a clean-up's LPUSH would
            # Another worker's clean-up takes one job for abandoned (its heartbeat looked expired).
            registry = StartedJobRegistry(queue.name, connection=redis_client)
            for member in started_members(redis_client, queue):
                if member.startswith(jobs["taken-for-abandoned"].id):
                    redis_client.zadd(registry.key, {member: time.time() - 60})
            other_worker.run_maintenance_tasks()
        calls.append(1)
        return real_classify(*args, **kwargs)

    monkeypatch.setattr(worker.classifier, "classify", meddle)
    worker.work(burst=True)  # the ids put back are passed over: their jobs have finished meanwhile
    monkeypatch.undo()
    assert len(calls) == 1
    assert_answered_once(redis_client, store, ids)
    assert started_members(redis_client, queue) == []
    assert redis_client.llen(queue.key) == 0 and redis_client.llen(intermediate_queue_key(queue)) == 0
    statuses = {name: redis_client.hget(jobs[name].key, "status") for name in names}
    assert all(status in (b"finished", b"canceled") for status in statuses.values()), statuses
    assert serves_another_job(worker, queue, store)
