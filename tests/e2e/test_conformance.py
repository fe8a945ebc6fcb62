"""Another language can produce: enqueue with raw Redis commands from the README, read results raw.

Nothing here produces or reads through RQ or sentiq code: jobs are written with HSET, SADD and
RPUSH (the commands are parsed out of README.md's "Wire contract" section, so the documentation
cannot drift from what works), results are read with GET, XREAD and XRANGE. sentiq is imported
only to start real ``python -m worker`` processes and to name the test's own keys.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from sentiq.settings import Settings, load_settings
from stack.namespace import delete_namespace
from tests.conftest import TRAIN_SAMPLE
from tests.support.workers import WorkerProcess, running_workers
from tools.tiny_models import sample_texts

README = Path(__file__).resolve().parents[2] / "README.md"
WIRE_SECTION = "## Wire contract and result-store layout"
#: The README's example uses the default queue name and key prefix; tests substitute their own.
README_QUEUE = "sentiq"
#: The tiny test model has no metrics.json, so workers are told its max length.
WORKER_ENV = {"SENTIQ_WORKER_MAX_LENGTH": "128"}
RESULT_TIMEOUT_S = 60.0


# -- the README, as data --------------------------------------------------------------------


def wire_section() -> str:
    """The README's wire-contract section, up to the next second-level heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(WIRE_SECTION)
    end = text.find("\n## ", start + len(WIRE_SECTION))
    return text[start : end if end != -1 else len(text)]


def readme_enqueue_script() -> str:
    """The commands the README feeds to ``redis-cli`` on stdin, one per line."""
    match = re.search(r"redis-cli <<'EOF'\n(.*?)\nEOF\n", wire_section(), re.DOTALL)
    assert match, "the wire-contract section has no `redis-cli <<'EOF'` enqueue block"
    return match.group(1)


def readme_commands() -> list[list[str]]:
    """The README's enqueue commands, split into arguments as redis-cli splits them."""
    return [shlex.split(line) for line in readme_enqueue_script().splitlines() if line.strip()]


def readme_job_fields() -> dict[str, str]:
    """Field -> value of the job hash the README's HSET writes."""
    (hset,) = [command for command in readme_commands() if command[0].upper() == "HSET"]
    pairs = hset[2:]
    assert len(pairs) % 2 == 0, f"HSET needs field/value pairs: {hset}"
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def readme_job_id() -> str:
    """The job id of the README's example."""
    (rpush,) = [command for command in readme_commands() if command[0].upper() == "RPUSH"]
    return rpush[-1]


def readme_payload() -> dict[str, Any]:
    """The payload inside the README example's ``data``."""
    data = json.loads(readme_job_fields()["data"])
    payload = data[2][0]
    assert isinstance(payload, dict)
    return payload


def localized_script(queue: str, job_id: str) -> str:
    """The README's redis-cli script for this test's queue and a fresh job id (ids are global)."""
    script = readme_enqueue_script().replace(readme_job_id(), job_id)
    script = script.replace(f"rq:queue:{README_QUEUE} ", f"rq:queue:{queue} ")
    script = script.replace(f"rq:queue:{README_QUEUE}\n", f"rq:queue:{queue}\n")
    assert f" origin {README_QUEUE} " in script, "the README's HSET should set origin to the queue"
    return script.replace(f" origin {README_QUEUE} ", f" origin {queue} ") + "\n"


# -- producing and reading with raw commands ------------------------------------------------


def job_data(reviews: list[dict[str, Any]], *, compress: bool = False) -> bytes:
    """The ``data`` field of a classify job, as the README spells it."""
    template = json.loads(readme_job_fields()["data"])
    template[2] = [{**readme_payload(), "reviews": reviews}]
    raw = json.dumps(template).encode("utf-8")
    return zlib.compress(raw) if compress else raw


def enqueue_raw(client: Redis, queue: str, job_id: str, fields: Mapping[str, str | bytes]) -> None:
    """HSET the job hash, SADD the queue, RPUSH the id: one MULTI/EXEC, in the README's order."""
    record: dict[Any, Any] = dict(fields)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"rq:job:{job_id}", mapping=record)
        pipe.sadd("rq:queues", f"rq:queue:{queue}")
        pipe.rpush(f"rq:queue:{queue}", job_id)
        pipe.execute()


