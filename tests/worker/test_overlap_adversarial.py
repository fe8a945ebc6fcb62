"""Overlapping batches (``overlap_batches="on"``) broken the way production and an attacker break them.

Batch N is in its passes on the model thread while the main thread gathers and starts batch N+1,
then publishes and finishes N. Redis dies at those points, a SIGTERM or a cold stop lands there,
a batch's bookkeeping fails, hostile jobs sit in the following gathering, and maintenance falls
due mid-stream. Whatever happens: every review is answered exactly once, no job is left started,
in an intermediate list or queued, nothing runs twice at once, and the worker keeps serving.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from benchmarks.simulated_device import SIMULATION_PATH
from producer import Client
from sentiq.contract import CLASSIFY_TASK
from sentiq.result_store import ResultStore
from sentiq.settings import QueueSettings, Settings, WorkerSettings
from tests.conftest import REPO_ROOT
from tests.support.batch_worker import (
    assert_answered_once,
    assert_settled,
    enqueue,
    make_worker,
    serves_another_job,
    started_members,
)
from tests.support.killed_redis import Outage, outage  # noqa: F401 (a fixture)
from tests.support.workers import WorkerProcess, running_workers
from worker import worker as worker_module
from worker.model import SentimentModel
from worker.model_thread import ModelThread
from worker.rq_internals import intermediate_job_ids, intermediate_queue_key
from worker.worker import SentiqWorker


def overlapping(
    queue: Queue,
    store: ResultStore,
    model: SentimentModel,
    settings: WorkerSettings,
    *,
    reviews_per_batch: int = 2,
    more_queues: tuple[Queue, ...] = (),
) -> SentiqWorker:
    """A worker with overlapping batches that gathers ``reviews_per_batch`` reviews a batch."""
    tokens = reviews_per_batch * model.info.max_length
    changed = settings.model_copy(update={"overlap_batches": "on", "max_gather_tokens": tokens})
    return make_worker(queue, store, model, changed, QueueSettings(), more_queues=more_queues)


def counting_classify(
    worker: SentiqWorker, during: Callable[[list[str]], None] = lambda _: None
) -> list[str]:
    """The id of each job classified, once per time; ``during`` runs (on the model thread) first."""
    seen: list[str] = []
    real = worker.classifier.classify

    def classify(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        ids = [job_id for job_id, _ in jobs]
        seen.extend(ids)
        during(ids)
        return real(jobs, *args, **kwargs)

    worker.classifier.classify = classify  # type: ignore[method-assign]
    return seen


def at_call(  # noqa: PLR0917
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, nth: int, after: bool, act: Callable[[], None]
) -> list[int]:
    """Run ``act`` before (or right after) the ``nth`` call of ``target.<name>`` (1-based)."""
    real = getattr(target, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == nth and not after:
            act()
        result = real(*args, **kwargs)
        if len(calls) == nth and after:
            act()
        return result

    monkeypatch.setattr(target, name, wrapped)
    return calls


#: Points of the main thread's loop while two batches are in flight (one review-pair job a batch):
#: (what is called there, on which object, its nth call, right after it?). Batch 2's take is
#: dequeue_jobs' first call (batch 1's first job comes from RQ's own dequeue).
POINTS: dict[str, tuple[str, str, int, bool]] = {
    "batch 2 taken, batch 1 in its passes": ("worker", "dequeue_jobs", 1, True),
    "batch 2 started, batch 1 in its passes": ("worker", "start_jobs", 2, True),
    "batch 1 publishing, batch 2 in its passes": ("store", "publish_once", 1, False),
    "batch 1 finishing, batch 2 in its passes": ("worker", "finish_jobs", 1, False),
}


def hit(
    monkeypatch: pytest.MonkeyPatch, point: str, store: ResultStore, act: Callable[[], None]
) -> list[int]:
    where, name, nth, after = POINTS[point]
    return at_call(monkeypatch, worker_module if where == "worker" else store, name, nth, after, act)


@pytest.fixture
def ovl(settings: Settings, queue: Queue, store: ResultStore, tiny_model: SentimentModel) -> SentiqWorker:
    """A worker of the test's queue with overlapping batches, one two-review job a batch."""
    return overlapping(queue, store, tiny_model, settings.worker)


@pytest.fixture
def restore_signals() -> Iterator[None]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture
def client(outage: Outage) -> Iterator[Redis]:  # noqa: F811
    connection = Redis.from_url(outage.server.url, socket_timeout=5, socket_connect_timeout=1)
    yield connection
    connection.close()


# -- the model thread -----------------------------------------------------------------------------


