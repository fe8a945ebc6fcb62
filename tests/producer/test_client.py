"""producer.client against a real Redis: the jobs it writes, how it waits, and how it connects."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError

from producer import (
    Client,
    InvalidRedisUrlError,
    InvalidReviewError,
    Prediction,
    QueueFullError,
    RedisAuthenticationError,
    RedisFullError,
    RedisUnavailableError,
    ResultsTimeoutError,
)
from sentiq.contract import CLASSIFY_TASK, MAX_JOB_DATA_BYTES, JobPayload, result_key
from sentiq.errors import EXIT_USAGE, exit_code_for
from sentiq.result_store import STREAM_FIELD_ID, STREAM_FIELD_RESULT
from sentiq.settings import Settings
from stack.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from tests.support.producer_fakes import FAKE_MODEL, FakeWorker, counting_redis, publish_later, store_for


def with_producer(settings: Settings, **fields: object) -> Settings:
    return settings.model_copy(update={"producer": settings.producer.model_copy(update=fields)})


def with_queue(settings: Settings, **fields: object) -> Settings:
    return settings.model_copy(update={"queue": settings.queue.model_copy(update=fields)})


def with_redis(settings: Settings, **fields: object) -> Settings:
    return settings.model_copy(update={"redis": settings.redis.model_copy(update=fields)})


def queued_jobs(redis_client: Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    job_ids: list[bytes] = redis_client.lrange(f"rq:queue:{settings.queue.name}", 0, -1)  # type: ignore[assignment]
    return [redis_client.hgetall(f"rq:job:{job_id.decode()}") for job_id in job_ids]  # type: ignore[misc]


def decode_job_data(job_hash: dict[bytes, bytes]) -> tuple[str, list[object], dict[str, object]]:
    """The (function name, args, kwargs) of a raw RQ job hash; fails unless the data is JSON."""
    func_name, _instance, args, kwargs = json.loads(zlib.decompress(job_hash[b"data"]))
    return func_name, args, kwargs


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client.from_settings(settings) as opened:
        yield opened


# -- submit ------------------------------------------------------------------------------------


def test_submit_writes_json_jobs_packed_by_reviews_per_job(settings: Settings, redis_client: Redis) -> None:
    settings = with_queue(with_producer(settings, reviews_per_job=3), job_retries=2, failure_ttl_s=321)
    ids = [f"review-{n}" for n in range(7)]
    with Client.from_settings(settings) as client:
        returned = client.submit([f"text {n}" for n in range(7)], ids)

    assert returned == ids
    jobs = queued_jobs(redis_client, settings)
    assert len(jobs) == 3
    packed: list[list[str]] = []
    for job in jobs:
        func_name, args, kwargs = decode_job_data(job)
        assert func_name == CLASSIFY_TASK
        payload = JobPayload.decode(args, kwargs)
        packed.append([review["id"] for review in payload.reviews])
        assert all(review["text"] == f"text {review['id'].split('-')[1]}" for review in payload.reviews)
        # Nothing pickled anywhere in the job (pickle streams start with 0x80).
        assert not [field for field, value in job.items() if value.startswith(b"\x80")]
        assert int(job[b"retries_left"]) == 2
        assert int(job[b"failure_ttl"]) == 321
        assert job[b"origin"].decode() == settings.queue.name
        # The description stays short rather than repeating every review text.
        assert len(job[b"description"]) < 200
    assert packed == [ids[0:3], ids[3:6], ids[6:7]]


def test_submit_without_retries_sets_none(settings: Settings, redis_client: Redis) -> None:
    with Client.from_settings(with_queue(settings, job_retries=0)) as client:
        client.submit(["just one"])
    (job,) = queued_jobs(redis_client, settings)
    assert b"retries_left" not in job


def test_submit_generates_missing_ids(client: Client) -> None:
    ids = client.submit(["a", "b", "c"], ["mine", None, "also-mine"])
    assert ids[0] == "mine" and ids[2] == "also-mine"
    assert str(uuid.UUID(ids[1])) == ids[1]
    generated = client.submit(["x", "y"])
    assert len(set(generated)) == 2 and all(str(uuid.UUID(value)) == value for value in generated)


def test_submit_accepts_any_iterable_and_nothing(client: Client, redis_client: Redis) -> None:
    assert client.submit(text for text in ["one", "two"]) != []
    assert client.submit([]) == []
    assert len(queued_jobs(redis_client, client.settings)) == 1


@pytest.mark.parametrize(("max_queue_depth", "sends"), [(0, 1), (10_000, 2)])
def test_submit_is_one_round_trip(
    settings: Settings, redis_url: str, max_queue_depth: int, sends: int
) -> None:
    """One MULTI/EXEC, plus one LLEN when the queue depth is bounded."""
    counted, counter = counting_redis(redis_url)
    producer = {"reviews_per_job": 10, "max_queue_depth": max_queue_depth}
    with Client.from_settings(with_producer(settings, **producer), connection=counted) as client:
        counter.sends = 0
        ids = client.submit([f"review {n}" for n in range(100)])
        assert counter.sends == sends
        assert client.queue.count == 10
        assert len(ids) == 100
    counted.close()


def test_bulk_submit_is_chunked_into_round_trips(settings: Settings, redis_url: str) -> None:
    counted, counter = counting_redis(redis_url)
    progress: list[int] = []
    with Client(
        settings=with_producer(settings, reviews_per_job=10, max_queue_depth=0),
        connection=counted,
        jobs_per_round_trip=4,
    ) as client:
        counter.sends = 0
        client.submit([f"review {n}" for n in range(95)], on_enqueued=progress.append)
        assert counter.sends == 3
        assert client.queue.count == 10
    assert progress == [40, 80, 95]
    counted.close()


@pytest.mark.parametrize(
    ("texts", "ids", "message"),
    [
        (["fine", "   "], None, "review #1: review text is empty"),
        (["fine", "x" * 51], None, "review #1: review text has 51 characters, more than the limit of 50"),
        (["fine", "fine"], ["ok", "bad id!"], "review #1: invalid review id"),
        (["fine", "fine"], ["same", "same"], "review #1: duplicate id 'same'"),
        (["fine", "fine"], ["only-one"], "got 2 texts but 1 ids"),
        (["fine", 7], None, "review #1: review text must be a string, got int"),
        ("a single string", None, "not a single string"),
    ],
)
def test_submit_rejects_invalid_reviews_and_enqueues_nothing(
    settings: Settings, redis_client: Redis, texts: list[str], ids: list[str] | None, message: str
) -> None:
    with (
        Client.from_settings(with_queue(settings, max_review_chars=50)) as client,
        pytest.raises(InvalidReviewError, match=re.escape(message)),
    ):
        client.submit(texts, ids)
    assert queued_jobs(redis_client, settings) == []


# -- waiting for results -------------------------------------------------------------------------


def test_results_wait_for_late_results_in_order_without_polling(settings: Settings, redis_url: str) -> None:
    counted, counter = counting_redis(redis_url)
    with Client.from_settings(settings, connection=counted) as client:
        ids = client.submit(["first", "second", "third"])
        late = [Prediction(id=review_id, label="positive", score=0.5) for review_id in reversed(ids)]
        early = publish_later(settings, late[:1], delay_s=0.3)
        rest = publish_later(settings, late[1:], delay_s=0.9)
        counter.sends = 0
        predictions = client.results(ids, timeout=10)
        early.join()
        rest.join()
        # last_stream_id + MGET + one XREAD per publish (+ slack): a poller would issue hundreds.
        assert counter.sends <= 6
    assert [prediction.id for prediction in predictions] == ids
    counted.close()


def test_iter_results_yields_each_prediction_as_it_arrives(settings: Settings, redis_client: Redis) -> None:
    store = store_for(settings, redis_client)
    first_received = threading.Event()

    def answer_one_at_a_time() -> None:
        store.publish([Prediction(id="one", label="negative", score=0.9)])
        # The second result is only published once the first reached the consumer, so a consumer
        # that gathered everything before yielding would time out here.
        if first_received.wait(timeout=5):
            store.publish([Prediction(id="two", label="positive", score=0.8)])

    with Client.from_settings(settings) as client:
        publisher = threading.Thread(target=answer_one_at_a_time)
        results = client.iter_results(["one", "two"], timeout=5)
        publisher.start()
        first = next(results)
        first_received.set()
        rest = list(results)
        publisher.join()
    assert first.id == "one"
    assert [prediction.id for prediction in rest] == ["two"]


def test_results_already_stored_come_back_at_once(settings: Settings, redis_client: Redis) -> None:
    store_for(settings, redis_client).publish([Prediction(id="done", label="positive", score=1.0)])
    with Client.from_settings(settings) as client:
        started = time.monotonic()
        (prediction,) = client.results(["done"], timeout=30)
    assert prediction.label == "positive"
    assert time.monotonic() - started < 5


def test_results_timeout_lists_missing_ids(settings: Settings, redis_client: Redis) -> None:
    store_for(settings, redis_client).publish([Prediction(id="here", label="positive", score=0.7)])
    with Client.from_settings(settings) as client, pytest.raises(ResultsTimeoutError) as caught:
        client.results(["here", "gone-1", "gone-2"], timeout=0.5)
    assert caught.value.missing == ["gone-1", "gone-2"]
    assert "2 result(s) missing after 0.5s: gone-1, gone-2" in str(caught.value)


def test_default_timeout_comes_from_settings(settings: Settings) -> None:
    with Client.from_settings(with_producer(settings, result_timeout_s=0.3)) as client:
        started = time.monotonic()
        with pytest.raises(ResultsTimeoutError):
            client.results(["never"])
    assert time.monotonic() - started < 5


def test_review_errors_come_back_as_predictions(settings: Settings) -> None:
    with Client.from_settings(settings) as client:
        ids = client.submit(["ok", "bad"], ["ok", "bad"])
        publish_later(
            settings,
            [
                Prediction(id="ok", label="negative", score=0.6, model="m"),
                Prediction(id="bad", model="m", error="text could not be tokenized"),
            ],
            delay_s=0.2,
        ).join()
        ok, bad = client.results(ids, timeout=5)
    assert ok.ok and ok.label == "negative"
    assert not bad.ok and bad.error == "text could not be tokenized" and bad.label is None


def test_result_whose_stream_entry_was_trimmed_is_still_found(
    settings: Settings, redis_client: Redis
) -> None:
    """The capped stream may drop entries before a slow client reads them; the re-fetch finds them."""
    store = store_for(settings, redis_client)
    prediction = Prediction(id="trimmed", label="positive", score=0.9)

    def publish_then_trim() -> None:
        time.sleep(0.2)
        with redis_client.pipeline(transaction=True) as pipe:
            pipe.set(result_key(store.prefix, prediction.id), prediction.to_json(), ex=store.ttl_s)
            pipe.xadd(
                store.stream, {STREAM_FIELD_ID: prediction.id, STREAM_FIELD_RESULT: prediction.to_json()}
            )
            pipe.xtrim(store.stream, maxlen=0, approximate=False)
            pipe.execute()

    with Client.from_settings(settings, connection=None) as client:
        client.refetch_interval_s = 0.3
        publisher = threading.Thread(target=publish_then_trim)
        publisher.start()
        started = time.monotonic()
        (found,) = client.results(["trimmed"], timeout=20)
        publisher.join()
    assert found.label == "positive"
    # Found by the periodic re-fetch, long before the final fetch at the 20 s deadline.
    assert time.monotonic() - started < 10


def test_classify_submits_and_waits(settings: Settings) -> None:
    with Client.from_settings(settings) as client, FakeWorker(settings):
        predictions = client.classify(["A good film", "A dull film", "FAIL please"], timeout=10)
    assert [(p.label, p.model) for p in predictions[:2]] == [
        ("positive", FAKE_MODEL),
        ("negative", FAKE_MODEL),
    ]
    assert predictions[2].error is not None


# -- configuration and connections ---------------------------------------------------------------


def test_client_takes_its_defaults_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("SENTIQ_REDIS_URL", settings.redis.url)
    monkeypatch.setenv("SENTIQ_QUEUE_NAME", settings.queue.name)
    monkeypatch.setenv("SENTIQ_PRODUCER_REVIEWS_PER_JOB", "5")
    with Client() as client:
        assert client.queue.name == settings.queue.name
        assert client.settings.producer.reviews_per_job == 5
    with Client(queue=f"{settings.queue.name}-other") as client:
        assert client.queue.name == f"{settings.queue.name}-other"


def test_explicit_url_and_queue_override_the_settings(settings: Settings, redis_url: str) -> None:
    moved = with_redis(settings, url="redis://127.0.0.1:1/0")
    with Client(redis_url, settings=moved, queue=settings.queue.name) as client:
        assert client.settings.redis.url == redis_url
        assert client.queue.name == settings.queue.name


def test_unreachable_redis_fails_fast_with_a_clear_error(settings: Settings) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="cannot reach Redis") as caught:
        Client(url, settings=with_redis(settings, socket_timeout_s=1.0))
    assert "hunter2" not in str(caught.value)
    assert time.monotonic() - started < 5


def test_redis_lost_mid_wait_is_reported_as_unavailable(settings: Settings) -> None:
    with EmbeddedRedis() as server:
        client = Client(server.url, settings=settings)
        server.stop()
        with pytest.raises(RedisUnavailableError):
            client.results(["whatever"], timeout=2)
        client.close()


def test_password_protected_redis(settings: Settings) -> None:
    with EmbeddedRedis(password="s3cret-pass") as server:
        with Client(server.url, settings=settings) as client:
            ids = client.submit(["behind a password"])
            assert client.queue.count == 1
            with FakeWorker(client.settings):
                (prediction,) = client.results(ids, timeout=10)
            assert prediction.model == FAKE_MODEL
        wrong = server.url.replace("s3cret-pass", "wrong-pass")
        with pytest.raises(RedisAuthenticationError) as caught:
            Client(wrong, settings=settings)
        assert isinstance(caught.value, RedisUnavailableError)
        assert "wrong-pass" not in str(caught.value)
        assert exit_code_for(caught.value) == EXIT_USAGE


def test_an_acl_user_refused_ping_is_a_configuration_error_not_an_outage(settings: Settings) -> None:
    with EmbeddedRedis() as server:
        admin = Redis.from_url(server.url)
        admin.acl_setuser(
            "limited", enabled=True, passwords=["+limited-pass"], keys="~*", commands=["+@all", "-ping"]
        )
        admin.close()
        limited = server.url.replace("redis://", "redis://limited:limited-pass@")
        with pytest.raises(RedisAuthenticationError, match="refused this user PING") as caught:
            Client(limited, settings=settings)
    assert exit_code_for(caught.value) == EXIT_USAGE and "limited-pass" not in str(caught.value)


def test_a_redis_back_with_another_password_is_refused_at_once_not_waited_for(settings: Settings) -> None:
    with EmbeddedRedis(password="first-pass") as server:
        on_server = with_redis(settings, url=server.url)
        admin = Redis.from_url(server.url)
        try:
            with Client.from_settings(on_server) as client:
                ids = client.submit(["before the change"])
                outcome: dict[str, BaseException] = {}

                def wait() -> None:
                    try:
                        client.results(ids, timeout=120)
                    except BaseException as error:
                        outcome["error"] = error

                waiter = threading.Thread(target=wait, name="waiter", daemon=True)
                waiter.start()
                time.sleep(0.5)  # the waiter is blocked in XREAD now
                # What a restart with a new password looks like to the client: its connections
                # drop and new ones are refused.
                admin.config_set("requirepass", "second-pass")
                admin.client_kill_filter(_type="normal", skipme=True)
                waiter.join(timeout=30)
                assert not waiter.is_alive(), "the waiter kept retrying refused credentials"
                assert isinstance(outcome.get("error"), RedisAuthenticationError), outcome
                with pytest.raises(RedisAuthenticationError) as caught:
                    client.submit(["after the change"])
                for error in (outcome["error"], caught.value):
                    assert "first-pass" not in str(error) and "second-pass" not in str(error)
        finally:
            admin.close()


def wait_for_server(url: str, process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Return once the redis-server ``process`` answers PING on ``url``; raise if it died or is late."""
    deadline = time.monotonic() + timeout_s
    probe = Redis.from_url(url, socket_connect_timeout=1)
    try:
        while True:
            try:
                probe.ping()
                return
            except RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        probe.close()


