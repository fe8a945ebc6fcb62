"""The optional ``explain`` job field and ``attributions`` result field: contract v1 stays valid.

Old payloads and results decode unchanged, a payload without explanations is written exactly as
before (workers from before the field refuse unknown keys), and a raw payload in the README's
style with the field decodes.
"""

from __future__ import annotations

import json
import zlib

import pytest
from redis import Redis

from producer.client import Client
from sentiq.contract import MAX_EXPLAIN_WORDS, JobPayload, Prediction, Review, explain_problem
from sentiq.errors import MalformedJobError
from sentiq.settings import Settings

#: A v1 payload as producers wrote it before the field existed (the README's example).
OLD_PAYLOAD = {"v": 1, "reviews": [{"id": "order-17:review-3", "text": "A wonderful film."}]}
#: A v1 result as workers wrote it before the field existed.
OLD_RESULT = (
    '{"id": "order-17:review-3", "label": "positive", "score": 0.973412, "model": "m", '
    '"error": null, "finished_at": 1795717235.82}'
)


def test_an_old_payload_decodes_and_asks_for_no_explanations() -> None:
    payload = JobPayload.decode([OLD_PAYLOAD], {})
    assert payload.explain == 0
    assert payload.model_dump() == OLD_PAYLOAD  # re-serialized byte for byte as before


def test_a_raw_redis_cli_payload_with_the_field_decodes() -> None:
    # The data field exactly as a non-Python producer writes it with HSET.
    data = (
        '["worker.tasks.classify_reviews", null, '
        '[{"v": 1, "reviews": [{"id": "r-1", "text": "Great."}], "explain": 5}], {}]'
    )
    _, _, args, kwargs = json.loads(data)
    payload = JobPayload.decode(args, kwargs)
    assert payload.explain == 5
    assert payload.model_dump()["explain"] == 5
    assert JobPayload.decode([{**OLD_PAYLOAD, "explain": None}], {}).explain == 0  # null: none
    assert JobPayload.decode([{**OLD_PAYLOAD, "explain": MAX_EXPLAIN_WORDS}], {}).explain == MAX_EXPLAIN_WORDS


@pytest.mark.parametrize("bad", [-1, MAX_EXPLAIN_WORDS + 1, True, "5", 2.0, [3]])
def test_a_bad_explain_refuses_the_job_naming_the_field_and_bounds(bad: object) -> None:
    with pytest.raises(MalformedJobError) as caught:
        JobPayload.decode([{**OLD_PAYLOAD, "explain": bad}], {})
    message = str(caught.value)
    assert message.startswith("malformed classify job payload: explain: ")
    assert f"from 0 (none) to {MAX_EXPLAIN_WORDS}, got {bad!r}" in message
    assert explain_problem(bad) is not None


def test_results_without_attributions_are_v1_json_and_old_results_parse() -> None:
    old = Prediction.from_json(OLD_RESULT)
    assert old.attributions is None
    assert "attributions" not in json.loads(old.to_json())
    assert set(json.loads(old.to_json())) == set(json.loads(OLD_RESULT))
    explained = Prediction(
        id="r-1", label="negative", score=0.9, attributions=[("awful", 2.5), ("fine", -0.25)]
    )
    stored = json.loads(explained.to_json())
    assert stored["attributions"] == [["awful", 2.5], ["fine", -0.25]]
    assert Prediction.from_json(explained.to_json()) == explained


def _stored_payloads(redis_client: Redis, settings: Settings) -> list[dict[str, object]]:
    payloads = []
    job_ids: list[bytes] = redis_client.lrange(f"rq:queue:{settings.queue.name}", 0, -1)  # type: ignore[assignment]
    for job_id in job_ids:
        raw = redis_client.hget(f"rq:job:{job_id.decode()}", "data")
        assert isinstance(raw, bytes)
        payloads.append(json.loads(zlib.decompress(raw))[2][0])
    return payloads


def test_the_client_passes_explain_through_and_leaves_it_out_otherwise(
    settings: Settings, redis_client: Redis
) -> None:
    with Client.from_settings(settings, connection=redis_client) as client:
        client.submit(["Great."], ["r-plain"])
        client.submit(["Awful."], ["r-explained"], explain=3)
        with pytest.raises(ValueError, match=f"from 0 \\(none\\) to {MAX_EXPLAIN_WORDS}, got 51"):
            client.submit(["Fine."], explain=51)
    plain, explained = _stored_payloads(redis_client, settings)
    assert plain == JobPayload.from_reviews([Review(id="r-plain", text="Great.")]).model_dump()
    assert "explain" not in plain
    assert explained["explain"] == 3
    assert JobPayload.decode([explained], {}).explain == 3
