"""The clock-free gathering, max_wait_ms and the held first job, broken as production and attackers do.

Gathering takes what the queues hold up to the gathering limit without a clock, and ``max_wait_ms``
lets a batch that is not full wait for more; with several queues the first job of a batch, which
RQ pops, is held in its queue's intermediate list until it starts. These tests stop the worker
during the hold and the wait, kill Redis there, queue ids whose jobs are gone, and sweep a held
job from another worker: every review is answered once, nothing runs twice, nothing is stranded.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue

from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from tests.support.batch_worker import (
    assert_answered_once,
    assert_settled,
    assert_settled_in,
    enqueue,
    make_worker,
    streamed_ids,
)
from tests.support.killed_redis import Outage, outage  # noqa: F401 (a fixture)
from tests.worker.test_dequeue_adversarial import (
    counting_classify,
    no_retry_client,
    outage_worker,
    sweep_twice,
)
from tests.worker.test_dequeue_several_queues import both, low  # noqa: F401 (fixtures)
from tests.worker.test_worker import _with_settings as with_settings
from worker.model import SentimentModel
from worker.rq_internals import intermediate_job_ids
from worker.worker import SentiqWorker


def on_each_take(monkeypatch: pytest.MonkeyPatch, act: Callable[[int], None]) -> list[int]:
    """Call ``act(n)`` before the n-th take (from 0) of any gathering; returns each take's size."""
    import worker.worker as worker_module

    real = worker_module.dequeue_jobs
    takes: list[int] = []

    def take(queues: Any, most: int, connection: Redis) -> Any:
        act(len(takes))
        takes.append(most)
        return real(queues, most, connection)

    monkeypatch.setattr(worker_module, "dequeue_jobs", take)
    return takes


@contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put back the SIGTERM and SIGINT handlers a worker's ``request_stop`` swaps."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


def sigterm(worker: SentiqWorker) -> None:
    worker.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]  # what the signal runs


def one_review_ids(*prefixes: str) -> list[str]:
    return [f"{prefix}-0" for prefix in prefixes]


# -- the gathering without a clock ----------------------------------------------------------------


