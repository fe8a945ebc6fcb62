"""Generated bad input, for the client and straight into Redis: a specific error every time.

(a) ``Client.submit`` and ``Client.results`` get wrong types, missing pieces, odd Unicode, huge
values and duplicate ids: each raises :class:`~sentiq.errors.InvalidReviewError` or
:class:`TypeError` naming the problem, and nothing is enqueued.

(b) Job records written straight into Redis, as a careless or hostile producer in another language
might: wrong types, missing fields, undecodable or non-JSON data, odd Unicode, huge values,
duplicate ids, values that are not hashes at ``rq:job:<id>``. An in-process
:class:`~worker.worker.SentiqWorker` in burst mode gives each a specific answer (error results for
the reviews it can name, the job in the failed registry with its reason, or a normal run) and keeps
working: a good job queued behind them is always classified.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer import Client
from sentiq.contract import CLASSIFY_TASK, MAX_JOB_DATA_BYTES, MAX_REVIEWS_PER_JOB, REVIEW_ID_PATTERN
from sentiq.errors import InvalidReviewError
from sentiq.result_store import ResultStore
from sentiq.settings import Settings
from worker.model import SentimentModel
from worker.processing import Classifier
from worker.worker import SentiqWorker

#: Few examples each, so the whole file stays well under a minute on a busy 2-core machine.
FEW = hypothesis_settings(
    max_examples=15,
    deadline=None,
    # Generated records carry their kind, so an unshrunk failure still names the culprit; shrinking
    # would re-run a worker hundreds of times. No database: nothing is written into the checkout.
    phases=(Phase.explicit, Phase.generate),
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# -- shared pieces of odd input -------------------------------------------------------------

LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udc00x", "a\ud83d"])
#: Valid Unicode that is odd in review text: NUL, bidi controls, emoji (one and joined), combining marks.
ODD_BUT_VALID = st.sampled_from(
    ["\x00", "\u200f", "\u202e", "\U0001f600", "\U0001f468\u200d\U0001f469", "e\u0301"]
)
#: Characters a review id may not contain.
ID_BREAKERS = st.sampled_from([" ", "\x00", "\u200f", "\U0001f600", "é", "\n", "#", "\ud800", "*", "%"])
EMPTY_AFTER_CLEANING = st.sampled_from(["", " ", "\n\t ", "<br />", "<br /><br />", " <br/> \n<br />"])
GOOD_TEXTS = st.sampled_from(["A wonderful film.", "Two hours I will never get back.", "Fine."])


def odd_text(draw: st.DrawFn, core: st.SearchStrategy[str]) -> str:
    """Ordinary words around ``core``."""
    return draw(GOOD_TEXTS) + draw(core) + draw(GOOD_TEXTS)


@st.composite
def bad_review_id(draw: st.DrawFn) -> object:
    """A review id that breaks the contract, of the right type or not."""
    kind = draw(st.sampled_from(["type", "char", "start", "long", "empty"]))
    if kind == "type":
        return draw(st.sampled_from([0, 17, 1.5, None, True, ["a"], {"id": "a"}]))
    if kind == "char":
        return "r" + draw(ID_BREAKERS) + draw(st.text(alphabet="abc123", max_size=5))
    if kind == "start":
        return draw(st.sampled_from(["-", ".", "_", ":", "/", "+", "="])) + "abc"
    if kind == "long":
        return "r" * draw(st.integers(min_value=129, max_value=5_000))
    return ""


# -- (a) the client -------------------------------------------------------------------------


@dataclass
class BadSubmit:
    texts: object
    ids: object
    error: tuple[type[Exception], ...]
    words: str


@st.composite
def bad_submits(draw: st.DrawFn) -> BadSubmit:
    """A submit that must be refused, the error it must raise and words its message must contain."""
    max_chars = 50_000
    texts = [draw(GOOD_TEXTS) for _ in range(draw(st.integers(min_value=1, max_value=4)))]
    ids = [f"id-{index}" for index in range(len(texts))]
    index = draw(st.integers(min_value=0, max_value=len(texts) - 1))
    kind = draw(
        st.sampled_from(
            [
                "texts-type",
                "ids-type",
                "text-type",
                "id-type",
                "id-breaks",
                "surrogate",
                "empty",
                "huge-text",
                "duplicate",
                "count",
            ]
        )
    )
    if kind == "texts-type":
        value = draw(
            st.sampled_from([None, 123, 4.5, b"bytes", "one string", {"a": "b"}, {"text": "x"}, object()])
        )
        return BadSubmit(value, None, (InvalidReviewError, TypeError), "texts")
    if kind == "ids-type":
        value = draw(st.sampled_from([123, "abc", b"ab", {"a": "b"}, 4.5, object()]))
        return BadSubmit(texts, value, (InvalidReviewError, TypeError), "ids")
    if kind == "text-type":
        texts[index] = draw(st.sampled_from([None, 1, 2.5, b"bytes", ["a"], {"text": "a"}, True]))  # type: ignore[call-overload]
        return BadSubmit(texts, ids, (InvalidReviewError,), f"review #{index}")
    if kind == "id-type":
        ids[index] = draw(st.sampled_from([1, 2.5, b"id", ["a"], {"id": "a"}, True]))  # type: ignore[call-overload]
        return BadSubmit(texts, ids, (InvalidReviewError,), f"review #{index}")
    if kind == "id-breaks":
        bad = draw(bad_review_id().filter(lambda value: isinstance(value, str)))
        ids[index] = bad  # type: ignore[call-overload]
        return BadSubmit(texts, ids, (InvalidReviewError,), f"review #{index}")
    if kind == "surrogate":
        texts[index] = odd_text(draw, LONE_SURROGATES)
        return BadSubmit(texts, ids, (InvalidReviewError,), "not valid Unicode")
    if kind == "empty":
        texts[index] = draw(EMPTY_AFTER_CLEANING)
        return BadSubmit(texts, ids, (InvalidReviewError,), "empty")
    if kind == "huge-text":
        texts[index] = "x" * (max_chars + draw(st.integers(min_value=1, max_value=100_000)))
        return BadSubmit(texts, ids, (InvalidReviewError,), "more than the limit")
    if kind == "duplicate":
        texts.append(draw(GOOD_TEXTS))
        ids.append(ids[index])
        return BadSubmit(texts, ids, (InvalidReviewError,), "duplicate id")
    return BadSubmit(texts, ids[:-1] if len(ids) > 1 else [*ids, "extra"], (InvalidReviewError,), "ids")


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as built:
        yield built


@FEW
@given(case=bad_submits())
def test_a_bad_submit_raises_a_specific_error_and_enqueues_nothing(
    case: BadSubmit, client: Client, redis_client: Redis
) -> None:
    queue_key = f"rq:queue:{client.settings.queue.name}"
    with pytest.raises(case.error) as raised:
        client.submit(case.texts, case.ids)  # type: ignore[arg-type]
    assert case.words in str(raised.value)
    assert redis_client.llen(queue_key) == 0


@FEW
@given(ids=st.sampled_from(["abc", b"abc", 7, None, {"a": 1}, [1, 2], ["ok", None], 3.5]))
def test_results_of_something_other_than_a_list_of_ids_is_a_type_error(client: Client, ids: object) -> None:
    for wait in (client.results, client.iter_results):
        with pytest.raises((TypeError, InvalidReviewError)) as raised:
            list(wait(ids, timeout=0.1))  # type: ignore[arg-type]
        assert "ids" in str(raised.value)


@FEW
@given(
    texts=st.lists(
        st.builds(lambda head, odd, tail: head + odd + tail, GOOD_TEXTS, ODD_BUT_VALID, GOOD_TEXTS),
        min_size=1,
        max_size=5,
    )
)
def test_odd_but_valid_unicode_is_enqueued_intact(
    texts: list[str], client: Client, redis_client: Redis
) -> None:
    queue_key = f"rq:queue:{client.settings.queue.name}"
    ids = client.submit(texts)
    queued: Any = redis_client.lrange(queue_key, 0, -1)
    job_ids = [raw.decode() for raw in queued]
    try:
        sent = []
        for job_id in job_ids:
            data: Any = redis_client.hget(f"rq:job:{job_id}", "data")
            assert data is not None
            payload = json.loads(zlib.decompress(data))[2][0]
            sent.extend(payload["reviews"])
        assert [(review["id"], review["text"]) for review in sent] == list(zip(ids, texts, strict=True))
    finally:
        redis_client.delete(queue_key, *(f"rq:job:{job_id}" for job_id in job_ids))


# -- (b) straight into Redis ----------------------------------------------------------------

#: What a worker must do with a record: refuse it (failed registry, reason), run it, or either.
REFUSED, RUNS, EITHER = "refused", "runs", "either"


@dataclass
class Record:
    """One generated job record and what a worker owes it."""

    kind: str
    outcome: str
    #: Writes the record under this job id; returns the ids to push onto the queue.
    write: Callable[[Redis, str, str], list[str]]
    #: The job's data as JSON, when it has any: the reviews it names must all be answered.
    data: Any = None
    #: Words the failure reason must contain (when the job is refused).
    reason_words: tuple[str, ...] = ()
    #: Review ids that must come back classified, with a label.
    labelled: list[str] = field(default_factory=list)
    #: Review ids (or ``invalid:`` keys) that must come back with an error.
    errored: list[str] = field(default_factory=list)


def job_data(func: object, args: object, kwargs: object = None) -> list[Any]:
    return [func, None, args, {} if kwargs is None else kwargs]


def good_reviews(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{index}", "text": f"A fine film, number {index}."} for index in range(count)]


def hash_writer(fields: dict[str, Any]) -> Callable[[Redis, str, str], list[str]]:
    def write(client: Redis, job_id: str, queue: str) -> list[str]:
        record: dict[Any, Any] = {"status": "queued", "origin": queue, **fields}
        client.hset(f"rq:job:{job_id}", mapping=record)
        return [job_id]

    return write


def encoded(data: Any, compress: bool) -> bytes:
    raw = json.dumps(data).encode()
    return zlib.compress(raw) if compress else raw


def reviews_named(data: Any, job_id: str) -> list[str]:
    """The result keys a refused job's reviews are owed: every element of a reviews list it names."""
    try:
        reviews = data[2][0]["reviews"]
    except (TypeError, KeyError, IndexError):
        return []
    if not isinstance(reviews, list):
        return []
    return [
        review["id"]
        if isinstance(review, dict)
        and isinstance(review.get("id"), str)
        and REVIEW_ID_PATTERN.fullmatch(review["id"])
        else f"invalid:{job_id}:{index}"
        for index, review in enumerate(reviews)
    ]


