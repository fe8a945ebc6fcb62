"""SentiqWorker in this process against a real Redis: batching, refusals, failure handling."""

from __future__ import annotations

import logging
import signal
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from sentiq.contract import CLASSIFY_TASK
from worker.rq_internals import intermediate_job_ids
from worker.worker import SentiqWorker


@pytest.fixture
def worker(batching_worker: SentiqWorker) -> SentiqWorker:
    """Every test here that takes ``worker`` runs one batch at a time and with overlapping batches;
    tests that set up their batching themselves take ``other_worker``."""
    return batching_worker


def _gathering_at_most(worker: SentiqWorker, tokens: int) -> SentiqWorker:
    """The same worker, but gathering at most ``tokens`` (``max_gather_tokens``)."""
    return _with_settings(worker, max_gather_tokens=tokens)


def _with_settings(worker: SentiqWorker, **changes: object) -> SentiqWorker:
    """The same worker with some of its settings changed."""
    return SentiqWorker(
        worker.queues,
        classifier=worker.classifier,
        settings=worker.settings.model_copy(update=changes),
        queue_settings=worker.queue_settings,
        connection=worker.connection,
    )


def _recording_takes(
    monkeypatch: pytest.MonkeyPatch, before_take: Callable[[], None] = lambda: None
) -> list[int]:
    """How many jobs each take of a gathering asked for; ``before_take`` runs before each take."""
    import worker.worker as worker_module

    takes: list[int] = []
    real_dequeue_jobs = worker_module.dequeue_jobs

    def recording(queues: object, most: int, connection: Redis) -> object:
        before_take()
        takes.append(most)
        return real_dequeue_jobs(queues, most, connection)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_module, "dequeue_jobs", recording)
    return takes


def _work_logging_batches(worker: SentiqWorker, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run ``worker`` until the queue is empty; its ``batch ...`` log lines."""
    with caplog.at_level(logging.INFO, logger="worker.worker"):
        worker.work(burst=True)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]


def payload(prefix: str, count: int) -> dict[str, object]:
    return {"v": 1, "reviews": [{"id": f"{prefix}-{i}", "text": f"review number {i}"} for i in range(count)]}


class Marker:
    """Unpickling this creates a file: proof of code execution, if it ever happened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.path),))  # type: ignore[return-value]