@pytest.fixture
def unix_socket_redis() -> Iterator[str]:
    """A redis-server listening only on a unix socket; its ``unix://`` URL."""
    # A short folder: unix socket paths are limited to about 100 characters.
    folder = Path(tempfile.mkdtemp(prefix="sq-", dir="/tmp"))
    socket_path = folder / "redis.sock"
    process = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"unix://{socket_path}?db=0"
    try:
        wait_for_server(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


def test_unix_socket_url(settings: Settings, unix_socket_redis: str) -> None:
    with Client(unix_socket_redis, settings=settings) as client:
        ids = client.submit(["over a unix socket", "a good one"])
        with FakeWorker(client.settings):
            predictions = client.results(ids, timeout=10)
    assert [prediction.label for prediction in predictions] == ["negative", "positive"]


def test_resubmitting_an_id_waits_for_the_new_result(settings: Settings, redis_client: Redis) -> None:
    store = store_for(settings, redis_client)
    store.publish([Prediction(id="again", label="negative", score=0.9, model="old-model")])
    with Client.from_settings(settings) as client:
        client.submit(["A second look at the same review."], ids=["again"])
        with pytest.raises(ResultsTimeoutError, match="again"):
            client.results(["again"], timeout=0.2)


# -- client edges (issue 7, finding 3 and 11) ------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", "Nice film \ud800"], "review #1: review text is not valid Unicode: surrogates not allowed"),
        (["fine", "<br /><br />"], "review #1: review text is empty"),
        (None, "texts must be a list or tuple of strings, got NoneType"),
        (123, "texts must be a list or tuple of strings, got int"),
        ({"a": "mapping"}, "texts must be a list or tuple of strings, got dict"),
        (b"bytes", "texts must be a list or tuple of strings, got bytes"),
        ([1, 2], "review #0: review text must be a string, got int"),
    ],
)
def test_submit_refuses_what_is_not_a_list_of_valid_texts(
    client: Client, redis_client: Redis, texts: object, message: str
) -> None:
    with pytest.raises(InvalidReviewError, match=re.escape(message)):
        client.submit(texts)  # type: ignore[arg-type]
    assert queued_jobs(redis_client, client.settings) == []


