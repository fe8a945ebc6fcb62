"""A stop signal (SIGTERM) at each step between RQ's dequeue and the start of the batch.

What the signal runs (``worker.request_stop``) is called at the instant a step begins or ends, with
one queue (RQ moves the job into the intermediate list) and with several (RQ pops it). Whatever the
step: the worker returns, the job it took is back at the front of its queue at once (nothing in an
intermediate list, nothing answered), or, once the worker is busy, its batch runs; a second worker
then answers every review exactly once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue
from rq.registry import FailedJobRegistry

from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from tests.support.batch_worker import (
    assert_answered_once,
    assert_settled_in,
    enqueue,
    make_worker,
    settle_first_and_second,
    started_members,
    streamed_ids,
)
from tests.worker.test_dequeue_several_queues import low  # noqa: F401 (a fixture)
from tests.worker.test_trust import write_raw_job
from worker import worker as worker_module
from worker.model import SentimentModel
from worker.rq_internals import SentiqQueue, intermediate_job_ids, last_dequeued
from worker.worker import SentiqWorker


def workers(
    settings: Settings, queues: list[Queue], store: ResultStore, model: SentimentModel
) -> tuple[SentiqWorker, SentiqWorker]:
    """The worker that is stopped, and the one that serves the queues after it."""
    return tuple(  # type: ignore[return-value]
        make_worker(queues[0], store, model, settings.worker, settings.queue, more_queues=queues[1:])
        for _ in range(2)
    )


@pytest.fixture(params=["one queue", "several queues"])
def queues(request: pytest.FixtureRequest, queue: Queue) -> list[Queue]:
    if request.param == "one queue":
        return [queue]
    return [queue, request.getfixturevalue("low")]


def stop(worker: SentiqWorker) -> None:
    worker.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]  # what the signal runs


def signal_at(  # noqa: PLR0917
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    worker: SentiqWorker,
    when: str,
    only_if: Callable[..., bool] = lambda *args, **kwargs: True,
) -> list[str]:
    """Run the stop signal once, ``before`` or ``after`` ``owner.name``, the first time it is called
    with a job just dequeued (and ``only_if`` its arguments). Steps inside RQ's dequeue are armed
    the first time they run at all: whether the worker knows what it took there is the question."""
    real = getattr(owner, name)
    signalled: list[str] = []
    inside_dequeue = name in INSIDE_RQS_DEQUEUE

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        taken = inside_dequeue or last_dequeued() is not None
        armed = not signalled and taken and only_if(*args, **kwargs)
        if armed and when == "before":
            signalled.append(name)
            stop(worker)
        result = real(*args, **kwargs)
        if armed and when == "after":
            signalled.append(name)
            stop(worker)
        return result

    monkeypatch.setattr(owner, name, wrapped)
    return signalled


#: RQ's dequeue between taking the id (its move or pop) and returning the job.
INSIDE_RQS_DEQUEUE = ("_fetch_dequeued_job",)

STEPS = [
    # Inside RQ's dequeue: the id taken (moved or popped), the queue and job not built yet.
    ("fetch", SentiqQueue, "_fetch_dequeued_job", "before"),
    # RQ's own steps after its dequeue, the worker idle.
    ("version", SentiqWorker, "get_redis_server_version", "before"),
    ("heartbeat", SentiqWorker, "heartbeat", "before"),
    ("heartbeat-end", SentiqWorker, "heartbeat", "after"),
    # The worker's: the hold of a popped job (several queues only), and turning busy.
    ("hold", worker_module, "hold_in_intermediate", "before"),
    ("hold-end", worker_module, "hold_in_intermediate", "after"),
    ("rq_dequeue_moves", worker_module, "rq_dequeue_moves", "before"),
    ("busy", SentiqWorker, "set_state", "before"),
]


@pytest.mark.parametrize(("step", "owner", "name", "when"), STEPS, ids=[step[0] for step in STEPS])
def test_a_stop_at_each_step_after_the_dequeue_puts_the_job_back_at_once(  # noqa: PLR0917
    step: str,
    owner: Any,
    name: str,
    when: str,
    queues: list[Queue],
    settings: Settings,
    store: ResultStore,
    tiny_model: SentimentModel,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if step.startswith("hold") and len(queues) == 1:
        pytest.skip("one queue: RQ moved the job into the intermediate list, nothing is held")
    stopped, serving = workers(settings, queues, store, tiny_model)
    jobs = [enqueue(queues[0], "first"), enqueue(queues[0], "second")]
    only_if = (
        (lambda _self, state, *rest, **kw: state == "busy") if name == "set_state" else (lambda *a, **k: True)
    )
    if name == "get_redis_server_version":
        stopped.redis_server_version = None
    signalled = signal_at(monkeypatch, owner, name, stopped, when, only_if)
    stopped.work(burst=True)
    monkeypatch.undo()
    assert signalled == [name]
    assert streamed_ids(redis_client, store) == []
    for each in queues:
        assert intermediate_job_ids(each) == []
    assert queues[0].get_job_ids() == [job.id for job in jobs]
    settle_first_and_second(serving, queues, store, jobs)


def test_a_stop_once_the_worker_is_busy_lets_the_batch_run(  # noqa: PLR0917
    queues: list[Queue],
    settings: Settings,
    store: ResultStore,
    tiny_model: SentimentModel,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The signal lands the instant the worker turned busy (the state written): the batch runs, and
    # the worker stops after it; nothing is put back a second time.
    stopped, serving = workers(settings, queues, store, tiny_model)
    jobs = [enqueue(queues[0], "first"), enqueue(queues[0], "second")]
    signalled = signal_at(
        monkeypatch,
        SentiqWorker,
        "set_state",
        stopped,
        "after",
        lambda _self, state, *a, **k: state == "busy",
    )
    stopped.work(burst=True)
    monkeypatch.undo()
    assert signalled == ["set_state"]
    settle_first_and_second(serving, queues, store, jobs)


def test_a_stop_while_an_unreadable_first_job_is_refused_loses_nothing(  # noqa: PLR0917
    queues: list[Queue],
    settings: Settings,
    store: ResultStore,
    tiny_model: SentimentModel,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RQ's dequeue took a job it cannot read (the error names it); the worker refuses it: answers
    # its reviews with errors, then fails its record. A SIGTERM between the two (the worker idle)
    # raised out of the refusal: with several queues RQ had popped the job, which was then in no
    # list and no registry, never failed, while its record stayed; with one queue it waited in the
    # intermediate list for a sweep a heartbeat TTL later.
    bad = write_raw_job(redis_client, queues[0].name, [{"id": "bad-0", "text": "x"}], created_at="not a date")
    redis_client.rpush(queues[0].key, bad)
    good = enqueue(queues[0], "good", reviews=1)
    stopped, serving = workers(settings, queues, store, tiny_model)
    real = worker_module.record_unreadable
    signalled: list[str] = []

    def record_under_a_signal(*args: Any, **kwargs: Any) -> Any:
        if not signalled:
            signalled.append("record_unreadable")
            stop(stopped)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "record_unreadable", record_under_a_signal)
    stopped.work(burst=True)
    monkeypatch.undo()
    assert signalled == ["record_unreadable"]
    assert streamed_ids(redis_client, store) == ["bad-0"]  # answered before the signal
    # At once, not a sweep later: the bad job waits at the front of its queue again.
    for each in queues:
        assert intermediate_job_ids(each) == []
    assert queues[0].get_job_ids() == [bad, good.id]
    serving.work(burst=True)
    failed = FailedJobRegistry(queues[0].name, connection=redis_client)
    assert bad in failed.get_job_ids()
    assert redis_client.hget(f"rq:job:{bad}", "status") == b"failed"
    assert_answered_once(redis_client, store, ["bad-0", "good-0"], labels=False)  # bad-0 still once
    assert redis_client.hget(good.key, "status") == b"finished"
    for each in queues:
        assert started_members(redis_client, each) == []
        assert intermediate_job_ids(each) == [] and each.get_job_ids() == []


def test_a_step_after_the_dequeue_that_fails_puts_the_job_back(  # noqa: PLR0917
    queues: list[Queue],
    settings: Settings,
    store: ResultStore,
    tiny_model: SentimentModel,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RQ's heartbeat after its dequeue fails with a Redis error that is not an outage (a clobbered
    # worker key: WRONGTYPE). The worker logs it and dequeues again: the job it had taken was left
    # in no list (several queues, popped) or for a sweep (one queue); it must be served now.
    stopped, _ = workers(settings, queues, store, tiny_model)
    jobs = [enqueue(queues[0], "first"), enqueue(queues[0], "second")]
    real = SentiqWorker.heartbeat
    failed: list[str] = []

    def heartbeat(self: SentiqWorker, *args: Any, **kwargs: Any) -> None:
        if not failed and last_dequeued() is not None:
            failed.append("heartbeat")
            raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        real(self, *args, **kwargs)

    monkeypatch.setattr(SentiqWorker, "heartbeat", heartbeat)
    stopped.work(burst=True)
    monkeypatch.undo()
    assert failed == ["heartbeat"]
    ids = [f"{prefix}-{n}" for prefix in ("first", "second") for n in range(2)]
    assert_settled_in(redis_client, queues, store, jobs, ids)