def test_queued_jobs_are_classified_together(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [queue.enqueue(CLASSIFY_TASK, payload(f"j{n}", 3)) for n in range(5)]
    batch_lines = _work_logging_batches(worker, caplog)
    assert batch_lines and batch_lines[0].startswith("batch jobs=5 reviews=15 errors=0 passes=1")
    stored = worker.classifier.store.fetch([f"j{n}-{i}" for n in range(5) for i in range(3)])
    assert len(stored) == 15 and all(p.ok for p in stored.values())
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == {"reviews": 3, "errors": 0, "error_ids": []}


def test_the_gather_token_limit_bounds_how_many_jobs_are_gathered(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    max_length = worker.classifier.model.info.max_length
    # Four reviews' worth of tokens at the model's max length, a little more does not make five.
    worker = _gathering_at_most(worker, 5 * max_length - 1)
    assert worker.gather_reviews == 4
    for n in range(4):
        queue.enqueue(CLASSIFY_TASK, payload(f"b{n}", 2))
    batch_lines = _work_logging_batches(worker, caplog)
    assert [line.split()[1] for line in batch_lines] == ["jobs=2", "jobs=2"]


def test_a_job_naming_another_callable_runs_nothing(
    worker: SentiqWorker, queue: Queue, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = queue.enqueue("os.system", f"touch {marker}")
    good = queue.enqueue(CLASSIFY_TASK, payload("after-evil", 2))
    worker.work(burst=True)
    assert not marker.exists()
    evil.refresh()
    assert evil.get_status() == JobStatus.FAILED
    assert "names 'os.system'; sentiq workers only run 'worker.tasks.classify_reviews'" in (
        evil.latest_result().exc_string or ""
    )
    assert evil.id in FailedJobRegistry(queue=queue)
    good.refresh()
    assert good.get_status() == JobStatus.FINISHED


def test_a_pickled_payload_is_never_unpickled(
    worker: SentiqWorker, queue: Queue, redis_client: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    pickle_queue = Queue(queue.name, connection=redis_client)  # RQ's default serializer: pickle
    evil = pickle_queue.enqueue(CLASSIFY_TASK, Marker(marker))
    # The payload really would run code if unpickled: check the test's own weapon.
    raw = redis_client.hget(evil.key, "data")
    assert raw is not None and zlib.decompress(raw).startswith(b"\x80")
    worker.work(burst=True)
    assert not marker.exists()
    job = Job.fetch(evil.id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert evil.id in FailedJobRegistry(queue=queue)
    assert "payload is not JSON (pickled or corrupt data)" in (job.latest_result().exc_string or "")


def test_a_job_with_callbacks_is_refused_and_its_callbacks_never_run(
    worker: SentiqWorker, queue: Queue, tmp_path: Path
) -> None:
    job = queue.enqueue(
        CLASSIFY_TASK,
        payload("cb", 1),
        on_success=Callback("os.system"),
        on_failure=Callback("os.abort"),
    )
    worker.work(burst=True)  # os.abort would kill this test process
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert "names callbacks" in (job.latest_result().exc_string or "")


def test_a_malformed_payload_fails_cleanly_without_retries(worker: SentiqWorker, queue: Queue) -> None:
    bad = queue.enqueue(CLASSIFY_TASK, "just a string", retry=Retry(max=3))
    empty = queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": []})
    good = queue.enqueue(CLASSIFY_TASK, payload("fine", 1))
    worker.work(burst=True)
    bad.refresh()
    empty.refresh()
    good.refresh()
    assert bad.get_status() == JobStatus.FAILED
    assert "takes exactly one JSON object argument" in (bad.latest_result().exc_string or "")
    assert "reviews: List should have at least 1 item" in (empty.latest_result().exc_string or "")
    assert good.get_status() == JobStatus.FINISHED


def test_a_job_hash_that_cannot_be_read_fails_alone(
    worker: SentiqWorker, queue: Queue, redis_client: Redis
) -> None:
    broken = queue.enqueue(CLASSIFY_TASK, payload("broken", 1))
    redis_client.hset(broken.key, "created_at", "not a date")
    good = queue.enqueue(CLASSIFY_TASK, payload("fine-after-broken", 1))
    worker.work(burst=True)
    good.refresh()
    assert good.get_status() == JobStatus.FINISHED
    assert broken.id in FailedJobRegistry(queue=queue)


def test_a_failing_batch_without_retries_left_answers_every_review(
    worker: SentiqWorker, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(worker.classifier.model, "predict", explode)
    job = queue.enqueue(CLASSIFY_TASK, payload("oom", 2))
    worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    stored = worker.classifier.store.fetch(["oom-0", "oom-1"])
    # The job had no retry count, so the worker filled in SENTIQ_QUEUE_JOB_RETRIES; after the last
    # attempt every review answers with the reason.
    assert job.retries_left == 0
    assert {p.error for p in stored.values()} == {
        "not classified: RuntimeError: CUDA out of memory (simulated)"
    }


def test_a_failing_batch_with_retries_left_is_requeued(
    worker: SentiqWorker, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_classify = worker.classifier.classify

    # The whole first attempt fails (as when the device is lost), not one review: that is retried.
    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return real_classify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.classifier, "classify", flaky)
    job = queue.enqueue(CLASSIFY_TASK, payload("flaky", 2), retry=Retry(max=1))
    worker.work(burst=True)
    job.refresh()
    assert calls["n"] == 2 and job.retries_left == 0
    assert job.get_status() == JobStatus.FINISHED
    assert all(p.ok for p in worker.classifier.store.fetch(["flaky-0", "flaky-1"]).values())


def test_ready_file_tracks_the_worker(
    worker: SentiqWorker, queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = tmp_path / "ready"
    worker.settings = worker.settings.model_copy(update={"ready_file": ready})
    seen_while_working: list[bool] = []
    real_classify = worker.classifier.classify

    def classify(*args: object, **kwargs: object) -> object:
        seen_while_working.append(ready.exists())
        return real_classify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.classifier, "classify", classify)
    queue.enqueue(CLASSIFY_TASK, payload("ready", 1))
    worker.work(burst=True)
    assert seen_while_working == [True]
    assert not ready.exists()


def test_one_review_jobs_are_gathered_a_growing_number_at_a_time(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    takes = _recording_takes(monkeypatch)
    assert worker.gather_reviews >= 40
    for n in range(40):
        queue.enqueue(CLASSIFY_TASK, payload(f"one{n}", 1))
    batch_lines = _work_logging_batches(worker, caplog)
    assert batch_lines[0].startswith("batch jobs=40 reviews=40 errors=0")
    # 39 more jobs in takes of 1, 2, 4, 8, 16 and the 8 left (asking for 32 finds the queue dry).
    assert takes == [1, 2, 4, 8, 16, 32]
    stored = worker.classifier.store.fetch([f"one{n}-0" for n in range(40)])
    assert len(stored) == 40 and all(p.ok for p in stored.values())


def test_a_surprise_of_big_jobs_overshoots_the_gathering_by_at_most_one_take(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _gathering_at_most(worker, 100 * worker.classifier.model.info.max_length)
    assert worker.gather_reviews == 100
    queue.enqueue(CLASSIFY_TASK, payload("small", 1))
    for n in range(10):
        queue.enqueue(CLASSIFY_TASK, payload(f"big{n}", 50))
    batch_lines = _work_logging_batches(worker, caplog)
    # 1 review, then one job of 50 (taken as if it held 1), then two (taken at 25.5 a job): 151 reviews.
    assert batch_lines[0].startswith("batch jobs=4 reviews=151 ")
    assert sum(int(line.split()[2].split("=")[1]) for line in batch_lines) == 501


def test_queued_jobs_are_all_gathered_however_long_taking_them_lasts(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoding big jobs takes milliseconds; a clock on the gathering cut GPU batches to two jobs.
    assert worker.settings.max_wait_ms == 0
    takes = _recording_takes(monkeypatch, before_take=lambda: time.sleep(0.05))
    for n in range(40):
        queue.enqueue(CLASSIFY_TASK, payload(f"slow{n}", 1))
    batch_lines = _work_logging_batches(worker, caplog)
    assert batch_lines[0].startswith("batch jobs=40 reviews=40 errors=0")
    assert takes == [1, 2, 4, 8, 16, 32]


def test_a_batch_waits_up_to_max_wait_ms_for_jobs_once_the_queue_runs_dry(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _with_settings(worker, max_wait_ms=1000)
    late: list[threading.Thread] = []

    def enqueue_later() -> None:
        time.sleep(0.05)
        for n in range(3):
            queue.enqueue(CLASSIFY_TASK, payload(f"late{n}", 1))

    def on_first_take() -> None:
        # The first take finds the queue empty; the late jobs arrive while the batch waits.
        if not late:
            late.append(threading.Thread(target=enqueue_later))
            late[0].start()

    takes = _recording_takes(monkeypatch, before_take=on_first_take)
    queue.enqueue(CLASSIFY_TASK, payload("first", 1))
    try:
        batch_lines = _work_logging_batches(worker, caplog)
    finally:
        for thread in late:
            thread.join()
    assert len(takes) > 1
    assert batch_lines[0].startswith("batch jobs=4 reviews=4 errors=0")
    stored = worker.classifier.store.fetch(["first-0", "late0-0", "late1-0", "late2-0"])
    assert len(stored) == 4 and all(p.ok for p in stored.values())


def test_a_warm_shutdown_ends_the_wait_for_more_jobs(
    worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _with_settings(worker, max_wait_ms=1000)
    takes = _recording_takes(monkeypatch, before_take=lambda: worker.request_stop(signal.SIGTERM, None))
    queue.enqueue(CLASSIFY_TASK, payload("alone", 1))
    batch_lines = _work_logging_batches(worker, caplog)
    # The first take finds the queue dry and the stop ends the wait: no second take.
    assert takes == [1]
    assert batch_lines == [line for line in batch_lines if line.startswith("batch jobs=1 reviews=1 errors=0")]
    assert len(batch_lines) == 1
    assert worker.classifier.store.fetch(["alone-0"])["alone-0"].ok


# -- overlapping batches (overlap_batches: the passes on the model thread) -----------------------


def _overlapping(worker: SentiqWorker, reviews_per_batch: int) -> SentiqWorker:
    """The worker with overlapping batches, gathering ``reviews_per_batch`` reviews a batch."""
    max_length = worker.classifier.model.info.max_length
    return _with_settings(worker, overlap_batches="on", max_gather_tokens=reviews_per_batch * max_length)


def _classifying(worker: SentiqWorker, during: Callable[[list[str]], None]) -> list[list[str]]:
    """The job ids of each batch classified; ``during`` runs with them before its passes."""
    batches: list[list[str]] = []
    real = worker.classifier.classify

    def classify(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append([job_id for job_id, _ in jobs])
        during(batches[-1])
        return real(jobs, *args, **kwargs)

    worker.classifier.classify = classify  # type: ignore[method-assign]
    return batches


def test_with_overlapping_batches_the_next_batch_starts_while_the_passes_run(
    other_worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _overlapping(other_worker, 2)
    jobs = [queue.enqueue(CLASSIFY_TASK, payload(f"o{n}", 2)) for n in range(6)]
    seen_started: list[bool] = []

    def wait_for_the_next_start(batch: list[str]) -> None:
        if batch == [jobs[0].id]:
            deadline = time.monotonic() + 10
            while jobs[1].get_status(refresh=True) != JobStatus.STARTED and time.monotonic() < deadline:
                time.sleep(0.005)
            seen_started.append(jobs[1].get_status(refresh=True) == JobStatus.STARTED)

    batches = _classifying(worker, wait_for_the_next_start)
    batch_lines = _work_logging_batches(worker, caplog)
    assert seen_started == [True]
    assert batches == [[job.id] for job in jobs] and len(batch_lines) == 6
    stored = worker.classifier.store.fetch([f"o{n}-{i}" for n in range(6) for i in range(2)])
    assert len(stored) == 12 and all(p.ok for p in stored.values())
    for job in jobs:
        assert job.get_status(refresh=True) == JobStatus.FINISHED


def test_a_batch_whose_passes_fail_leaves_the_batch_started_behind_it_unharmed(
    other_worker: SentiqWorker, queue: Queue
) -> None:
    worker = _overlapping(other_worker, 2)
    doomed = queue.enqueue(CLASSIFY_TASK, payload("doomed", 2), retry=None)
    fine = queue.enqueue(CLASSIFY_TASK, payload("fine", 2))

    def fail_the_first(batch: list[str]) -> None:
        if batch == [doomed.id]:
            raise RuntimeError("device lost")

    _classifying(worker, fail_the_first)
    # The probe after a failed pass passes (the model is fine), so only the culprit fails.
    worker.work(burst=True)
    stored = worker.classifier.store.fetch(["doomed-0", "doomed-1", "fine-0", "fine-1"])
    assert stored["fine-0"].ok and stored["fine-1"].ok
    assert not stored["doomed-0"].ok and "device lost" in (stored["doomed-0"].error or "")
    assert fine.get_status(refresh=True) == JobStatus.FINISHED
    assert doomed.get_status(refresh=True) == JobStatus.FAILED


def test_a_warm_shutdown_finishes_the_overlapping_batches_and_takes_no_more(
    other_worker: SentiqWorker, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _overlapping(other_worker, 2)
    jobs = [queue.enqueue(CLASSIFY_TASK, payload(f"s{n}", 2)) for n in range(5)]
    takes = _recording_takes(
        monkeypatch,
        # The stop lands while the second batch is gathered, the first in its passes.
        before_take=lambda: None if takes else worker.request_stop(signal.SIGTERM, None),
    )
    worker.work(burst=True)
    statuses = [job.get_status(refresh=True) for job in jobs]
    assert statuses == [JobStatus.FINISHED] * 2 + [JobStatus.QUEUED] * 3
    assert queue.get_job_ids() == [job.id for job in jobs[2:]]
    assert intermediate_job_ids(queue) == []
    stored = worker.classifier.store.fetch([f"s{n}-{i}" for n in range(5) for i in range(2)])
    assert sorted(stored) == [f"s{n}-{i}" for n in range(2) for i in range(2)]


def test_jobs_without_reviews_count_toward_the_gathering_limit(
    other_worker: SentiqWorker, queue: Queue
) -> None:
    # Without a clock, jobs that add no reviews (refused later) must not make a gathering take the
    # whole queue while the jobs already gathered wait to start.
    worker = _gathering_at_most(other_worker, 4 * other_worker.classifier.model.info.max_length)
    for n in range(100):
        queue.enqueue(CLASSIFY_TASK, {"v": 1, "reviews": []}, job_id=f"empty-{n}")
    gathered = worker._gather_more([])
    assert 4 <= len(gathered) <= 8
    assert len(queue.get_job_ids()) >= 92


def test_waiting_for_the_next_batch_does_not_hold_back_the_finished_one(
    other_worker: SentiqWorker, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _with_settings(_overlapping(other_worker, 4), max_wait_ms=1000)
    for n in range(3):
        queue.enqueue(CLASSIFY_TASK, payload(f"w{n}", 2))
    batch_lines = _work_logging_batches(worker, caplog)
    # The first batch (two jobs) is published once its passes end; the gathering of the third job,
    # which waits for company, stops waiting then. Before, it waited its full second first.
    assert [line.split()[1] for line in batch_lines] == ["jobs=2", "jobs=1"]
    first_ms = float(batch_lines[0].rsplit("ms=", 1)[1])
    assert first_ms < 900, batch_lines[0]
