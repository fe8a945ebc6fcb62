"""The wire contract between producers and workers: what crosses Redis, and under which keys.

Only JSON crosses Redis. A job is an RQ job (JSON serializer) whose function is named by the
string :data:`CLASSIFY_TASK` and whose single positional argument is a :class:`JobPayload` dict.
Each review's result is a :class:`Prediction`, stored as JSON under :func:`result_key` with a TTL
and appended to the capped stream :func:`stream_key`. The README documents the same layout for
consumers in other languages.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from sentiq.errors import InvalidReviewError, MalformedJobError
from sentiq.text import clean_review

CONTRACT_VERSION: Literal[1] = 1
#: The one callable a sentiq worker runs. Named by string so the producer never imports the worker.
CLASSIFY_TASK = "worker.tasks.classify_reviews"
REVIEW_ID_MAX_LENGTH = 128
REVIEW_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
#: Most reviews one job may carry. Producers pack fewer; a worker refuses a bigger job (every review
#: with a valid id gets an error result) instead of letting it hold a worker for minutes.
MAX_REVIEWS_PER_JOB = 1_000
#: Most bytes of a job's serialized ``data`` field. A worker refuses a bigger job without reading it
#: (it cannot answer its reviews one by one without loading it); producers split jobs to stay below.
MAX_JOB_DATA_BYTES = 16 * 1024 * 1024
#: The label vocabulary: every prediction's ``label`` is one of these (a model folder maps them to
#: output indices in this order, see :mod:`sentiq.model_folder`).
Label = Literal["negative", "positive"]
LABELS: tuple[Label, Label] = ("negative", "positive")
#: Most words a job may ask to have explained per review (``explain`` in :class:`JobPayload`).
MAX_EXPLAIN_WORDS = 50


def error_result_id(job_id: str, index: int, review_id: object) -> str:
    """The id an error result is stored under: the review's own when it is valid, else a stand-in.

    A review whose id breaks the contract cannot be stored under that id (it could name any key),
    so its error goes under ``invalid:<job id>:<index>``, ``index`` counting from 0 in ``reviews``.
    """
    if isinstance(review_id, str) and REVIEW_ID_PATTERN.fullmatch(review_id):
        return review_id
    return f"invalid:{job_id}:{index}"


def new_review_id() -> str:
    """A fresh random review id (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


def review_problem(review_id: object, text: object, max_chars: int) -> str | None:
    """Why a review cannot be classified, or ``None`` when it can.

    The producer raises on a problem; the worker turns it into an error result for that review.
    Text must be a string that is valid Unicode (encodable as UTF-8: no lone surrogates, which
    tokenizers cannot take), not empty once cleaned with :func:`~sentiq.text.clean_review` (so
    ``"<br /><br />"`` is empty), and at most ``max_chars`` characters long. This runs on every
    review a worker receives, so each check is at most one pass over the text.
    """
    if not isinstance(review_id, str):
        return f"review id must be a string, got {type(review_id).__name__}"
    if not REVIEW_ID_PATTERN.fullmatch(review_id):
        return (
            f"invalid review id {review_id[:40]!r}: use 1-{REVIEW_ID_MAX_LENGTH} characters from "
            "A-Z a-z 0-9 . _ : @ / + = -, starting with a letter or digit"
        )
    if not isinstance(text, str):
        return f"review text must be a string, got {type(text).__name__}"
    if len(text) > max_chars:
        return f"review text has {len(text)} characters, more than the limit of {max_chars}"
    stripped = text.lstrip()
    if not stripped:
        return "review text is empty"
    # Only HTML line breaks can make non-blank text empty after cleaning, so text that does not
    # start with one cannot be: that keeps the regexes off the hot path.
    if stripped[0] == "<" and not clean_review(stripped):
        return "review text is empty (nothing but <br /> line breaks and whitespace)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"review text is not valid Unicode: {error.reason} {text[error.start]!r} "
            f"at character {error.start}"
        )
    return None