class RawResults:
    """Reads the result store the way the README tells other languages to."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.stream = f"{prefix}:predictions"
        newest: Any = client.xrevrange(self.stream, count=1)
        self.cursor = newest[0][0].decode() if newest else "0-0"

    def get(self, review_id: str) -> dict[str, Any] | None:
        raw: Any = self.client.get(f"{self.prefix}:result:{review_id}")
        return None if raw is None else dict(json.loads(raw))

    def wait(self, ids: list[str], timeout_s: float = RESULT_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """GET what is there, then XREAD BLOCK for the rest; fails the test on timeout."""
        found = {review_id: value for review_id in ids if (value := self.get(review_id)) is not None}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(ids):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                missing = sorted(set(ids) - set(found))
                pytest.fail(f"{len(missing)} result(s) missing after {timeout_s}s: {missing[:10]}")
            reply: Any = self.client.xread({self.stream: self.cursor}, block=min(left_ms, 1000))
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self.cursor = entry_id.decode()
                    review_id = fields[b"id"].decode()
                    if review_id in ids:
                        found[review_id] = json.loads(fields[b"result"])
        return found

    def stream_counts(self) -> Counter[str]:
        """How many stream entries each review id has, over the whole stream."""
        entries: Any = self.client.xrange(self.stream, "-", "+")
        counts: Counter[str] = Counter()
        for _entry_id, fields in entries:
            counts[fields[b"id"].decode()] += 1
        return counts


def job_field(client: Redis, job_id: str, field: str) -> str | None:
    raw: Any = client.hget(f"rq:job:{job_id}", field)
    return None if raw is None else bytes(raw).decode()


def wait_for_status(client: Redis, job_id: str, status: str, timeout_s: float = RESULT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while job_field(client, job_id, "status") != status:
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} is {job_field(client, job_id, 'status')!r}, not {status!r}")
        time.sleep(0.05)


def reviews_of(prefix: str, count: int, texts: list[str] | None = None) -> list[dict[str, Any]]:
    pool = texts or ["A wonderful film.", "Two hours I will never get back.", "Fine, I suppose."]
    return [{"id": f"{prefix}-{index}", "text": pool[index % len(pool)]} for index in range(count)]


def assert_classified(results: Mapping[str, Mapping[str, Any]]) -> None:
    for review_id, result in results.items():
        assert result["id"] == review_id
        assert result["error"] is None, result
        assert result["label"] in ("negative", "positive")
        assert 0.0 <= result["score"] <= 1.0


# -- one shared worker for the single-job cases ---------------------------------------------


@pytest.fixture(scope="module")
def shared_settings(redis_url: str, tiny_model_dir: Path) -> Iterator[Settings]:
    """A queue and key prefix for this module's single-job tests, deleted afterwards."""
    namespace = f"test-conf-{uuid.uuid4().hex[:10]}"
    yield load_settings(
        redis={"url": redis_url},
        queue={"name": namespace, "key_prefix": namespace},
        model={"path": tiny_model_dir},
        worker={"device": "cpu", "precision": "fp32", "heartbeat_ttl_s": 5, "maintenance_interval_s": 2},
    )
    client = Redis.from_url(redis_url)
    try:
        delete_namespace(client, namespace)
    finally:
        client.close()