def test_submit_refuses_ids_given_as_one_string(client: Client) -> None:
    with pytest.raises(
        InvalidReviewError, match="ids must be a list or tuple of strings, not a single string"
    ):
        client.submit(["a", "b", "c"], "abc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("abc", "ids must be a list or tuple of strings, not a single string"),
        (None, "ids must be a list or tuple of strings, got NoneType"),
        ({"a": 1}, "got dict"),
        (["ok", 7], "ids[1] must be a review id string, got int"),
    ],
)
def test_reading_results_refuses_ids_that_are_not_a_list_of_strings(
    client: Client, ids: object, message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        client.results(ids, timeout=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape(message)):
        client.fetch(ids)  # type: ignore[arg-type]
    # Raised when called, not on the first next().
    with pytest.raises(TypeError, match=re.escape(message)):
        client.iter_results(ids, timeout=0.1)  # type: ignore[arg-type]


def test_packing_keeps_each_job_under_the_workers_data_limit(settings: Settings, redis_client: Redis) -> None:
    """Huge reviews are split into more jobs than reviews_per_job alone would make."""
    texts = ["y" * 700_000 for _ in range(3)]
    with Client.from_settings(with_queue(settings, max_review_chars=1_000_000)) as client:
        client.submit(texts)
    jobs = queued_jobs(redis_client, settings)
    # 12 bytes per character is the JSON bound: two such reviews would not fit in one job.
    assert len(jobs) == 3
    assert all(len(job[b"data"]) < MAX_JOB_DATA_BYTES for job in jobs)


def test_full_redis_is_a_clear_error_and_enqueues_nothing(settings: Settings) -> None:
    with EmbeddedRedis() as server, Client(server.url, settings=settings) as client:
        client.redis.config_set("maxmemory", 1)  # below what Redis already uses: every write is refused
        with pytest.raises(RedisFullError) as caught:
            client.submit(["no room for this one"])
        assert caught.value.enqueued_ids == [] and caught.value.queue == settings.queue.name
        assert "out of memory" in str(caught.value) and "nothing was enqueued" in str(caught.value)
        assert "no room for this one" not in str(caught.value)
        client.redis.config_set("maxmemory", 0)
        assert client.queue.count == 0


# -- backpressure ------------------------------------------------------------------------------------


def drain_jobs(redis_client: Redis, settings: Settings, count: int, after_s: float) -> threading.Thread:
    """A worker stand-in: after ``after_s``, pop ``count`` jobs off the queue (and delete them)."""

    def drain() -> None:
        time.sleep(after_s)
        for _ in range(count):
            popped: Any = redis_client.blpop([f"rq:queue:{settings.queue.name}"], timeout=10)
            if popped is not None:
                redis_client.delete(f"rq:job:{popped[1].decode()}")

    thread = threading.Thread(target=drain, name="drain", daemon=True)
    thread.start()
    return thread


def test_submit_waits_at_the_queue_limit_then_raises_queue_full(
    settings: Settings, redis_client: Redis
) -> None:
    bounded = with_producer(settings, reviews_per_job=1, max_queue_depth=3, queue_full_timeout_s=0.6)
    with Client.from_settings(bounded) as client:
        client.submit(["one", "two", "three"])
        started = time.monotonic()
        with pytest.raises(QueueFullError) as caught:
            client.submit(["four"], ["four"])
        waited = time.monotonic() - started
    assert 0.6 <= waited < 5
    assert (caught.value.depth, caught.value.limit, caught.value.enqueued_ids) == (3, 3, [])
    assert "nothing was enqueued" in str(caught.value)
    assert len(queued_jobs(redis_client, settings)) == 3


def test_a_big_submit_fills_the_room_left_and_reports_what_it_enqueued(
    settings: Settings, redis_client: Redis
) -> None:
    bounded = with_producer(settings, reviews_per_job=2, max_queue_depth=2, queue_full_timeout_s=0.2)
    ids = [f"r{n}" for n in range(7)]
    with Client.from_settings(bounded) as client, pytest.raises(QueueFullError) as caught:
        client.submit([f"text {n}" for n in range(7)], ids)
    assert caught.value.enqueued_ids == ids[:4]
    assert "the first 4 review(s) of this submit were enqueued" in str(caught.value)
    assert len(queued_jobs(redis_client, settings)) == 2


def test_a_draining_worker_lets_a_waiting_submit_through(settings: Settings, redis_client: Redis) -> None:
    bounded = with_producer(settings, reviews_per_job=1, max_queue_depth=3, queue_full_timeout_s=20)
    with Client.from_settings(bounded) as client:
        client.submit(["one", "two", "three"])
        drainer = drain_jobs(redis_client, settings, count=4, after_s=0.5)
        started = time.monotonic()
        ids = client.submit(["four", "five", "six", "seven"])
        waited = time.monotonic() - started
        drainer.join(timeout=15)
    assert 0.4 < waited < 15
    assert len(ids) == 4
    # Nothing was dropped: 7 submitted, 4 drained, 3 still queued.
    assert len(queued_jobs(redis_client, settings)) == 3


# -- Redis restarts (finding 2, client side) ----------------------------------------------------------


class AppendOnlyRedis:
    """A redis-server with appendonly on, in its own folder, that can be killed and restarted on its port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_server(self.url, self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[AppendOnlyRedis]:
    server = AppendOnlyRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_waiting_results_survive_a_redis_restart(
    settings: Settings, restartable_redis: AppendOnlyRedis, caplog: pytest.LogCaptureFixture
) -> None:
    on_server = with_redis(settings, url=restartable_redis.url)
    outcome: dict[str, object] = {}

    with Client.from_settings(on_server) as client:
        ids = client.submit(["before the restart", "after the restart"], ["early", "late"])
        store_for(on_server, client.redis).publish([Prediction(id="early", label="positive", score=0.9)])

        def wait() -> None:
            try:
                outcome["predictions"] = client.results(ids, timeout=30)
            except BaseException as error:
                outcome["error"] = error

        with caplog.at_level(logging.WARNING, logger="producer.client"):
            waiter = threading.Thread(target=wait, name="waiter", daemon=True)
            waiter.start()
            time.sleep(0.5)  # the waiter is blocked in XREAD now
            restartable_redis.kill()
            time.sleep(1.5)  # an outage that spans several reconnection attempts
            restartable_redis.start()
            writer = Redis.from_url(restartable_redis.url)
            try:
                # The job survived the restart (append-only file): a worker would find it.
                assert writer.llen(f"rq:queue:{on_server.queue.name}") == 1
                store_for(on_server, writer).publish([Prediction(id="late", label="negative", score=0.8)])
            finally:
                writer.close()
            waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert "error" not in outcome, outcome.get("error")
    predictions = outcome["predictions"]
    assert [(p.id, p.label) for p in predictions] == [("early", "positive"), ("late", "negative")]  # type: ignore[attr-defined]
    messages = [record.getMessage() for record in caplog.records]
    assert any("lost Redis at" in message for message in messages)
    assert any("reconnected to Redis at" in message for message in messages)


def test_submit_during_an_outage_is_unavailable_and_safe_to_retry(
    settings: Settings, restartable_redis: AppendOnlyRedis
) -> None:
    on_server = with_redis(settings, url=restartable_redis.url, socket_timeout_s=1.0)
    with Client.from_settings(on_server) as client:
        restartable_redis.kill()
        with pytest.raises(RedisUnavailableError, match="submitting the same reviews again is safe"):
            client.submit(["during the outage"], ["outage"])
        restartable_redis.start()
        assert client.submit(["during the outage"], ["outage"]) == ["outage"]
        assert client.queue.count == 1


def test_client_refuses_an_http_url_in_one_line() -> None:
    with pytest.raises(InvalidRedisUrlError) as caught:
        Client("http://:hunter2@127.0.0.1:6379/0")
    message = str(caught.value)
    assert message == (
        "invalid Redis URL http://:***@127.0.0.1:6379/0: the Redis URL must start with redis://, "
        "rediss:// or unix://, not 'http'"
    )