@pytest.mark.parametrize("pushed", ["ids of gone jobs", "copies of its own id"])
def test_ids_that_add_no_job_do_not_hold_a_lone_job_back(
    pushed: str, worker: SentiqWorker, queue: Queue, redis_client: Redis, store: ResultStore
) -> None:
    # Ids whose hash is gone (RQ's enqueue(ttl=...) expires a queued job's hash and leaves its id,
    # or an attacker pushes ids), or the lone job's own id pushed again: each take passed them over
    # without counting them, one id a take (it asks for no more than it has gathered), so with no
    # clock the lone job waited until every such id was taken, two round trips each (8 s for 8,192
    # here); past a heartbeat TTL another worker's sweep puts the jobs it holds back, to run twice.
    worker = with_settings(worker, max_gather_tokens=32 * worker.classifier.model.info.max_length)
    assert worker.settings.max_wait_ms == 0 and worker.gather_reviews == 32
    lone = enqueue(queue, "lone", reviews=1)
    extra = 8 * worker.gather_reviews
    ids = [uuid.uuid4().hex for _ in range(extra)] if pushed == "ids of gone jobs" else [lone.id] * extra
    redis_client.rpush(queue.key, *ids)
    queued_at_classify: list[int] = []
    real = worker.classifier.classify

    def classify(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        queued_at_classify.append(queue.count)
        return real(jobs, *args, **kwargs)

    worker.classifier.classify = classify  # type: ignore[method-assign]
    worker.work(burst=True)
    # The gathering took at most its limit's worth of ids, plus one take's overshoot.
    assert queued_at_classify[0] >= extra - 2 * worker.gather_reviews
    assert len(queued_at_classify) == 1
    sweep_twice(worker, queue)  # drops the ids of gone jobs that the takes moved
    assert_settled(redis_client, queue, store, [lone], ["lone-0"])


def test_a_lone_job_with_no_max_wait_runs_after_one_take(  # noqa: PLR0917
    both: SentiqWorker,  # noqa: F811
    queue: Queue,
    low: Queue,  # noqa: F811
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lone = enqueue(low, "lone", reviews=1)
    takes = on_each_take(monkeypatch, lambda _: None)
    both.work(burst=True)
    assert takes == [1]
    assert_settled_in(redis_client, [queue, low], store, [lone], ["lone-0"])


def test_jobs_trickling_in_do_not_keep_a_waiting_batch_from_running(
    worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A job arrives every few ms for as long as the worker waits: the batch still runs max_wait_ms
    # after its first take (plus a busy machine's slack), with the jobs that came by then.
    waiting = with_settings(worker, max_wait_ms=300)
    stop = threading.Event()
    prefixes = ["first"]

    def trickle() -> None:
        while not stop.is_set() and len(prefixes) < 2000:
            prefixes.append(f"t{len(prefixes)}")
            enqueue(queue, prefixes[-1], reviews=1)
            time.sleep(0.002)

    first_take: list[float] = []
    on_each_take(monkeypatch, lambda n: first_take.append(time.monotonic()) if n == 0 else None)
    batches: list[tuple[float, int]] = []
    real = waiting.classifier.classify

    def classify(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append((time.monotonic(), len(jobs)))
        stop.set()
        return real(jobs, *args, **kwargs)

    waiting.classifier.classify = classify  # type: ignore[method-assign]
    enqueue(queue, "first", reviews=1)
    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        waiting.work(burst=True)
    finally:
        stop.set()
        thread.join()
    assert batches[0][0] - first_take[0] < 0.3 + 0.7 and batches[0][1] > 1
    assert_answered_once(redis_client, store, one_review_ids(*prefixes))


# -- the held first job and another worker's sweep ------------------------------------------------


@pytest.mark.parametrize("back", ["by a retry", "by a stop during its hold", "by a retry, one queue"])
def test_a_held_job_seen_by_a_sweep_before_is_not_put_back_while_its_worker_gathers(  # noqa: PLR0917
    back: str,
    queue: Queue,
    low: Queue,  # noqa: F811
    redis_client: Redis,
    store: ResultStore,
    settings: Settings,
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another worker's sweep sees the first job while it is held (first sight, a marker that RQ
    # keeps a day); the job starts and fails, and RQ retries it, or a stop during the hold puts it
    # back. Held again a heartbeat TTL later, one sweep took that old first sight for a job stranded
    # a TTL: back in the queue while its worker still gathered (max_wait_ms widens that window to a
    # second), and run by both workers.
    import worker.worker as worker_module

    # On one queue RQ moves the first job into the intermediate list itself (LMOVE).
    home, more = (queue, []) if back.endswith("one queue") else (low, [low])

    def new_worker() -> SentiqWorker:
        return make_worker(queue, store, tiny_model, settings.worker, settings.queue, more_queues=more)

    sweeper, taker = new_worker(), new_worker()
    job = enqueue(home, "again", reviews=1)
    marker = home.intermediate_queue.get_first_seen_key(job.id)
    if back == "by a stop during its hold":
        real_hold = worker_module.hold_in_intermediate

        def hold_seen_then_stopped(held_in: Queue, job_id: str) -> None:
            real_hold(held_in, job_id)
            sweeper.run_maintenance_tasks()  # its first sight
            sigterm(taker)

        monkeypatch.setattr(worker_module, "hold_in_intermediate", hold_seen_then_stopped)
        with signal_handlers_kept():
            taker.work(burst=True)
        monkeypatch.undo()
        assert home.get_job_ids() == [job.id]
        taker = new_worker()
    requeued: list[list[str]] = []
    gathering = threading.local()

    def sweep_while_held(_: int) -> None:
        if getattr(gathering, "nested", False):
            return
        if redis_client.exists(marker):  # held again a heartbeat TTL after the first sight
            redis_client.set(marker, time.time() - settings.worker.heartbeat_ttl_s - 1)
        sweeper.run_maintenance_tasks()
        requeued.append(home.get_job_ids())
        if requeued[-1]:
            gathering.nested = True
            sweeper.work(burst=True)  # another worker takes the job put back, and runs it
            gathering.nested = False

    on_each_take(monkeypatch, sweep_while_held)
    classified = counting_classify(taker)
    real = taker.classifier.classify

    def fails_once(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        if not classified and back.startswith("by a retry"):
            classified.extend(job_id for job_id, _ in jobs)
            raise RuntimeError("CUDA error: an illegal memory access was encountered (test)")
        return real(jobs, *args, **kwargs)

    taker.classifier.classify = sweeper.classifier.classify = fails_once  # type: ignore[method-assign]
    with signal_handlers_kept():
        taker.work(burst=True)
    runs = 2 if back.startswith("by a retry") else 1  # with the failed attempt: no run more
    assert classified == [job.id] * runs and requeued == [[]] * runs
    assert_settled_in(redis_client, [queue, low], store, [job], ["again-0"])


# -- a stop signal during the hold and during the wait ---------------------------------------------


@pytest.mark.parametrize("applied", [False, True], ids=["before the hold", "after the hold"])
def test_a_stop_signal_during_the_hold_puts_the_first_job_back_at_the_front(  # noqa: PLR0917
    applied: bool,
    both: SentiqWorker,  # noqa: F811
    queue: Queue,
    low: Queue,  # noqa: F811
    redis_client: Redis,
    store: ResultStore,
    settings: Settings,
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import worker.worker as worker_module

    real = worker_module.hold_in_intermediate
    jobs = [enqueue(low, "first", reviews=1), enqueue(low, "second", reviews=1)]

    def hold_under_a_signal(held_in: Queue, job_id: str) -> None:
        if applied:  # Redis applied the hold; the signal lands before its reply is read
            real(held_in, job_id)
        sigterm(both)

    monkeypatch.setattr(worker_module, "hold_in_intermediate", hold_under_a_signal)
    with signal_handlers_kept():
        both.work(burst=True)
    monkeypatch.undo()
    assert streamed_ids(redis_client, store) == []
    assert low.get_job_ids() == [job.id for job in jobs] and intermediate_job_ids(low) == []
    make_worker(queue, store, tiny_model, settings.worker, settings.queue, more_queues=[low]).work(burst=True)
    assert_settled_in(redis_client, [queue, low], store, jobs, one_review_ids("first", "second"))


def test_a_stop_signal_during_the_wait_runs_the_batch_at_once_and_holds_nothing(  # noqa: PLR0917
    both: SentiqWorker,  # noqa: F811
    queue: Queue,
    low: Queue,  # noqa: F811
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = with_settings(both, max_wait_ms=1000)
    jobs = [enqueue(low, "waits", reviews=1), enqueue(queue, "high", reviews=1)]
    # Takes 0 and 1 gather the high job; take 1 finds the queues dry; the wait looks one id at a
    # time (takes 2 and 3), and the signal lands in it.
    takes = on_each_take(monkeypatch, lambda n: sigterm(waiting) if n == 3 else None)
    with signal_handlers_kept():
        waiting.work(burst=True)
    assert takes == [1, 2, 1, 1]
    assert_settled_in(redis_client, [queue, low], store, jobs, one_review_ids("waits", "high"))


# -- Redis dies during the hold and during the wait -------------------------------------------------


OnOutage = tuple[Redis, list[Queue], ResultStore, SentiqWorker]


@pytest.fixture
def on_outage(outage: Outage, tiny_model: SentimentModel) -> Iterator[OnOutage]:  # noqa: F811
    """A client of the outage's Redis, two queues there, their result store and a worker on both."""
    client = no_retry_client(outage.server.url)
    try:
        queues, store, worker = outage_worker(client, tiny_model, "gather-high", "gather-low")
        yield client, queues, store, worker
    finally:
        client.close()


@pytest.mark.slow
def test_redis_dying_after_the_hold_applied_keeps_one_copy_and_answers_once(
    outage: Outage,  # noqa: F811
    on_outage: OnOutage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import worker.worker as worker_module

    client, queues, store, worker = on_outage
    jobs = [enqueue(queues[1], f"l{n}", reviews=1) for n in range(3)]
    real = worker_module.hold_in_intermediate

    def hold_then_die(held_in: Queue, job_id: str) -> None:
        real(held_in, job_id)
        if not outage.kills:
            outage.kill_once()
            raise RedisConnectionError("Redis died before the hold's reply (test)")

    monkeypatch.setattr(worker_module, "hold_in_intermediate", hold_then_die)
    held: list[list[str]] = []
    on_each_take(monkeypatch, lambda n: held.append(intermediate_job_ids(queues[1])) if n == 0 else None)
    worker.work(burst=True)
    monkeypatch.undo()
    assert outage.kills == 1 and held == [[jobs[0].id]]  # the retried hold left one copy
    assert_settled_in(client, queues, store, jobs, one_review_ids("l0", "l1", "l2"))
    assert [client.hget(job.key, "retries_left") for job in jobs] == [b"2"] * 3


@pytest.mark.slow
def test_redis_dying_while_a_batch_waits_for_more_runs_it_and_answers_once(
    outage: Outage,  # noqa: F811
    on_outage: OnOutage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, queues, store, worker = on_outage
    waiting = with_settings(worker, max_wait_ms=1000)
    jobs = [enqueue(queues[1], "alone", reviews=1)]
    takes = on_each_take(monkeypatch, lambda n: outage.kill_once() if n == 3 else None)
    waiting.work(burst=True)
    monkeypatch.undo()
    # The take that meets the dead Redis ends the wait; the batch starts once Redis is back.
    assert outage.kills == 1 and len(takes) == 4
    assert_settled_in(client, queues, store, jobs, ["alone-0"])