def test_the_model_thread_runs_calls_in_order_and_hands_every_exception_back() -> None:
    thread = ModelThread()
    ran: list[int] = []

    def call(n: int) -> int:
        ran.append(n)
        if n == 3:
            raise ValueError("bad review")
        if n == 5:
            raise KeyboardInterrupt  # a BaseException: handed over, the thread lives on
        return n

    futures = [thread.submit(lambda n=n: call(n)) for n in range(8)]
    assert [f.exception(timeout=10) is None for f in futures] == [True] * 3 + [False, True, False, True, True]
    assert isinstance(futures[5].exception(), KeyboardInterrupt)
    assert ran == list(range(8)) and futures[7].result() == 7
    thread.stop()


def test_a_model_thread_stopped_and_used_again_never_runs_two_calls_at_once() -> None:
    thread = ModelThread()
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    most: list[int] = []
    order: list[str] = []

    def call(name: str, wait: bool = False) -> None:
        with lock:
            running[0] += 1
            most.append(running[0])
        if wait:
            release.wait(10)
        time.sleep(0.05)
        order.append(name)
        with lock:
            running[0] -= 1

    first = thread.submit(lambda: call("a", wait=True))
    second = thread.submit(lambda: call("b"))
    thread.stop()  # a worker's teardown, while a batch is still in its passes
    third = thread.submit(lambda: call("c"))  # the same worker object works again
    time.sleep(0.2)
    release.set()
    for future in (first, second, third):
        future.result(timeout=10)
    thread.stop()
    assert max(most) == 1 and order == ["a", "b", "c"]


# -- a batch's failure harms no other batch -------------------------------------------------------


