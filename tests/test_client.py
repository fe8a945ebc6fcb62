"""producer.client against a real Redis: the jobs it writes, how it waits, and how it connects."""

from __future__ import annotations

import json
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

import pytest
from redis import Redis
from redis.exceptions import RedisError

from producer import Client, InvalidReviewError, Prediction, RedisUnavailableError, ResultsTimeoutError
from sentiq.contract import CLASSIFY_TASK, JobPayload, result_key
from sentiq.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from sentiq.result_store import STREAM_FIELD_ID, STREAM_FIELD_RESULT
from sentiq.settings import Settings
from tests.producer_fakes import FAKE_MODEL, FakeWorker, counting_redis, publish_later, store_for


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


def test_submit_is_one_round_trip(settings: Settings, redis_url: str) -> None:
    counted, counter = counting_redis(redis_url)
    with Client.from_settings(with_producer(settings, reviews_per_job=10), connection=counted) as client:
        counter.sends = 0
        ids = client.submit([f"review {n}" for n in range(100)])
        assert counter.sends == 1
        assert client.queue.count == 10
        assert len(ids) == 100
    counted.close()


def test_bulk_submit_is_chunked_into_round_trips(settings: Settings, redis_url: str) -> None:
    counted, counter = counting_redis(redis_url)
    progress: list[int] = []
    with Client(
        settings=with_producer(settings, reviews_per_job=10), connection=counted, jobs_per_round_trip=4
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
        Client.from_settings(with_producer(settings, max_review_chars=50)) as client,
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
        with pytest.raises(RedisUnavailableError) as caught:
            Client(wrong, settings=settings)
        assert "wrong-pass" not in str(caught.value)


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
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = Redis.from_url(url, socket_connect_timeout=1)
                probe.ping()
                probe.close()
                break
            except RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
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
