"""sentiq.result_store against a real Redis: the layout the README documents, publish once, reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from sentiq.contract import Prediction, result_key, stream_key
from sentiq.result_store import STREAM_FIELD_ID, STREAM_FIELD_RESULT, STREAM_START, ResultStore
from stack.namespace import delete_namespace


@pytest.fixture
def store(redis_client: Redis) -> Iterator[ResultStore]:
    prefix = f"test-store-{uuid.uuid4().hex[:10]}"
    yield ResultStore(redis_client, prefix, ttl_s=60, stream_maxlen=1000)
    delete_namespace(redis_client, prefix)


def prediction(review_id: str, label: str = "positive") -> Prediction:
    return Prediction.model_validate({"id": review_id, "label": label, "score": 0.9, "model": "m@1"})


def test_publish_writes_each_value_with_its_ttl_then_a_stream_entry(
    store: ResultStore, redis_client: Redis
) -> None:
    assert store.last_stream_id() == STREAM_START
    assert store.publish([prediction("a"), prediction("b", "negative")]) == 2
    raw = redis_client.get(result_key(store.prefix, "a"))
    assert raw is not None and Prediction.from_json(raw) == prediction("a").model_copy(
        update={"finished_at": Prediction.from_json(raw).finished_at}
    )
    assert 0 < redis_client.ttl(result_key(store.prefix, "a")) <= 60
    entries = redis_client.xrange(stream_key(store.prefix))
    assert [fields[STREAM_FIELD_ID.encode()] for _, fields in entries] == [b"a", b"b"]
    assert entries[0][1][STREAM_FIELD_RESULT.encode()] == raw
    assert store.publish([]) == 0


def test_fetch_returns_only_the_ids_that_have_a_result_and_forget_deletes(store: ResultStore) -> None:
    store.publish([prediction("x"), prediction("y", "negative")])
    fetched = store.fetch(["x", "missing", "y"])
    assert set(fetched) == {"x", "y"} and fetched["y"].label == "negative"
    assert store.fetch([]) == {}
    store.forget(["x"])
    assert set(store.fetch(["x", "y"])) == {"y"}


def test_read_stream_returns_entries_after_the_cursor_and_waits_for_new_ones(store: ResultStore) -> None:
    store.publish([prediction("first")])
    cursor = store.last_stream_id()
    assert cursor != STREAM_START
    assert store.read_stream(cursor, block_ms=50) == (cursor, [])
    store.publish([prediction("second"), prediction("third")])
    new_cursor, entries = store.read_stream(cursor, block_ms=1000)
    assert [review_id for review_id, _ in entries] == ["second", "third"]
    assert entries[0][1].id == "second" and new_cursor == store.last_stream_id()
    _, everything = store.read_stream(STREAM_START, block_ms=0)
    assert len(everything) == 3


def test_publish_once_writes_a_jobs_results_once(store: ResultStore, redis_client: Redis) -> None:
    guard = f"{store.prefix}:job-guard"
    redis_client.hset(guard, "status", "started")
    jobs = [(guard, [prediction("once-1"), prediction("once-2")])]
    assert store.publish_once(jobs, "published", "run-1") == [2]
    assert redis_client.hget(guard, "published") == b"run-1"
    # The job runs again (its worker died after publishing): nothing new is written.
    assert store.publish_once(jobs, "published", "run-2") == [-1]
    assert redis_client.xlen(stream_key(store.prefix)) == 2
    # A guard that no longer exists cannot be marked: results are written rather than lost.
    assert store.publish_once([(f"{store.prefix}:gone", [prediction("late")])], "published", "r") == [1]
    assert set(store.fetch(["once-1", "once-2", "late"])) == {"once-1", "once-2", "late"}
    assert store.publish_once([], "published", "r") == []


def test_read_stream_parses_only_wanted_ids_but_moves_past_every_entry(store: ResultStore) -> None:
    cursor = store.last_stream_id()
    store.publish([prediction("mine-1"), prediction("theirs"), prediction("mine-2"), prediction("theirs-2")])
    new_cursor, entries = store.read_stream(cursor, block_ms=1000, wanted={"mine-1", "mine-2"})
    assert [review_id for review_id, _ in entries] == ["mine-1", "mine-2"]
    # The last entry was someone else's: the cursor is past it all the same.
    assert new_cursor == store.last_stream_id()
    assert store.read_stream(new_cursor, block_ms=10, wanted={"mine-1"}) == (new_cursor, [])