@st.composite
def not_a_hash(draw: st.DrawFn) -> Record:
    kind = draw(st.sampled_from(["string", "list", "set", "zset", "stream"]))

    def write(client: Redis, job_id: str, queue: str) -> list[str]:
        key = f"rq:job:{job_id}"
        if kind == "string":
            client.set(key, json.dumps(job_data(CLASSIFY_TASK, [{"v": 1, "reviews": good_reviews("s", 1)}])))
        elif kind == "list":
            client.rpush(key, "data", "x")
        elif kind == "set":
            client.sadd(key, "data")
        elif kind == "zset":
            client.zadd(key, {"data": 1.0})
        else:
            client.xadd(key, {"data": "x"})
        return [job_id]

    return Record(f"not-a-hash:{kind}", REFUSED, write, reason_words=(kind,))


@st.composite
def missing_data(draw: st.DrawFn) -> Record:
    fields = draw(
        st.dictionaries(st.sampled_from(["description", "result_ttl", "retries_left"]), st.just("1"))
    )
    return Record("no-data", REFUSED, hash_writer(fields), reason_words=("data",))


@st.composite
def undecodable_data(draw: st.DrawFn) -> Record:
    raw = draw(
        st.one_of(
            st.binary(min_size=1, max_size=200),
            st.text(min_size=1, max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
            st.sampled_from(
                [b"\x80\x04\x95", b'["worker.tasks.classify_reviews", null, [', b"{'v': 1}", b"NaN]"]
            ),
        )
    )
    if draw(st.booleans()):
        raw = zlib.compress(raw)

    def is_json(blob: bytes) -> bool:
        try:
            json.loads(zlib.decompress(blob) if blob[:1] == b"x" else blob)
        except Exception:
            return False
        return True

    if is_json(raw):
        raw = b"\xff" + raw
    return Record("undecodable", REFUSED, hash_writer({"data": raw}), reason_words=("JSON",))


@st.composite
def wrong_shape(draw: st.DrawFn) -> Record:
    """JSON data that is not [task, null, [payload], {}]."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=8,
    )
    payload = {"v": 1, "reviews": good_reviews("shape", 2)}
    data = draw(
        st.one_of(
            json_values.filter(lambda value: not (isinstance(value, list) and len(value) == 4)),
            st.builds(
                job_data,
                st.just(CLASSIFY_TASK),
                json_values.filter(lambda value: not isinstance(value, list)),
            ),
            st.builds(job_data, st.just(CLASSIFY_TASK), st.just([payload, payload])),
            st.builds(job_data, st.just(CLASSIFY_TASK), st.just([payload]), st.just({"payload": payload})),
            st.builds(job_data, st.just(CLASSIFY_TASK), st.just([])),
        )
    )
    return shape_record(data, draw(st.booleans()))


def shape_record(data: Any, compress: bool) -> Record:
    return Record("wrong-shape", REFUSED, hash_writer({"data": encoded(data, compress)}), data=data)


@st.composite
def wrong_function(draw: st.DrawFn) -> Record:
    func = draw(
        st.one_of(
            st.sampled_from(
                [
                    "os.system",
                    "builtins.print",
                    "os.abort",
                    "subprocess.call",
                    "worker.tasks.classify_reviews ",
                    "Worker.tasks.classify_reviews",
                    "worker.tasks.classify_review",
                    "",
                ]
            ),
            st.text(max_size=40).filter(lambda name: name != CLASSIFY_TASK),
            st.sampled_from([None, 1, ["worker.tasks.classify_reviews"]]),
        )
    )
    data = job_data(func, [{"v": 1, "reviews": good_reviews("func", 2)}])
    return Record(
        "wrong-function", REFUSED, hash_writer({"data": encoded(data, draw(st.booleans()))}), data=data
    )


@st.composite
def foreign_names(draw: st.DrawFn) -> Record:
    """A good job that names a callback (os.abort would end this very test) or a webhook."""
    name = draw(
        st.sampled_from(
            [
                ("failure_callback_name", "os.abort"),
                ("success_callback_name", "os.abort"),
                ("stopped_callback_name", "builtins.print"),
                ("webhooks", json.dumps([{"url": "http://127.0.0.1:9/hook", "job_status": "failed"}])),
            ]
        )
    )
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": good_reviews("cb", 2)}])
    fields = {"data": encoded(data, True), name[0]: name[1]}
    return Record(f"names-{name[0]}", REFUSED, hash_writer(fields), data=data)


@st.composite
def bad_payload(draw: st.DrawFn) -> Record:
    reviews: Any = good_reviews("payload", 3)
    kind = draw(
        st.sampled_from(
            ["v", "extra-key", "no-reviews", "reviews-type", "empty", "element-type", "no-id", "too-many"]
        )
    )
    payload: Any = {"v": 1, "reviews": reviews}
    if kind == "v":
        payload["v"] = draw(st.sampled_from([0, 2, "1", None, 1.5, [1]]))
    elif kind == "extra-key":
        payload[draw(st.text(min_size=1, max_size=8).filter(lambda key: key not in ("v", "reviews")))] = 1
    elif kind == "no-reviews":
        del payload["reviews"]
    elif kind == "reviews-type":
        payload["reviews"] = draw(st.sampled_from(["a text", 3, None, {"id": "x", "text": "y"}, True]))
    elif kind == "empty":
        payload["reviews"] = []
    elif kind == "element-type":
        reviews[1] = draw(st.sampled_from(["text", 5, None, ["payload-1", "text"]]))
    elif kind == "no-id":
        del reviews[1]["id"]
    else:
        payload["reviews"] = good_reviews(
            "many", MAX_REVIEWS_PER_JOB + draw(st.integers(min_value=1, max_value=50))
        )
    data = job_data(CLASSIFY_TASK, [payload])
    words = (str(MAX_REVIEWS_PER_JOB),) if kind == "too-many" else ()
    record = Record(
        f"payload:{kind}", REFUSED, hash_writer({"data": encoded(data, draw(st.booleans()))}), data=data
    )
    record.reason_words = words
    return record


@st.composite
def bad_reviews(draw: st.DrawFn) -> Record:
    """A well-formed job whose reviews are partly bad: it runs, each bad review gets its own error."""
    prefix = f"rev-{uuid.uuid4().hex[:8]}"
    reviews: list[Any] = []
    labelled: list[str] = []
    errored: list[str] = []
    for index in range(draw(st.integers(min_value=2, max_value=6))):
        kind = draw(
            st.sampled_from(
                ["good", "odd-valid", "bad-id", "text-type", "no-text", "surrogate", "empty", "huge"]
            )
        )
        review_id = f"{prefix}-{index}"
        if kind in ("good", "odd-valid"):
            text = odd_text(draw, ODD_BUT_VALID) if kind == "odd-valid" else draw(GOOD_TEXTS)
            reviews.append({"id": review_id, "text": text})
            labelled.append(review_id)
            continue
        if kind == "bad-id":
            reviews.append({"id": draw(bad_review_id()), "text": draw(GOOD_TEXTS)})
            errored.append(f"invalid:{{job}}:{index}")
            continue
        if kind == "no-text":
            reviews.append({"id": review_id})
        elif kind == "text-type":
            reviews.append(
                {"id": review_id, "text": draw(st.sampled_from([None, 3, 2.5, ["a"], {"t": 1}, True]))}
            )
        elif kind == "surrogate":
            reviews.append({"id": review_id, "text": odd_text(draw, LONE_SURROGATES)})
        elif kind == "empty":
            reviews.append({"id": review_id, "text": draw(EMPTY_AFTER_CLEANING)})
        else:
            reviews.append(
                {"id": review_id, "text": "x" * (50_001 + draw(st.integers(min_value=0, max_value=50_000)))}
            )
        errored.append(review_id)
    if draw(st.booleans()) and labelled:
        # A duplicate id in one job: that id is answered (the first, then the second, result).
        reviews.append({"id": labelled[0], "text": draw(GOOD_TEXTS)})
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": reviews}])
    record = Record("bad-reviews", RUNS, hash_writer({"data": encoded(data, draw(st.booleans()))}), data=data)
    record.labelled, record.errored = labelled, errored
    return record


#: Values RQ cannot parse in each field of a job hash.
BROKEN_FIELDS = {
    "created_at": ["yesterday", "2026-13-45T99:99:99Z", "1795717235", "\U0001f600"],
    "enqueued_at": ["soon", "2026-11-28 09:10:23"],
    "status": ["bogus", "QUEUED", "\u202equeued"],
    "retries_left": ["three", "3.5", "\x00"],
    "result_ttl": ["an hour", "1e3"],
    "failure_ttl": ["a week"],
    "retry_intervals": ["[0", "zero", "{'a': 1}"],
    "timeout": ["forever", "3x"],
}


@st.composite
def broken_field(draw: st.DrawFn) -> Record:
    name = draw(st.sampled_from(sorted(BROKEN_FIELDS)))
    return field_record(name, draw(st.sampled_from(BROKEN_FIELDS[name])), draw(st.booleans()))


def field_record(name: str, value: str, compress: bool) -> Record:
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": good_reviews(f"field-{uuid.uuid4().hex[:6]}", 2)}])
    fields = {"data": encoded(data, compress), name: value}
    return Record(f"broken-field:{name}", EITHER, hash_writer(fields), data=data)


@st.composite
def bad_job_id(draw: st.DrawFn) -> Record:
    """A job whose id is outside RQ's charset (letters, digits, _ and -)."""
    return job_id_record(draw(st.sampled_from([":", " ", ".", "/", "\U0001f600", "é", "*", "\u200f"])))


def job_id_record(breaker: str) -> Record:
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": good_reviews(f"jid-{uuid.uuid4().hex[:6]}", 1)}])

    def write(client: Redis, job_id: str, queue: str) -> list[str]:
        odd_id = f"{job_id}{breaker}x"
        client.hset(
            f"rq:job:{odd_id}", mapping={"data": encoded(data, True), "status": "queued", "origin": queue}
        )
        return [odd_id]

    return Record(f"job-id:{breaker!r}", REFUSED, write, data=data)


@st.composite
def duplicate_ids(draw: st.DrawFn) -> Record:
    """The same job id pushed more than once, or two jobs naming the same reviews."""
    kind = draw(st.sampled_from(["pushed-twice", "same-reviews"]))
    reviews = good_reviews(f"dup-{uuid.uuid4().hex[:8]}", 2)
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": reviews}])

    def write(client: Redis, job_id: str, queue: str) -> list[str]:
        client.hset(
            f"rq:job:{job_id}", mapping={"data": encoded(data, False), "status": "queued", "origin": queue}
        )
        if kind == "pushed-twice":
            return [job_id, job_id]
        twin = f"{job_id}-twin"
        client.hset(
            f"rq:job:{twin}", mapping={"data": encoded(data, True), "status": "queued", "origin": queue}
        )
        return [job_id, twin]

    record = Record(f"duplicate:{kind}", RUNS, write, data=data)
    record.labelled = [review["id"] for review in reviews]
    return record


@st.composite
def oversized(draw: st.DrawFn) -> Record:
    """Data over MAX_JOB_DATA_BYTES: refused without being read."""
    extra = draw(st.integers(min_value=1, max_value=1024))
    text = "x" * (MAX_JOB_DATA_BYTES + extra)
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": [{"id": "huge-0", "text": text}]}])
    return Record(
        "oversized", REFUSED, hash_writer({"data": json.dumps(data)}), reason_words=(str(MAX_JOB_DATA_BYTES),)
    )


READABLE_BAD_RECORDS = st.one_of(
    undecodable_data(),
    wrong_shape(),
    wrong_function(),
    foreign_names(),
    bad_payload(),
    bad_reviews(),
    duplicate_ids(),
)
UNREADABLE_RECORDS = st.one_of(not_a_hash(), missing_data(), broken_field(), bad_job_id(), oversized())


# -- the worker and what it must leave behind -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir, max_length=64, max_batch_size=64)


@pytest.fixture
def run_worker(settings: Settings, redis_client: Redis, tiny_model: SentimentModel) -> Callable[[], None]:
    """Run a fresh in-process worker over the test's queue until it is empty."""
    store = ResultStore(redis_client, settings.queue.key_prefix, 300, 10_000)
    classifier = Classifier(tiny_model, store, settings.queue.max_review_chars)

    def run() -> None:
        queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
        worker = SentiqWorker(
            [queue],
            classifier=classifier,
            settings=settings.worker,
            queue_settings=settings.queue,
            connection=redis_client,
            name=f"prop-{uuid.uuid4().hex[:12]}",
        )
        worker.work(burst=True)

    return run


def failure_reason(client: Redis, job_id: str) -> str:
    """The reasons recorded for a failed job: the hash's exc_info and RQ's newest result entry."""
    reasons = []
    key = f"rq:job:{job_id}"
    if client.type(key) == b"hash":
        exc_info: Any = client.hget(key, "exc_info")
        if exc_info:
            # RQ stores it compressed; sentiq's record of an unreadable job stores plain text.
            with contextlib.suppress(zlib.error):
                exc_info = zlib.decompress(exc_info)
            reasons.append(exc_info.decode("utf-8", "replace"))
    entries: Any = client.xrevrange(f"rq:results:{job_id}", count=1)
    for _entry_id, fields in entries:
        exc_string = fields.get(b"exc_string")
        if exc_string:
            reasons.append(zlib.decompress(base64.b64decode(exc_string)).decode("utf-8", "replace"))
    return "\n".join(reasons)


def result(client: Redis, prefix: str, review_id: str) -> dict[str, Any] | None:
    raw = client.get(f"{prefix}:result:{review_id}")
    return None if raw is None else dict(json.loads(raw))


def check_refused(client: Redis, settings: Settings, job_id: str, record: Record) -> None:
    failed_key = f"rq:failed:{settings.queue.name}"
    score = client.zscore(failed_key, job_id)
    assert score is not None, f"{record.kind}: job {job_id!r} is not in the failed registry"
    # Kept for the failure TTL, not dropped at once.
    assert score >= time.time() + settings.queue.failure_ttl_s - 120, f"{record.kind}: expires too soon"
    reason = failure_reason(client, job_id)
    assert reason.strip(), f"{record.kind}: job {job_id!r} failed without a reason"
    for words in record.reason_words:
        assert words in reason, f"{record.kind}: {words!r} not in reason {reason[-300:]!r}"
    ttl = client.ttl(f"rq:job:{job_id}")
    assert ttl == -1 or ttl >= settings.queue.failure_ttl_s - 120, f"{record.kind}: record expires in {ttl}s"


def check_answers(client: Redis, settings: Settings, job_id: str, record: Record, refused: bool) -> None:
    prefix = settings.queue.key_prefix
    owed = reviews_named(record.data, job_id) if record.data is not None else []
    for review_id in owed:
        answer = result(client, prefix, review_id)
        assert answer is not None, f"{record.kind}: review {review_id!r} of job {job_id!r} got no answer"
        if refused:
            assert answer["error"] and answer["label"] is None, f"{record.kind}: {answer}"
    for review_id in record.labelled:
        answer = result(client, prefix, review_id)
        assert answer is not None and answer["error"] is None and answer["label"], f"{record.kind}: {answer}"
    for template in record.errored:
        answer = result(client, prefix, template.replace("{job}", job_id))
        assert answer is not None and answer["error"] and answer["label"] is None, f"{record.kind}: {answer}"


def enqueue_records(
    client: Redis, settings: Settings, records: list[Record], cleanup: list[str]
) -> list[tuple[str, Record]]:
    """Write each record, push its ids, then a good sentinel job last; returns (pushed id, record)."""
    queue = settings.queue.name
    client.sadd("rq:queues", f"rq:queue:{queue}")
    pushed: list[tuple[str, Record]] = []
    for record in records:
        job_id = f"prop-{uuid.uuid4().hex}"
        for pushed_id in record.write(client, job_id, queue):
            cleanup.extend([f"rq:job:{pushed_id}", f"rq:results:{pushed_id}"])
            client.rpush(f"rq:queue:{queue}", pushed_id)
            pushed.append((pushed_id, record))
    return pushed


def check_sentinel(
    client: Redis, settings: Settings, run_worker: Callable[[], None], cleanup: list[str]
) -> None:
    """A good job queued after the bad ones is classified: the worker kept working."""
    pushed = enqueue_records(client, settings, [sentinel_record()], cleanup)
    run_worker()
    for job_id, record in pushed:
        check_answers(client, settings, job_id, record, refused=False)
    assert client.llen(f"rq:queue:{settings.queue.name}") == 0


def sentinel_record() -> Record:
    reviews = good_reviews(f"sentinel-{uuid.uuid4().hex[:8]}", 2)
    data = job_data(CLASSIFY_TASK, [{"v": 1, "reviews": reviews}])
    record = Record("sentinel", RUNS, hash_writer({"data": encoded(data, False)}), data=data)
    record.labelled = [review["id"] for review in reviews]
    return record


@pytest.fixture
def cleanup(redis_client: Redis) -> Iterator[list[str]]:
    """Job keys a test wrote outside its namespace (job ids are global), deleted afterwards."""
    keys: list[str] = []
    yield keys
    for start in range(0, len(keys), 500):
        redis_client.delete(*keys[start : start + 500])


def outcome_of(client: Redis, settings: Settings, job_id: str) -> str:
    if client.zscore(f"rq:failed:{settings.queue.name}", job_id) is not None:
        return REFUSED
    status = client.hget(f"rq:job:{job_id}", "status") if client.type(f"rq:job:{job_id}") == b"hash" else None
    return RUNS if status == b"finished" else f"status {status!r}"


@dataclass
class Harness:
    """A test's Redis, settings and in-process worker, and the job keys to delete afterwards."""

    settings: Settings
    client: Redis
    run_worker: Callable[[], None]
    cleanup: list[str]

    def work_through(self, records: list[Record]) -> list[tuple[str, Record]]:
        """Enqueue ``records``, let a worker empty the queue, check it then still classifies a good job."""
        client, settings = self.client, self.settings
        pushed = enqueue_records(client, settings, records, self.cleanup)
        pushed_ids = {job_id for job_id, _ in pushed}
        self.run_worker()
        check_sentinel(client, settings, self.run_worker, self.cleanup)
        # Nothing is left half-way: not in the queue, its intermediate list or the started registry.
        queue = settings.queue.name
        assert client.llen(f"rq:queue:{queue}") == 0
        intermediate: Any = client.lrange(f"rq:queue:{queue}:intermediate", 0, -1)
        started: Any = client.zrange(f"rq:wip:{queue}", 0, -1)
        leftovers = {raw.decode() for raw in intermediate} | {raw.decode().split(":")[0] for raw in started}
        assert not leftovers & pushed_ids, f"jobs left half-way: {leftovers & pushed_ids}"
        return pushed


@pytest.fixture
def harness(
    settings: Settings, redis_client: Redis, run_worker: Callable[[], None], cleanup: list[str]
) -> Harness:
    return Harness(settings, redis_client, run_worker, cleanup)


@FEW
@given(records=st.lists(READABLE_BAD_RECORDS, min_size=1, max_size=3))
@example(records=[shape_record(job_data(CLASSIFY_TASK, None), compress=False)])
def test_bad_readable_jobs_get_specific_answers_and_the_worker_keeps_working(
    records: list[Record],
    harness: Harness,
) -> None:
    for job_id, record in harness.work_through(records):
        outcome = outcome_of(harness.client, harness.settings, job_id)
        if record.outcome == REFUSED:
            assert outcome == REFUSED, f"{record.kind}: {outcome}"
            check_refused(harness.client, harness.settings, job_id, record)
        else:
            assert outcome == RUNS, f"{record.kind}: {outcome}"
        check_answers(harness.client, harness.settings, job_id, record, refused=outcome == REFUSED)


@FEW
@given(records=st.lists(UNREADABLE_RECORDS, min_size=1, max_size=3))
@example(records=[job_id_record(":"), job_id_record(" ")])
def test_unreadable_records_fail_alone_with_their_reason(
    records: list[Record],
    harness: Harness,
) -> None:
    for job_id, record in harness.work_through(records):
        outcome = outcome_of(harness.client, harness.settings, job_id)
        if record.outcome == EITHER and outcome == RUNS:
            check_answers(harness.client, harness.settings, job_id, record, refused=False)
            continue
        assert outcome == REFUSED, f"{record.kind}: {outcome}"
        check_refused(harness.client, harness.settings, job_id, record)


@hypothesis_settings(FEW, max_examples=6)
@given(record=st.one_of(broken_field(), bad_job_id()))
@example(record=field_record("created_at", "yesterday", compress=True))
def test_an_unreadable_job_still_answers_the_reviews_its_data_names(
    record: Record,
    harness: Harness,
) -> None:
    """No client waits forever: a readable ``data`` field is answered though the rest of the hash is not."""
    for job_id, pushed_record in harness.work_through([record]):
        outcome = outcome_of(harness.client, harness.settings, job_id)
        check_answers(harness.client, harness.settings, job_id, pushed_record, refused=outcome == REFUSED)