def test_a_finish_that_fails_leaves_the_batch_started_behind_it_unharmed(
    ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    culprit, *innocent = [enqueue(queue, f"f{n}", retries=1) for n in range(3)]
    # Another client made the culprit's dependents key a string: RQ's success bookkeeping fails on it.
    redis_client.set(culprit.dependents_key, "not a set")
    seen = counting_classify(worker)
    worker.work(burst=True)
    assert seen[:2] == [culprit.id, innocent[0].id]
    for job in innocent:
        assert redis_client.hget(job.key, "status") == b"finished", job.id
    stored = store.fetch([f"f{n}-{i}" for n in (1, 2) for i in range(2)])
    assert len(stored) == 4 and all(p.ok for p in stored.values())
    assert [m for m in started_members(redis_client, queue) if not m.startswith(culprit.id)] == []


def test_a_start_that_fails_leaves_the_batch_in_its_passes_unharmed(
    ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    first, second = enqueue(queue, "s0", retries=1), enqueue(queue, "s1", retries=1)
    real = worker._admit_or_refuse

    def admit(job: Any, job_queue: Queue) -> Any:
        if job.id == second.id:
            raise RuntimeError("unexpected error while starting the next batch (test)")
        return real(job, job_queue)

    worker._admit_or_refuse = admit  # type: ignore[method-assign]
    worker.work(burst=True)
    assert redis_client.hget(first.key, "status") == b"finished"
    assert started_members(redis_client, queue) == []
    stored = store.fetch(["s0-0", "s0-1"])
    assert len(stored) == 2 and all(p.ok for p in stored.values())
    assert intermediate_job_ids(queue) == [second.id]  # the sweep's to put back


# -- Redis dies, a warm or a cold stop lands, while two batches are in flight ----------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_redis_dying_while_two_batches_are_in_flight_loses_and_doubles_nothing(
    point: str,
    outage: Outage,  # noqa: F811
    client: Redis,
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = Queue("ovl-outage", connection=client, serializer=JSONSerializer)
    store = ResultStore(client, "ovl-outage", 600, 10_000)
    worker = overlapping(queue, store, tiny_model, WorkerSettings(device="cpu", heartbeat_ttl_s=5))
    jobs = [enqueue(queue, f"k{n}") for n in range(5)]
    classified = counting_classify(worker)
    calls = hit(monkeypatch, point, store, outage.kill_once)
    worker.work(burst=True)  # returns once the queue is empty: the worker rode the outage out
    monkeypatch.undo()
    assert outage.kills == 1 and outage.restarted.is_set() and calls, point
    assert sorted(classified) == sorted(job.id for job in jobs)  # each classified once
    assert_settled(client, queue, store, jobs, [f"k{n}-{i}" for n in range(5) for i in range(2)])
    # Nothing took a live batch for an abandoned one: every job's retries are untouched.
    assert [client.hget(job.key, "retries_left") for job in jobs] == [b"2"] * 5
    assert serves_another_job(worker, queue, store)


@pytest.mark.parametrize("point", list(POINTS))
def test_a_sigterm_while_two_batches_are_in_flight_finishes_both_and_takes_no_more(  # noqa: PLR0917
    ovl: SentiqWorker,
    point: str,
    queue: Queue,
    store: ResultStore,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: None,
) -> None:
    worker = ovl
    jobs = [enqueue(queue, f"t{n}") for n in range(5)]
    hit(monkeypatch, point, store, lambda: worker.request_stop(signal.SIGTERM, None))
    worker.work(burst=True)
    monkeypatch.undo()
    statuses = [redis_client.hget(job.key, "status") for job in jobs]
    assert statuses == [b"finished"] * 2 + [b"queued"] * 3, point
    assert queue.get_job_ids() == [job.id for job in jobs[2:]]
    assert started_members(redis_client, queue) == [] and intermediate_job_ids(queue) == []
    assert_answered_once(redis_client, store, [f"t{n}-{i}" for n in range(2) for i in range(2)])


@pytest.mark.parametrize("point", list(POINTS))
def test_a_cold_stop_with_two_batches_in_flight_leaves_them_to_rq_and_each_is_answered_once(  # noqa: PLR0917
    ovl: SentiqWorker,
    point: str,
    queue: Queue,
    store: ResultStore,
    redis_client: Redis,
    other_worker: SentiqWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = ovl
    jobs = [enqueue(queue, f"c{n}") for n in range(5)]

    def cold_stop() -> None:
        raise SystemExit  # what RQ's handler of a second SIGTERM raises, wherever the main thread is

    hit(monkeypatch, point, store, cold_stop)
    with pytest.raises(SystemExit):
        worker.work(burst=True)
    monkeypatch.undo()
    # The worker's threads are ended or ending; none keeps the process alive.
    assert worker._heartbeats._thread is None
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("sentiq"))
    in_flight = [m.split(":")[0] for m in started_members(redis_client, queue)]
    assert len(in_flight) == (1 if "taken" in point else 2)  # batch 2 taken: only held
    # Their heartbeats lapse; another worker's clean-up takes them for abandoned and retries them.
    registry = StartedJobRegistry(queue.name, connection=redis_client)
    for member in started_members(redis_client, queue):
        redis_client.zadd(registry.key, {member: time.time() - 60})
    for job_id in intermediate_job_ids(queue):
        redis_client.set(queue.intermediate_queue.get_first_seen_key(job_id), time.time() - 60)
    other_worker.run_maintenance_tasks()
    other_worker.work(burst=True)
    assert_settled(redis_client, queue, store, jobs, [f"c{n}-{i}" for n in range(5) for i in range(2)])
    retries = [redis_client.hget(job.key, "retries_left") for job in jobs]
    assert sorted(retries) == sorted([b"1"] * len(in_flight) + [b"2"] * (5 - len(in_flight)))


# -- heartbeats, hostile jobs and maintenance in a stream of batches -------------------------------


def test_a_beat_right_after_the_finish_puts_no_finished_job_back_in_the_started_registry(
    monkeypatch: pytest.MonkeyPatch, ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    jobs = [enqueue(queue, f"b{n}") for n in range(4)]
    real_finish = worker_module.finish_jobs

    def finish_then_beat(*args: Any, **kwargs: Any) -> None:
        real_finish(*args, **kwargs)
        # The heartbeat thread's beat of every kept batch, the finished one included, lands now.
        for beat in list(worker._heartbeats._beats.values()):
            beat()

    monkeypatch.setattr(worker_module, "finish_jobs", finish_then_beat)
    worker.work(burst=True)
    assert_settled(redis_client, queue, store, jobs, [f"b{n}-{i}" for n in range(4) for i in range(2)])
    assert worker._heartbeats._beats == {}


def test_hostile_and_repeated_jobs_in_the_following_batch_are_refused_or_passed_over_once(
    ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    first = enqueue(queue, "h0")
    # Queued again by another client: taken by the following gathering while `first` runs.
    redis_client.rpush(queue.key, first.id)
    # RQ's default serializer (pickle) and a foreign task name: refused, never run or unpickled.
    pickled = Queue(queue.name, connection=redis_client).enqueue(CLASSIFY_TASK, {"v": 1, "reviews": []}).id
    foreign = queue.enqueue("os.system", "true").id
    last = enqueue(queue, "h1")
    seen = counting_classify(worker)
    worker.work(burst=True)
    assert sorted(seen) == sorted([first.id, last.id])
    assert_answered_once(redis_client, store, ["h0-0", "h0-1", "h1-0", "h1-1"])
    assert [redis_client.hget(f"rq:job:{j}", "status") for j in (pickled, foreign)] == [b"failed"] * 2
    assert redis_client.llen(queue.key) == 0 and redis_client.llen(intermediate_queue_key(queue)) == 0
    assert started_members(redis_client, queue) == []


def test_a_model_that_always_fails_answers_every_review_once_with_an_error(
    ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    jobs = [enqueue(queue, f"x{n}", retries=1) for n in range(4)]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device lost (test)")

    worker.classifier.classify = broken  # type: ignore[method-assign]
    worker.work(burst=True)
    ids = [f"x{n}-{i}" for n in range(4) for i in range(2)]
    assert_answered_once(redis_client, store, ids, labels=False)
    assert all("device lost" in (p.error or "") for p in store.fetch(ids).values())
    assert [redis_client.hget(job.key, "status") for job in jobs] == [b"failed"] * 4
    assert started_members(redis_client, queue) == [] and redis_client.llen(queue.key) == 0


def test_maintenance_falling_due_mid_stream_on_several_queues_still_recovers_stranded_jobs(
    settings: Settings,
    store: ResultStore,
    tiny_model: SentimentModel,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    high, low = (
        Queue(f"{settings.queue.name}-{name}", connection=redis_client, serializer=JSONSerializer)
        for name in ("high", "low")
    )
    worker = overlapping(high, store, tiny_model, settings.worker, more_queues=(low,))
    worker.maintenance_interval = 0  # due before every batch
    # A dead worker's job: dequeued into low's intermediate list long ago and never started.
    stranded = enqueue(low, "st")
    redis_client.lmove(low.key, intermediate_queue_key(low), "LEFT", "RIGHT")
    redis_client.set(low.intermediate_queue.get_first_seen_key(stranded.id), time.time() - 60)
    jobs = [enqueue(high if n % 2 else low, f"m{n}") for n in range(12)]
    maintenance = at_call(monkeypatch, worker, "run_maintenance_tasks", 0, False, lambda: None)
    worker.work(burst=True)
    assert len(maintenance) >= 2
    ids = [f"m{n}-{i}" for n in range(12) for i in range(2)] + ["st-0", "st-1"]
    assert_answered_once(redis_client, store, ids)
    for q in (high, low):
        assert redis_client.llen(q.key) == 0 and redis_client.llen(intermediate_queue_key(q)) == 0
        assert started_members(redis_client, q) == []
    assert all(redis_client.hget(j.key, "status") == b"finished" for j in [*jobs, stranded])


def test_jobs_asking_for_explanations_in_overlapping_batches_get_them_once(
    ovl: SentiqWorker, queue: Queue, store: ResultStore, redis_client: Redis
) -> None:
    worker = ovl
    for n in range(4):
        reviews = [{"id": f"e{n}-{i}", "text": "a truly great film, great acting"} for i in range(2)]
        queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": reviews, "explain": 3 if n % 2 else 0})
    worker.work(burst=True)
    ids = [f"e{n}-{i}" for n in range(4) for i in range(2)]
    assert_answered_once(redis_client, store, ids)
    stored = store.fetch(ids)
    assert all((stored[i].attributions is not None) == (i[1] in "13") for i in ids)
    assert queue.get_job_ids() == [] and started_members(redis_client, queue) == []


@pytest.mark.slow
def test_a_worker_process_cold_stopped_with_two_batches_in_flight_exits_and_loses_nothing(
    settings: Settings, redis_client: Redis, tiny_model: SentimentModel, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"producer": settings.producer.model_copy(update={"reviews_per_job": 4})}
    )
    started = StartedJobRegistry(settings.queue.name, connection=redis_client)
    # Passes of 1.6 s (a two-job batch of 8 reviews at 0.2 s each) on the benchmark's simulated
    # device: the second SIGTERM (RQ ignores one within 1 s of the first) lands mid-passes.
    slow = {
        "PYTHONPATH": os.pathsep.join([str(SIMULATION_PATH), str(REPO_ROOT)]),
        "SENTIQ_BENCH_SIMULATED_PASS_US": "200000",
        "SENTIQ_WORKER_MAX_GATHER_TOKENS": str(8 * tiny_model.info.max_length),
    }
    with Client.from_settings(settings) as client:
        ids = client.submit([f"review {n} was great" for n in range(64)])
        victim = WorkerProcess(
            settings, tmp_path, "victim", "--max-batch-size", "8", "--overlap-batches", "on", **slow
        )
        try:
            victim.wait_ready()
            deadline = time.monotonic() + 30
            while started.count < 4 and time.monotonic() < deadline:  # two batches in flight
                time.sleep(0.005)
            victim.send(signal.SIGTERM)
            time.sleep(1.1)
            in_flight = started.get_job_ids()
            victim.send(signal.SIGTERM)
            t0 = time.monotonic()
            victim.process.wait(timeout=15)  # the model thread must not hold the process
            assert time.monotonic() - t0 < 10
        finally:
            victim.stop(signal.SIGKILL)
        assert in_flight and "cold shut down" in victim.log, victim.log
        with running_workers(settings, tmp_path, 1):  # recovers them once their heartbeats lapse
            predictions = client.results(ids, timeout=60)
    assert all(p.ok for p in predictions)
    counts = collections.Counter(
        fields[b"id"].decode()
        for _, fields in redis_client.xrange(f"{settings.queue.key_prefix}:predictions")
    )
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
