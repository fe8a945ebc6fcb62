"""The batched dequeue of a worker on several queues, broken the way production and an attacker break it.

With several queues, each take moves job ids from the queues in turn (highest priority first) into
each queue's own intermediate list; the first job of a batch, popped by RQ's dequeue, is pushed
into its queue's intermediate list at once. These tests push one job id into two queues, move a
job from one queue to another, strand a take whose worker died, kill a worker while it gathers
and stop one while it reads the first job: every review is still answered once, nothing is run
twice, and no intermediate list keeps a copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from stack.namespace import delete_namespace
from tests.support.batch_worker import (
    assert_settled_in,
    enqueue,
    make_worker,
    streamed_ids,
)
from tests.worker.test_dequeue_adversarial import (
    counting_classify,
    stop_signal_at_first_read,
    sweep_twice,
)
from worker.model import SentimentModel
from worker.rq_internals import dequeue_jobs, intermediate_job_ids
from worker.worker import SentiqWorker


@pytest.fixture
def low(settings: Settings, redis_client: Redis) -> Iterator[Queue]:
    """A second queue, after the test's own queue (``queue``) in every worker's order."""
    name = f"{settings.queue.name}-low"
    yield Queue(name, connection=redis_client, serializer=JSONSerializer)
    delete_namespace(redis_client, name)


@pytest.fixture
def both(
    settings: Settings, queue: Queue, low: Queue, store: ResultStore, tiny_model: SentimentModel
) -> SentiqWorker:
    """A worker of the test's queue first, then ``low``."""
    return make_worker(queue, store, tiny_model, settings.worker, settings.queue, more_queues=[low])


# -- one job id in two queues --------------------------------------------------------------------


@pytest.mark.parametrize("copies", ["first job and a take", "two takes"])
def test_a_job_id_queued_in_two_queues_runs_once_and_no_copy_stays_in_an_intermediate_list(  # noqa: PLR0917
    copies: str,
    both: SentiqWorker,
    queue: Queue,
    low: Queue,
    redis_client: Redis,
    store: ResultStore,
) -> None:
    # A job of the low queue whose id another client pushed into the high queue too: RQ pops it
    # from the high queue as the batch's first job, or a take moves it from there after another.
    jobs = [] if copies == "first job and a take" else [enqueue(queue, "other", reviews=1)]
    twice = enqueue(low, "twice", reviews=1)
    redis_client.rpush(queue.key, twice.id)
    jobs.append(twice)
    classified = counting_classify(both)
    both.work(burst=True)
    assert sorted(classified) == sorted(job.id for job in jobs)
    # The copy the take moved from the low queue was left in its intermediate list, where the
    # sweep would put it back in the low queue a heartbeat TTL later, to be taken again.
    assert intermediate_job_ids(queue) == intermediate_job_ids(low) == []
    for each in (queue, low):
        sweep_twice(both, each)
    both.work(burst=True)
    assert sorted(classified) == sorted(job.id for job in jobs)
    ids = [f"{job.args[0]['reviews'][0]['id']}" for job in jobs]
    assert_settled_in(redis_client, [queue, low], store, jobs, ids)


# -- a take whose worker died: RQ's own clean-up of the intermediate lists -----------------------


def backdate_first_sight(queue: Queue, seconds: float) -> None:
    """Make every id in ``queue``'s intermediate list look first seen ``seconds`` ago."""
    for job_id in intermediate_job_ids(queue):
        queue.connection.set(queue.intermediate_queue.get_first_seen_key(job_id), time.time() - seconds)


def test_a_stranded_job_moved_from_another_queue_is_put_back_not_dropped(
    both: SentiqWorker, queue: Queue, low: Queue, redis_client: Redis, store: ResultStore
) -> None:
    moved = enqueue(low, "moved", reviews=1)
    # An operator moves a waiting job to the high queue (its origin still names the low queue); a
    # worker's take moves it into the high queue's intermediate list, and the worker dies.
    redis_client.lmove(low.key, queue.key, "LEFT", "RIGHT")
    assert dequeue_jobs([queue, low], 4, redis_client).taken == 1
    both.run_maintenance_tasks()  # first seen: a live worker may still be starting it
    # RQ's clean-up dropped it here (its queue's fetch_job finds no job whose origin is the high
    # queue): in no list and no registry, never answered.
    assert intermediate_job_ids(queue) == [moved.id]
    sweep_twice(both, queue)
    assert queue.get_job_ids() == [moved.id] and intermediate_job_ids(queue) == []
    both.work(burst=True)
    assert_settled_in(redis_client, [queue, low], store, [moved], ["moved-0"])
    assert redis_client.hget(moved.key, "retries_left") == b"2"