class Review(BaseModel):
    """One review as the producer sends it."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str


class JobPayload(BaseModel):
    """The single argument of a classify job.

    Reviews stay loosely typed here on purpose: one bad review must not fail its whole job, so the
    worker checks each with :func:`review_problem` and answers it with an error result.
    """

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = CONTRACT_VERSION
    reviews: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_REVIEWS_PER_JOB)
    #: Optional: how many of each review's most influential words to return in its prediction's
    #: ``attributions`` (0, null or absent: none). Explaining costs far more than classifying.
    explain: int = 0

    @field_validator("explain", mode="before")
    @classmethod
    def _explain_is_a_small_count(cls, explain: object) -> int:
        if explain is None:
            return 0
        problem = explain_problem(explain)
        if problem is not None:
            raise ValueError(problem)
        assert isinstance(explain, int)
        return explain

    @model_serializer(mode="wrap")
    def _leave_out_no_explain(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A payload that asks for no explanations stays byte-for-byte what v1 producers wrote, so
        # workers from before the field (which refuse unknown keys) still take it.
        data: dict[str, Any] = handler(self)
        if not self.explain:
            data.pop("explain", None)
        return data

    @field_validator("reviews")
    @classmethod
    def _each_review_has_an_id(cls, reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, review in enumerate(reviews):
            if "id" not in review:
                raise ValueError(f"review #{index} has no 'id'")
        return reviews

    @classmethod
    def from_reviews(cls, reviews: Sequence[Review], explain: int = 0) -> JobPayload:
        """Pack validated reviews into a payload, asking for ``explain`` top words per review."""
        return cls(reviews=[review.model_dump() for review in reviews], explain=explain)

    @classmethod
    def decode(cls, args: Sequence[Any], kwargs: Mapping[str, Any]) -> JobPayload:
        """Decode an RQ job's arguments, wrapping any failure in :class:`MalformedJobError`.

        A payload of more than :data:`MAX_REVIEWS_PER_JOB` reviews is refused before any review
        is looked at, with a reason naming the count and the limit.
        """
        if kwargs or len(args) != 1 or not isinstance(args[0], dict):
            raise MalformedJobError(
                f"a classify job takes exactly one JSON object argument, got args={_preview(args)} "
                f"kwargs={_preview(kwargs)}"
            )
        reviews = args[0].get("reviews")
        if isinstance(reviews, list) and len(reviews) > MAX_REVIEWS_PER_JOB:
            raise MalformedJobError(
                f"a classify job carries {len(reviews)} reviews, more than the limit of "
                f"{MAX_REVIEWS_PER_JOB} per job; split it into smaller jobs"
            )
        try:
            return cls.model_validate(args[0])
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'payload'}: {item['msg']}"
                for item in error.errors()
            )
            raise MalformedJobError(f"malformed classify job payload: {problems}") from error


class Prediction(BaseModel):
    """One review's result: a label and its probability, or an error.

    ``attributions`` is present only for a review whose job asked for explanations: its most
    influential words as ``[word, attribution]`` pairs, largest magnitude first. An attribution is
    in log-odds of ``label``: positive pushed towards it, negative away from it.
    """

    id: str
    label: Label | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    model: str | None = None
    error: str | None = None
    finished_at: float = Field(default_factory=time.time, description="Unix time the worker wrote it.")
    attributions: list[tuple[str, float]] | None = None

    @model_serializer(mode="wrap")
    def _leave_out_no_attributions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Not asked for: the JSON stays exactly v1's, without even an "attributions": null.
        data: dict[str, Any] = handler(self)
        if self.attributions is None:
            data.pop("attributions", None)
        return data

    @property
    def ok(self) -> bool:
        """Whether the review was classified."""
        return self.error is None

    def to_json(self) -> str:
        """The JSON text stored in Redis."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Prediction:
        """Parse a stored result."""
        return cls.model_validate_json(raw)


def explain_problem(explain: object) -> str | None:
    """Why ``explain`` is not a valid number of words to explain, or ``None`` when it is.

    An integer from 0 (no explanations) to :data:`MAX_EXPLAIN_WORDS`; not a bool, float or string.
    """
    if not isinstance(explain, int) or isinstance(explain, bool) or not 0 <= explain <= MAX_EXPLAIN_WORDS:
        return (
            f"explain must be a whole number of words from 0 (none) to {MAX_EXPLAIN_WORDS}, "
            f"got {_preview(explain, 40)}"
        )
    return None


def result_key(prefix: str, review_id: str) -> str:
    """Redis key of one review's result (a JSON string with a TTL)."""
    return f"{prefix}:result:{review_id}"


def stream_key(prefix: str) -> str:
    """Redis key of the capped stream every prediction is appended to."""
    return f"{prefix}:predictions"


def validate_reviews(texts: Sequence[object], ids: Sequence[object] | None, max_chars: int) -> list[Review]:
    """Pair texts with ids (generating missing ones) and check both, raising on the first problem.

    Items of any type are accepted so that a wrong one gets an :class:`InvalidReviewError`
    naming its index and type.
    """
    if ids is not None and len(ids) != len(texts):
        raise InvalidReviewError(f"got {len(texts)} texts but {len(ids)} ids")
    reviews: list[Review] = []
    seen: set[str] = set()
    for index, text in enumerate(texts):
        review_id = ids[index] if ids is not None else None
        review_id = new_review_id() if review_id is None else review_id
        problem = review_problem(review_id, text, max_chars)
        if problem is not None:
            raise InvalidReviewError(f"review #{index}: {problem}")
        # review_problem accepted both, so both are strings.
        valid_id, valid_text = cast(str, review_id), cast(str, text)
        if valid_id in seen:
            raise InvalidReviewError(f"review #{index}: duplicate id {valid_id!r} in one submit")
        seen.add(valid_id)
        reviews.append(Review(id=valid_id, text=valid_text))
    return reviews


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
