"""The batched dequeue (``dequeue_jobs``, ``SentiqWorker._gather_more``) broken the way production breaks it.

A take moves up to N job ids from the queue into its intermediate list with one pipeline of LMOVEs,
then reads their hashes with a second pipeline. Redis dies between the two (the test's own
append-only Redis, SIGKILLed and restarted), the LMOVE pipeline's reply is lost after Redis applied
it (faked inside redis-py, against a real Redis), an attacker with Redis write access meddles with a
take, and two workers gather from one queue at once. Whatever happens: every review is answered
exactly once, no job is started twice, nothing a job names is imported or called, nothing stays in
the intermediate list once the sweep has run, and the worker keeps serving.

Ids stranded in the intermediate list are put back by the worker's sweep once they have sat there
for a heartbeat TTL; the tests backdate RQ's first-seen markers instead of waiting that long.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from rq import Queue
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer

from sentiq.contract import MAX_JOB_DATA_BYTES
from sentiq.result_store import ResultStore
from sentiq.settings import QueueSettings, Settings, WorkerSettings
from tests.support.batch_worker import (
    assert_answered_once,
    assert_settled,
    enqueue,
    make_worker,
    one_result_each,
    serves_another_job,
    settle_first_and_second,
    started_members,
    streamed_ids,
)
from tests.support.killed_redis import Outage, outage  # noqa: F401 (a fixture)
from tests.worker.test_trust import (
    MARKER_MODULE,
    WebhookSink,
    foreign_fields,
    marker_module,  # noqa: F401 (a fixture)
    webhook_server,  # noqa: F401 (a fixture)
    write_raw_job,
)
from worker.model import SentimentModel
from worker.rq_internals import (
    StartingJob,
    intermediate_job_ids,
    intermediate_queue_key,
    job_key,
    start_jobs,
)
from worker.worker import SentiqWorker

Commands = list[tuple[tuple[Any, ...], dict[str, Any]]]


def no_retry_client(url: str) -> Redis:
    """A client on which redis-py does not retry: a Redis error reaches the worker at once.

    As an outage longer than redis-py's own retries (about 5 s) does, in a test of a few seconds.
    """
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def after_pipeline(
    monkeypatch: pytest.MonkeyPatch, command: str, size: int, act: Callable[[list[Any]], None]
) -> list[list[Any]]:
    """Call ``act(reply)`` once, right after Redis applied the first pipeline of ``size`` ``command``s.

    ``command`` is LMOVE for a take's moves, EVAL for its reads. ``act`` may kill Redis, write as
    an attacker would, or raise as redis-py does when the reply is lost. Returns the replies seen.
    """
    real: Callable[..., list[Any]] = Pipeline._execute_pipeline  # type: ignore[attr-defined]
    seen: list[list[Any]] = []

    def execute(self: Pipeline, connection: Any, commands: Commands, raise_on_error: bool) -> list[Any]:
        reply = real(self, connection, commands, raise_on_error)
        if not seen and len(commands) == size and all(args[0] == command for args, _ in commands):
            seen.append(reply)
            act(reply)
        return reply

    monkeypatch.setattr(Pipeline, "_execute_pipeline", execute)
    return seen


def outage_worker(
    client: Redis, model: SentimentModel, *names: str
) -> tuple[list[Queue], ResultStore, SentiqWorker]:
    """Queues ``names`` on the outage's Redis, their result store, and one worker on all of them."""
    queues = [Queue(name, connection=client, serializer=JSONSerializer) for name in names]
    store = ResultStore(client, "deq-outage", 600, 10_000)
    settings = WorkerSettings(device="cpu", precision="fp32", heartbeat_ttl_s=5)
    worker = make_worker(queues[0], store, model, settings, QueueSettings(), more_queues=queues[1:])
    return queues, store, worker


def work_through_a_kill(
    monkeypatch: pytest.MonkeyPatch,
    redis: Outage,
    worker: SentiqWorker,
    command: str,
) -> None:
    """Run ``worker`` until its queues are empty while Redis is killed once, right after the first
    pipeline of four ``command``s (a take of four), and restarted."""
    seen = after_pipeline(monkeypatch, command, 4, lambda _: redis.kill_once())
    worker.work(burst=True)  # returns once the queues are empty: the worker rode the outage out
    monkeypatch.undo()
    assert redis.kills == 1 and redis.restarted.is_set() and len(seen) == 1