def test_with_a_heartbeat_ttl_over_a_minute_a_stranded_job_is_put_back_without_spending_a_retry(  # noqa: PLR0917
    settings: Settings,
    queue: Queue,
    low: Queue,
    redis_client: Redis,
    store: ResultStore,
    tiny_model: SentimentModel,
) -> None:
    patient = settings.worker.model_copy(update={"heartbeat_ttl_s": 120})
    worker = make_worker(queue, store, tiny_model, patient, settings.queue, more_queues=[low])
    stranded = enqueue(low, "stranded", reviews=1)
    assert dequeue_jobs([queue, low], 4, redis_client).taken == 1  # then its worker dies
    worker.run_maintenance_tasks()
    backdate_first_sight(low, 61)
    worker.run_maintenance_tasks()
    # RQ's clean-up failed it here, a minute after first sight, as "stuck in intermediate queue":
    # a retry spent on a job that never ran (with none left, its review answered with an error).
    assert intermediate_job_ids(low) == [stranded.id] and low.get_job_ids() == []
    assert redis_client.hget(stranded.key, "retries_left") == b"2"
    assert streamed_ids(redis_client, store) == []
    sweep_twice(worker, low)  # a heartbeat TTL after first sight
    assert low.get_job_ids() == [stranded.id]
    worker.work(burst=True)
    assert_settled_in(redis_client, [queue, low], store, [stranded], ["stranded-0"])
    assert redis_client.hget(stranded.key, "retries_left") == b"2"


def test_the_sweep_drops_an_id_whose_job_is_gone_from_an_intermediate_list(
    both: SentiqWorker, queue: Queue, low: Queue, redis_client: Redis
) -> None:
    gone = enqueue(low, "gone", reviews=1)
    assert dequeue_jobs([queue, low], 4, redis_client).taken == 1  # then its worker dies
    redis_client.delete(gone.key)
    both.run_maintenance_tasks()
    assert intermediate_job_ids(low) == [] and low.get_job_ids() == []


# -- a stop signal while the first job is read ---------------------------------------------------


def test_a_stop_signal_while_the_popped_first_job_is_read_puts_it_back_at_the_front(  # noqa: PLR0917
    both: SentiqWorker,
    queue: Queue,
    low: Queue,
    redis_client: Redis,
    store: ResultStore,
    settings: Settings,
    tiny_model: SentimentModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in test_dequeue_adversarial's single-queue test: RQ's SIGTERM handler raises StopRequested
    # inside RQ's restore of the first job's hash. With several queues RQ popped that job (LPOP) and
    # it is in no intermediate list: it was lost, queued forever and never answered.
    jobs = [enqueue(queue, "first"), enqueue(queue, "second"), enqueue(low, "third")]
    with stop_signal_at_first_read(both, monkeypatch) as signalled:
        both.work(burst=True)
    assert signalled == [jobs[0].id]
    # Nothing refused, answered or run; the first job is back where it was, at the front.
    assert streamed_ids(redis_client, store) == []
    assert [redis_client.hget(job.key, "status") for job in jobs] == [b"queued"] * 3
    assert queue.get_job_ids() == [jobs[0].id, jobs[1].id] and low.get_job_ids() == [jobs[2].id]
    assert intermediate_job_ids(queue) == intermediate_job_ids(low) == []
    other = make_worker(queue, store, tiny_model, settings.worker, settings.queue, more_queues=[low])
    other.work(burst=True)
    ids = [f"{name}-{n}" for name in ("first", "second", "third") for n in range(2)]
    assert_settled_in(redis_client, [queue, low], store, jobs, ids)


# -- the first job of a batch --------------------------------------------------------------------


class _WorkerDied(BaseException):
    """What a SIGKILL would do to the worker mid-gathering, for a test run in this process."""


@pytest.fixture
def new_worker(
    settings: Settings, queue: Queue, low: Queue, store: ResultStore, tiny_model: SentimentModel
) -> Callable[[], SentiqWorker]:
    """Makes another worker like ``both``: one that dies, one that survives it."""
    return lambda: make_worker(queue, store, tiny_model, settings.worker, settings.queue, more_queues=[low])


def test_the_first_job_waits_in_its_intermediate_list_until_it_starts_and_survives_its_worker(  # noqa: PLR0917
    new_worker: Callable[[], SentiqWorker],
    queue: Queue,
    low: Queue,
    redis_client: Redis,
    store: ResultStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RQ pops the first job of a worker on several queues (LPOP): while the worker gathered more
    # jobs it was in no list, and a worker dying then lost it, queued never again, never answered.
    import worker.worker as worker_module

    first = enqueue(low, "first", reviews=1)
    doomed = new_worker()
    held: list[list[str]] = []

    def dies_while_gathering(*_: object) -> object:
        held.append(intermediate_job_ids(low))
        raise _WorkerDied

    monkeypatch.setattr(worker_module, "dequeue_jobs", dies_while_gathering)
    doomed.work(burst=True)  # RQ's loop logs the unhandled exception and quits
    monkeypatch.undo()
    assert held == [[first.id]] and low.get_job_ids() == []
    survivor = new_worker()
    sweep_twice(survivor, low)  # a heartbeat TTL after first sight
    assert low.get_job_ids() == [first.id] and intermediate_job_ids(low) == []
    survivor.work(burst=True)
    assert_settled_in(redis_client, [queue, low], store, [first], ["first-0"])


def test_a_job_held_while_its_batch_runs_leaves_no_trace_in_the_intermediate_lists(
    both: SentiqWorker, queue: Queue, low: Queue, redis_client: Redis, store: ResultStore
) -> None:
    jobs = [enqueue(low, "low"), enqueue(queue, "high"), enqueue(low, "later")]
    both.work(burst=True)
    ids = [f"{name}-{n}" for name in ("low", "high", "later") for n in range(2)]
    assert_settled_in(redis_client, [queue, low], store, jobs, ids)