@pytest.fixture(scope="module")
def shared_worker(
    shared_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with running_workers(shared_settings, tmp_path_factory.mktemp("conformance"), 1, **WORKER_ENV) as workers:
        yield workers[0]


@pytest.fixture
def job_id(redis_client: Redis) -> Iterator[str]:
    """A fresh RQ job id; its hash and RQ results are deleted after the test."""
    value = f"conf-{uuid.uuid4()}"
    yield value
    redis_client.delete(f"rq:job:{value}", f"rq:results:{value}")


# -- the README's own words -----------------------------------------------------------------


def test_the_readme_documents_every_field_it_writes() -> None:
    section = wire_section()
    for field in readme_job_fields():
        assert f"`{field}`" in section, (
            f"the README's HSET writes {field!r} but its table does not explain it"
        )
    for promise in (
        "`timeout`",
        "rq:queues",
        "retries_left",
        "SENTIQ_QUEUE_JOB_RETRIES",
        "invalid:<job id>:<index>",
    ):
        assert promise in section
    assert "plain `rq worker`" in section
    commands = [command[0].upper() for command in readme_commands()]
    # The hash first, the id last: an id whose hash is missing is skipped by RQ and lost.
    assert commands == ["MULTI", "HSET", "SADD", "RPUSH", "EXEC"]


def test_the_readme_enqueue_works_as_written(
    shared_settings: Settings, shared_worker: WorkerProcess, redis_client: Redis, job_id: str
) -> None:
    queue, prefix = shared_settings.queue.name, shared_settings.queue.key_prefix
    reader = RawResults(redis_client, prefix)
    script = localized_script(queue, job_id)
    redis_cli = shutil.which("redis-cli")
    if redis_cli is not None:
        # The very text a reader pastes, through the real redis-cli and its own argument parser.
        completed = subprocess.run(
            [redis_cli, "-u", shared_settings.redis.url],
            input=script.encode(),
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert b"ERR" not in completed.stdout, completed.stdout
    else:
        with redis_client.pipeline(transaction=True) as pipe:
            for command in (shlex.split(line) for line in script.splitlines() if line.strip()):
                if command[0].upper() not in ("MULTI", "EXEC"):
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()
    ids = [review["id"] for review in readme_payload()["reviews"]]
    results = reader.wait(ids)
    assert_classified(results)
    wait_for_status(redis_client, job_id, "finished")
    assert reader.stream_counts() == Counter(dict.fromkeys(ids, 1))


def test_a_minimal_job_needs_only_data(
    shared_settings: Settings, shared_worker: WorkerProcess, redis_client: Redis, job_id: str
) -> None:
    reader = RawResults(redis_client, shared_settings.queue.key_prefix)
    reviews = reviews_of("minimal", 3)
    enqueue_raw(redis_client, shared_settings.queue.name, job_id, {"data": job_data(reviews)})
    assert_classified(reader.wait([review["id"] for review in reviews]))
    wait_for_status(redis_client, job_id, "finished")


def test_compressed_data_is_accepted(
    shared_settings: Settings, shared_worker: WorkerProcess, redis_client: Redis, job_id: str
) -> None:
    reader = RawResults(redis_client, shared_settings.queue.key_prefix)
    reviews = reviews_of("zlib", 4)
    fields: dict[str, str | bytes] = {**readme_job_fields(), "data": job_data(reviews, compress=True)}
    fields["origin"] = shared_settings.queue.name
    enqueue_raw(redis_client, shared_settings.queue.name, job_id, fields)
    assert_classified(reader.wait([review["id"] for review in reviews]))
    wait_for_status(redis_client, job_id, "finished")


OPTIONAL_FIELDS = (
    "status",
    "origin",
    "created_at",
    "enqueued_at",
    "description",
    "result_ttl",
    "failure_ttl",
    "retries_left",
    "retry_intervals",
)


def test_missing_optional_fields_are_filled_in(
    shared_settings: Settings, shared_worker: WorkerProcess, redis_client: Redis, job_id: str
) -> None:
    documented = readme_job_fields()
    assert set(OPTIONAL_FIELDS) <= set(documented), "the README example should show every optional field"
    reader = RawResults(redis_client, shared_settings.queue.key_prefix)
    reviews = reviews_of("sparse", 2)
    # Keep only what no optional field is: data, and anything the README adds later.
    fields = {key: value for key, value in documented.items() if key not in OPTIONAL_FIELDS}
    enqueue_raw(redis_client, shared_settings.queue.name, job_id, {**fields, "data": job_data(reviews)})
    assert_classified(reader.wait([review["id"] for review in reviews]))
    wait_for_status(redis_client, job_id, "finished")
    # What the README promises a worker fills in, so that a crash can still be retried.
    assert job_field(redis_client, job_id, "origin") == shared_settings.queue.name
    assert job_field(redis_client, job_id, "retries_left") == str(shared_settings.queue.job_retries)


def test_a_bad_review_gets_its_own_error_and_the_others_are_classified(
    shared_settings: Settings, shared_worker: WorkerProcess, redis_client: Redis, job_id: str
) -> None:
    reader = RawResults(redis_client, shared_settings.queue.key_prefix)
    reviews: list[dict[str, Any]] = [
        {"id": "mixed-good-0", "text": "A wonderful film."},
        {"id": "not a valid id!", "text": "Its id has spaces."},
        {"id": "mixed-empty", "text": "<br /><br />"},
        {"id": "mixed-number", "text": 42},
        {"id": "mixed-surrogate", "text": "Nice film \ud800"},
        {"id": "mixed-long", "text": "x" * (shared_settings.queue.max_review_chars + 1)},
        {"id": "mixed-good-1", "text": "Two hours I will never get back."},
    ]
    # json.dumps writes the lone surrogate as the escape \ud800: valid JSON, invalid Unicode.
    enqueue_raw(redis_client, shared_settings.queue.name, job_id, {"data": job_data(reviews)})
    bad_id_key = f"invalid:{job_id}:1"
    results = reader.wait(
        [
            "mixed-good-0",
            "mixed-good-1",
            bad_id_key,
            "mixed-empty",
            "mixed-number",
            "mixed-surrogate",
            "mixed-long",
        ]
    )
    assert_classified({key: results[key] for key in ("mixed-good-0", "mixed-good-1")})
    assert "invalid review id" in results[bad_id_key]["error"]
    assert results["mixed-empty"]["error"].startswith("review text is empty")
    assert "must be a string" in results["mixed-number"]["error"]
    assert "not valid Unicode" in results["mixed-surrogate"]["error"]
    assert "more than the limit" in results["mixed-long"]["error"]
    for key in (bad_id_key, "mixed-empty", "mixed-number", "mixed-surrogate", "mixed-long"):
        assert results[key]["label"] is None and results[key]["score"] is None
    wait_for_status(redis_client, job_id, "finished")


# -- a crash mid-job ------------------------------------------------------------------------


def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(
    settings: Settings, redis_client: Redis, tmp_path: Path, job_id: str
) -> None:
    """Two workers; the one holding a 1,000-review job is SIGKILLed mid-batch; every result arrives once."""
    queue, prefix = settings.queue.name, settings.queue.key_prefix
    reader = RawResults(redis_client, prefix)
    reviews = reviews_of("crash", 1000, sample_texts(TRAIN_SAMPLE))
    ids = [review["id"] for review in reviews]
    fields: dict[str, str | bytes] = {**readme_job_fields(), "origin": queue, "data": job_data(reviews)}
    # Small passes of long rows: the job takes seconds, so the kill lands mid-batch.
    slow = {**WORKER_ENV, "SENTIQ_WORKER_MAX_LENGTH": "512", "SENTIQ_WORKER_MAX_BATCH_SIZE": "4"}
    with running_workers(settings, tmp_path, 2, **slow) as workers:
        enqueue_raw(redis_client, queue, job_id, fields)
        wait_for_status(redis_client, job_id, "started", timeout_s=30)
        holder_name = job_field(redis_client, job_id, "worker_name")
        (holder,) = [worker for worker in workers if worker.name == holder_name]
        (survivor,) = [worker for worker in workers if worker is not holder]
        assert reader.stream_counts() == Counter(), "the job finished before the kill could land"
        holder.process.send_signal(signal.SIGKILL)
        holder.process.wait(timeout=10)
        killed_at = time.monotonic()

        results = reader.wait(ids, timeout_s=120)
        recovery_s = time.monotonic() - killed_at
        assert_classified(results)
        wait_for_status(redis_client, job_id, "finished")
        assert job_field(redis_client, job_id, "worker_name") == survivor.name
        assert survivor.process.poll() is None, survivor.log
        # A late second run would show up here: wait past another heartbeat TTL before counting.
        time.sleep(settings.worker.heartbeat_ttl_s + settings.worker.maintenance_interval_s)
        counts = reader.stream_counts()
        assert set(counts) == set(ids)
        assert [review_id for review_id, count in counts.items() if count != 1] == []
    print(f"results complete {recovery_s:.1f}s after SIGKILL")