def sweep_twice(worker: SentiqWorker, queue: Queue) -> None:
    """Two maintenance passes a heartbeat TTL apart: what is still stranded is put back in the queue."""
    worker.run_maintenance_tasks()  # the first sight of each stranded id
    client = queue.connection
    for job_id in intermediate_job_ids(queue):
        marker = queue.intermediate_queue.get_first_seen_key(job_id)
        if client.exists(marker):
            client.set(marker, time.time() - worker.settings.heartbeat_ttl_s - 1)
    worker.run_maintenance_tasks()


def counting_classify(worker: SentiqWorker) -> list[str]:
    """The id of each job the worker classifies, once per time it is classified."""
    classified: list[str] = []
    real = worker.classifier.classify

    def classify(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        classified.extend(job_id for job_id, _ in jobs)
        return real(jobs, *args, **kwargs)

    worker.classifier.classify = classify  # type: ignore[method-assign]
    return classified


@contextmanager
def stop_signal_at_first_read(worker: SentiqWorker, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Run what a SIGTERM runs in ``worker`` at the instant RQ restores the first job hash it reads.

    Yields the id of that job once it is read; the signal handlers and ``Job.restore`` are restored after.
    """
    real_restore = Job.restore
    signalled: list[str] = []

    def restore_under_a_signal(job: Job, raw_data: Any) -> Any:
        if not signalled:
            signalled.append(job.id)
            worker.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]  # what the signal runs
        return real_restore(job, raw_data)

    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(Job, "restore", restore_under_a_signal)
    try:
        yield signalled
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        monkeypatch.undo()


# -- Redis dies between the take's two round trips ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["LMOVE", "EVAL"], ids=["after the moves", "after the reads"])
def test_redis_dying_in_the_middle_of_a_take_strands_nothing_and_answers_once(
    command: str,
    outage: Outage,  # noqa: F811
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = no_retry_client(outage.server.url)
    try:
        (queue,), store, worker = outage_worker(client, tiny_model, "deq-outage")
        # The first job comes from RQ's dequeue, then takes of 1, 2 and 4: Redis dies after the third.
        jobs = [enqueue(queue, f"j{index}", reviews=1) for index in range(8)]
        ids = [f"j{index}-0" for index in range(8)]
        work_through_a_kill(monkeypatch, outage, worker, command)
        # Moved but never read: the four ids wait in the intermediate list, unknown to the worker.
        stranded = [job.id for job in jobs[4:]] if command == "LMOVE" else []
        assert intermediate_job_ids(queue) == stranded
        sweep_twice(worker, queue)
        assert client.llen(intermediate_queue_key(queue)) == 0
        worker.work(burst=True)
        assert_settled(client, queue, store, jobs, ids)
        assert one_result_each(client, jobs) == [1] * len(jobs)
        # Each job's retries are untouched: a stranded job never ran, so it spent none.
        assert [client.hget(job.key, "retries_left") for job in jobs] == [b"2"] * len(jobs)
        assert serves_another_job(worker, queue, store)
    finally:
        client.close()


@pytest.mark.slow
def test_with_several_queues_redis_dying_in_the_middle_of_a_take_strands_nothing(
    outage: Outage,  # noqa: F811
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = no_retry_client(outage.server.url)
    try:
        (high, low), store, worker = outage_worker(client, tiny_model, "deq-outage-high", "deq-outage-low")
        # RQ pops the first job (j0); takes of 1 and 2 from the high queue, then one of 4 that
        # finds j4 there, after which Redis dies before the low queue is visited.
        jobs = [enqueue(high, f"h{index}", reviews=1) for index in range(5)]
        jobs += [enqueue(low, f"l{index}", reviews=1) for index in range(3)]
        ids = [f"h{index}-0" for index in range(5)] + [f"l{index}-0" for index in range(3)]
        work_through_a_kill(monkeypatch, outage, worker, "LMOVE")
        # RQ's LPOP would have lost j4 here; moved, it waits in its queue's intermediate list.
        assert intermediate_job_ids(high) == [jobs[4].id]
        for queue in (high, low):
            sweep_twice(worker, queue)
        worker.work(burst=True)
        assert_answered_once(client, store, ids)
        assert [client.hget(job.key, "status") for job in jobs] == [b"finished"] * len(jobs)
        for queue in (high, low):
            assert started_members(client, queue) == []
            assert client.llen(intermediate_queue_key(queue)) == client.llen(queue.key) == 0
        assert one_result_each(client, jobs) == [1] * len(jobs)
        assert serves_another_job(worker, low, store)
    finally:
        client.close()


# -- the take's reply is lost after Redis applied it ---------------------------------------------


@pytest.mark.parametrize("resent", [True, False], ids=["redis-py sends it again", "the worker sees it"])
def test_a_take_whose_reply_is_lost_is_recovered_by_the_sweep_and_answered_once(  # noqa: PLR0917
    resent: bool,
    settings: Settings,
    redis_url: str,
    redis_client: Redis,
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = redis_client if resent else no_retry_client(redis_url)
    try:
        queue = Queue(settings.queue.name, connection=client, serializer=JSONSerializer)
        store = ResultStore(client, settings.queue.key_prefix, 600, 10_000)
        worker = make_worker(queue, store, tiny_model, settings.worker, settings.queue)
        jobs = [enqueue(queue, f"lost{index}", reviews=1) for index in range(8)]
        ids = [f"lost{index}-0" for index in range(8)]

        def lose(_: list[Any]) -> None:
            raise RedisConnectionError("connection lost before the LMOVEs' replies (test)")

        # The take of two (jobs 2 and 3) is applied and its reply lost.
        seen = after_pipeline(monkeypatch, "LMOVE", 2, lose)
        classified = counting_classify(worker)
        worker.work(burst=True)
        monkeypatch.undo()
        assert [[moved.decode() for moved in reply] for reply in seen] == [[jobs[2].id, jobs[3].id]]
        assert intermediate_job_ids(queue) == [jobs[2].id, jobs[3].id]
        sweep_twice(worker, queue)
        worker.work(burst=True)
        assert_settled(client, queue, store, jobs, ids)
        assert sorted(classified) == sorted(job.id for job in jobs)  # each job classified once
        assert one_result_each(client, jobs) == [1] * len(jobs)
        assert serves_another_job(worker, queue, store)
    finally:
        if not resent:
            client.close()


# -- an attacker with Redis write access, in the middle of a take --------------------------------


def test_one_job_id_queued_several_times_is_started_classified_and_finished_once(
    worker: SentiqWorker, queue: Queue, redis_client: Redis, store: ResultStore
) -> None:
    jobs = [enqueue(queue, f"dup{index}", reviews=1) for index in range(3)]
    ids = [f"dup{index}-0" for index in range(3)]
    # The first job's id twice more (RQ's dequeue takes it first, a take takes the copies), the
    # second's once more: each copy lands in the same batch.
    redis_client.rpush(queue.key, jobs[0].id, jobs[1].id, jobs[0].id)
    classified = counting_classify(worker)
    worker.work(burst=True)
    sweep_twice(worker, queue)  # no copy of a finished job is left for the sweep to run again
    worker.work(burst=True)
    assert sorted(classified) == sorted(job.id for job in jobs)
    assert_settled(redis_client, queue, store, jobs, ids)
    assert one_result_each(redis_client, jobs) == [1, 1, 1]
    assert serves_another_job(worker, queue, store)


def test_an_attacker_meddling_with_a_take_harms_no_other_review_and_doubles_nothing(  # noqa: PLR0917
    worker: SentiqWorker,
    other_worker: SentiqWorker,
    queue: Queue,
    redis_client: Redis,
    store: ResultStore,
    marker_module: Path,  # noqa: F811
    webhook_server: WebhookSink,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Already answered before the attack: a finished job, and one another worker has started.
    finished = enqueue(queue, "finished", reviews=1)
    other_worker.work(burst=True)
    assert redis_client.hget(finished.key, "status") == b"finished"
    running = enqueue(queue, "running", reviews=1)
    taken = other_worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None and taken[0].id == running.id
    start_jobs(other_worker, [StartingJob(taken[0], taken[1], {})], remove_from_intermediate_queue=True)
    jobs = [enqueue(queue, f"ok{index}", reviews=1) for index in range(7)]
    hostile = write_raw_job(
        redis_client,
        queue.name,
        [{"id": "hostile-0", "text": "x"}],
        status="queued",
        **foreign_fields(webhook_server.url),
    )
    hostile_code = write_raw_job(redis_client, queue.name, [{"id": "code-0", "text": "x"}], status="queued")
    redis_client.hset(job_key(hostile_code), "data", json.dumps([f"{MARKER_MODULE}.hit", None, [{}], {}]))
    too_big = write_raw_job(redis_client, queue.name, [], status="queued")
    redis_client.hset(job_key(too_big), "data", b"x" * (MAX_JOB_DATA_BYTES + 1))
    not_a_hash = "not-a-hash-" + jobs[0].id
    redis_client.set(job_key(not_a_hash), "a string")
    pushed: list[str | bytes] = [
        finished.id,
        running.id,
        hostile,
        hostile_code,
        too_big,
        not_a_hash,
        "a" * 100_000,  # huge, and names no record
        "*",
        "rq:job:*",
        f"{jobs[1].id}?",  # key patterns
        "jöb\x00\r\n",
        b"\xff\xfe not utf-8",  # odd bytes
    ]

    def attack(reply: list[Any]) -> None:
        # The take's own jobs: one deleted, one's id pushed again behind the rest.
        taken = [job_id.decode() for job_id in reply]
        redis_client.delete(job_key(taken[0]))
        redis_client.rpush(queue.key, taken[1], *pushed)

    seen = after_pipeline(monkeypatch, "LMOVE", 2, attack)
    classified = counting_classify(worker)
    worker.work(burst=True)
    monkeypatch.undo()
    sweep_twice(worker, queue)
    worker.work(burst=True)
    assert len(seen) == 1
    deleted = seen[0][0].decode()
    time.sleep(0.2)
    assert not list(marker_module.iterdir()), "a job-named function or callback was imported or called"
    assert MARKER_MODULE not in sys.modules
    assert webhook_server.requests == [], "a job-named webhook was fetched"
    # Every other client's review has its label, once; the refused jobs' reviews an error, once.
    kept = [job for job in jobs if job.id != deleted]
    labelled = [f"ok{index}-0" for index in range(7) if jobs[index].id != deleted]
    assert_answered_once(redis_client, store, [*labelled, "finished-0", "hostile-0"], labels=False)
    answers = store.fetch([*labelled, "finished-0", "hostile-0"])
    assert [review for review, answer in answers.items() if not answer.ok] == ["hostile-0"]
    # Neither the finished job nor the one the other worker runs was run again.
    assert sorted(classified) == sorted(job.id for job in kept)
    assert one_result_each(redis_client, kept) == [1] * len(kept)
    assert [redis_client.hget(job.key, "status") for job in kept] == [b"finished"] * len(kept)
    assert redis_client.hget(running.key, "status") == b"started"  # the other worker's, untouched
    assert redis_client.llen(queue.key) == 0
    assert intermediate_job_ids(queue) == []
    assert serves_another_job(worker, queue, store)


# -- two workers gathering from one queue at once ------------------------------------------------


@pytest.mark.slow
def test_two_workers_gathering_one_queue_at_once_answer_every_review_once(
    settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    tiny_model: SentimentModel,
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    try:
        queues = [
            Queue(settings.queue.name, connection=client, serializer=JSONSerializer) for client in clients
        ]
        store = ResultStore(clients[0], settings.queue.key_prefix, 600, 10_000)
        models = [tiny_model, SentimentModel.load(tiny_model_dir, max_batch_size=64)]
        # Batches of at most 4 reviews: one worker cannot gather all 120 jobs before the other has
        # started (it did once encoding got faster), so the two take turns many times.
        gathering = settings.worker.model_copy(update={"max_gather_tokens": 4 * tiny_model.info.max_length})
        workers = [
            make_worker(
                queue,
                ResultStore(queue.connection, settings.queue.key_prefix, 600, 10_000),
                model,
                gathering,
                settings.queue,
            )
            for queue, model in zip(queues, models, strict=True)
        ]
        jobs = [enqueue(queues[0], f"pair{index}", reviews=1) for index in range(120)]
        ids = [f"pair{index}-0" for index in range(120)]
        classified = [counting_classify(worker) for worker in workers]
        for worker in workers:
            worker._install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(worker: SentiqWorker) -> None:
            try:
                start.wait(timeout=10)
                worker.work(burst=True)
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=run, args=(worker,), daemon=True) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=40)
        assert not any(thread.is_alive() for thread in threads) and errors == []
        assert all(classified), "one worker took every job: nothing ran at the same time"
        assert sorted(classified[0] + classified[1]) == sorted(job.id for job in jobs)
        assert_settled(clients[0], queues[0], store, jobs, ids)
        assert one_result_each(clients[0], jobs) == [1] * len(jobs)
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("where", ["dequeue", "sweep"])
def test_a_stop_signal_while_a_job_is_read_stops_the_worker_and_refuses_nothing(  # noqa: PLR0917
    worker: SentiqWorker,
    other_worker: SentiqWorker,
    queue: Queue,
    store: ResultStore,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    # RQ's SIGTERM handler raises StopRequested wherever an idle worker happens to be: here inside
    # RQ's restore of a job's hash, while the worker dequeues (the job already in the intermediate
    # list) or while its maintenance sweep reads a stranded job. It was taken for an unreadable
    # record: the job was refused (its reviews answered with errors) and the stop was lost, so the
    # worker served on until it was SIGKILLed (seen in tests/e2e/test_rollout.py).
    jobs = [enqueue(queue, "first"), enqueue(queue, "second")]
    if where == "sweep":
        redis_client.lmove(queue.key, intermediate_queue_key(queue), "LEFT", "RIGHT")  # a dead worker's
    with stop_signal_at_first_read(worker, monkeypatch) as signalled:
        if where == "sweep":
            with pytest.raises(StopRequested):
                worker.run_maintenance_tasks()
        else:
            worker.work(burst=True)
    assert signalled == [jobs[0].id]
    # Nothing refused, nothing answered, nothing run: both jobs wait, the first where the take left it.
    assert streamed_ids(redis_client, store) == []
    assert [redis_client.hget(job.key, "status") for job in jobs] == [b"queued", b"queued"]
    assert intermediate_job_ids(queue) + queue.get_job_ids() == [job.id for job in jobs]
    # Another worker's sweep puts the first back once it has sat there a heartbeat TTL; it serves both.
    sweep_twice(other_worker, queue)
    settle_first_and_second(other_worker, [queue], store, jobs)


def test_a_stop_signal_after_the_dequeue_puts_the_job_back_at_the_front_at_once(  # noqa: PLR0917
    worker: SentiqWorker,
    other_worker: SentiqWorker,
    queue: Queue,
    store: ResultStore,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After its dequeue RQ logs the job and writes the worker's heartbeat, the worker still idle: a
    # SIGTERM there raised in the heartbeat and left the job in the intermediate list, where it
    # waited a heartbeat TTL for a sweep (seen as 4 missing results in tests/e2e/test_e2e.py's
    # SIGTERM test, whose burst worker ends before any sweep).
    jobs = [enqueue(queue, "first"), enqueue(queue, "second")]
    real_heartbeat = SentiqWorker.heartbeat
    signalled: list[str] = []

    def heartbeat_under_a_signal(self: SentiqWorker, *args: Any, **kwargs: Any) -> None:
        if not signalled and queue.get_job_ids() == [jobs[1].id]:  # the first job was just taken
            signalled.append("heartbeat")
            self.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]  # what the signal runs
        real_heartbeat(self, *args, **kwargs)

    monkeypatch.setattr(SentiqWorker, "heartbeat", heartbeat_under_a_signal)
    worker.work(burst=True)
    monkeypatch.undo()
    assert signalled == ["heartbeat"]
    # Nothing answered or run; the first job is back at the front at once, not in the intermediate list.
    assert streamed_ids(redis_client, store) == []
    assert intermediate_job_ids(queue) == []
    assert queue.get_job_ids() == [job.id for job in jobs]
    settle_first_and_second(other_worker, [queue], store, jobs)
