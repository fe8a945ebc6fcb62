"""Every sentiq setting, in one pydantic-settings tree.

Each entry point (``python -m worker``, ``python -m producer``, ``python -m training``, the demo)
builds one :class:`Settings` with :func:`load_settings` and passes it, or the section it needs,
down. Nothing else in sentiq reads the environment.

Environment variables use the prefix ``SENTIQ_`` and one underscore between the section and the
field: ``SENTIQ_REDIS_URL`` sets ``redis.url``, ``SENTIQ_WORKER_MAX_BATCH_SIZE`` sets
``worker.max_batch_size``. A ``.env`` file in the working directory is read too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentiq.contract import MAX_REVIEWS_PER_JOB

#: The arithmetic a model runs in, one word for worker, training and evaluation: ``auto`` or the
#: weights' (worker, evaluate) or autocast's (training) floating-point format.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: What runs a worker's forward passes (see WorkerSettings.engine).
Engine = Literal["auto", "torch", "onnx-int8"]
#: Whether a worker's batches overlap (passes on a thread while the next batch starts).
Overlap = Literal["auto", "on", "off"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16")
#: The worker's former ``dtype`` values (``--dtype``, ``SENTIQ_WORKER_DTYPE``), still accepted.
PRECISION_OF_DTYPE: dict[str, Precision] = {
    "auto": "auto",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
}

DEFAULT_BASE_MODEL = "huawei-noah/TinyBERT_General_4L_312D"
BUNDLED_BASE_MODEL = "bundled"
DEFAULT_MODEL_DIR = "models/sentiment"


class RedisSettings(BaseModel):
    """Where the queue and the result store live.

    The password may sit in the URL (``redis://:pw@host``, ``redis://user:pw@host`` or
    ``?password=pw``), but a URL on a command line is visible to every user of the host in
    ``ps``: prefer ``SENTIQ_REDIS_PASSWORD`` or ``SENTIQ_REDIS_PASSWORD_FILE``. When several are
    given, :func:`~sentiq.redis_connection.connect` uses the file, else the variable, else the URL.
    """

    # A ValidationError's text would otherwise repeat the rejected value: a URL with its password.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL: redis://, rediss:// (TLS) or unix://, with password or ACL user.",
    )
    password: SecretStr | None = Field(
        default=None,
        description="Redis password (wins over one in the URL; a username may stay in the URL). "
        "Never printed.",
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the Redis password (e.g. a Docker secret); wins over "
        "SENTIQ_REDIS_PASSWORD and the URL.",
    )
    socket_timeout_s: float = Field(default=10.0, gt=0, description="Socket timeout for Redis commands.")
    allow_eviction: bool = Field(
        default=False,
        description="Accept a Redis whose maxmemory-policy can evict keys (queued jobs, results): "
        "workers refuse to start on one otherwise, clients warn.",
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        problem = redis_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        # .env.example carries an empty SENTIQ_REDIS_PASSWORD= line: empty means "no password".
        if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            return None
        return value

    @field_validator("password_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value


#: The URL schemes redis-py (and so sentiq) can connect with.
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable Redis URL, or ``None``; the reason never repeats the URL's secrets."""
    scheme, sep, _rest = url.partition("://")
    if not sep:
        return "the Redis URL must start with redis://, rediss:// or unix://"
    if scheme.lower() not in REDIS_URL_SCHEMES:
        shown = repr(scheme) if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else "its scheme"
        return f"the Redis URL must start with redis://, rediss:// or unix://, not {shown}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's message quotes the bad port, which may be a mistyped password.
        return "the Redis URL is malformed (an invalid host or port)"
    if parts.scheme.lower() == "unix":
        return None if parts.path else "a unix:// Redis URL needs a socket path, e.g. unix:///run/redis.sock"
    if not parts.hostname:
        return "the Redis URL names no host, e.g. redis://127.0.0.1:6379/0"
    if port == 0:
        return "the Redis URL's port must be 1-65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "the Redis URL's path must be a database number, e.g. redis://host:6379/0"
    return None


class QueueSettings(BaseModel):
    """Names on the wire: shared by producer and worker, so both must agree."""

    name: str = Field(default="sentiq", min_length=1, description="RQ queue that carries review jobs.")
    key_prefix: str = Field(default="sentiq", min_length=1, description="Prefix of the result-store keys.")
    result_ttl_s: int = Field(default=86_400, gt=0, description="How long a review's result is kept.")
    stream_maxlen: int = Field(
        default=100_000, gt=0, description="Approximate cap on the predictions stream's length."
    )
    job_retries: int = Field(
        default=3,
        ge=0,
        description="Retries of a job whose worker died; workers fill this in for jobs that lack it.",
    )
    failure_ttl_s: int = Field(
        default=7 * 86_400,
        gt=0,
        description="How long a failed or refused job stays in RQ's failed registry, with its reason.",
    )
    max_review_chars: int = Field(
        default=50_000,
        gt=0,
        le=1_000_000,
        description="Longest review: producers refuse longer ones on submit, workers answer them "
        "with an error result (a review must fit in one job's data).",
    )


class ModelSettings(BaseModel):
    """The fine-tuned model folder that workers serve."""

    path: Path = Field(default=Path(DEFAULT_MODEL_DIR), description="Model folder written by training.")


class WorkerSettings(BaseModel):
    """How a worker runs the model and batches jobs."""

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    precision: Precision = Field(
        default="auto",
        description="Weights' precision. auto: bf16 (else fp16) on GPU, bf16 on CPUs with AMX or "
        "AVX512-BF16, else fp32.",
    )
    engine: Engine = Field(
        default="auto",
        description="What runs the forward passes. auto: on CPU, the int8 copy of the model folder "
        "(python -m worker.int8) when it exists and a pass measured at start-up is faster with it, else "
        "torch; torch; onnx-int8: the int8 copy (CPU only).",
    )
    overlap_batches: Overlap = Field(
        default="auto",
        description="Run a batch's forward passes on a thread while the worker starts the next batch "
        "and publishes the last, so the device need not wait for Redis while jobs are queued. auto: on "
        "for GPUs (their passes leave the CPU free), off on CPU (the passes use every core).",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        description="Most reviews in one forward pass. 0: as many full-length reviews as max_batch_tokens "
        "holds, and up to 4x that many shorter ones.",
    )
    max_batch_tokens: int = Field(
        default=0,
        ge=0,
        description="Most padded tokens (rows x length) in one forward pass. 0: 4096 on CPU (about 13 "
        "reviews of 300 tokens, the fastest pass size measured), 131072 on GPU.",
    )
    max_wait_ms: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="When the queue runs dry before a batch reaches max_gather_tokens, wait up to this "
        "long from the start of the gathering for more (a dynamic batcher's queue delay). Jobs already "
        "queued are always taken without waiting; 0: a lone job runs at once.",
    )
    max_gather_tokens: int = Field(
        default=0,
        ge=0,
        description="Most tokens taken from the queue for one batch of forward passes, counting max "
        "length per review; a first job larger than that is taken whole. 0: 8 passes' worth of "
        "max_batch_tokens (109 reviews of 300 tokens on CPU, 3,495 on GPU).",
    )
    max_length: int = Field(default=0, ge=0, description="Token truncation; 0 takes the model's own.")
    single_thread_pass_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="CPU passes that one thread runs within this many ms (timed at start-up) run on one "
        "thread: waking an idle worker's other threads took ~6 ms on a 2-core VM. 0: every pass uses "
        "all threads.",
    )
    keep_freed_memory: bool = Field(
        default=True,
        description="Keep memory freed after each forward pass for the next one (glibc only) instead "
        "of returning it to the kernel: 28x fewer page faults and 1.04x faster CPU passes measured; the "
        "process stays at its peak memory between batches. Left off when MALLOC_TRIM_THRESHOLD_, "
        "MALLOC_MMAP_THRESHOLD_, MALLOC_TOP_PAD_ or the same GLIBC_TUNABLES are set.",
    )
    heartbeat_ttl_s: int = Field(
        default=30, ge=5, description="A dead worker's jobs are retried this long after its last heartbeat."
    )
    redis_startup_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a starting worker waits for Redis to answer before exiting 1 (0: at once).",
    )
    maintenance_interval_s: int = Field(
        default=15, ge=1, description="How often a worker looks for abandoned jobs to retry."
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    ready_file: Path | None = Field(
        default=None,
        description="Touched once the model is loaded and warm, and at each heartbeat; for healthchecks.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (0: any free port); unset: no metrics endpoint.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address of the metrics endpoint; 0.0.0.0 lets other hosts (Prometheus) scrape it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _former_dtype_name(cls, values: Any) -> Any:
        # SENTIQ_WORKER_DTYPE=float32 (the setting's former name and values) keeps working;
        # SENTIQ_WORKER_PRECISION wins when both are set.
        if isinstance(values, dict) and "dtype" in values:
            values = dict(values)
            dtype = values.pop("dtype")
            if "precision" not in values:
                values["precision"] = PRECISION_OF_DTYPE.get(str(dtype).lower(), dtype)
        return values


class ProducerSettings(BaseModel):
    """How the client packs and waits."""

    reviews_per_job: int = Field(
        default=256,
        gt=0,
        le=MAX_REVIEWS_PER_JOB,
        description="Most reviews packed into one job (workers refuse jobs of more than 1000).",
    )
    result_timeout_s: float = Field(default=60.0, gt=0, description="Default wait for results.")
    max_queue_depth: int = Field(
        default=2_000,
        ge=0,
        description="Most jobs waiting in the queue: at the limit submit waits for room; 0 = unbounded.",
    )
    queue_full_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="How long submit waits for room in a full queue before raising QueueFullError.",
    )


class TrainSettings(BaseModel):
    """Defaults of ``python -m training train``; each flag overrides its field."""

    data: list[str] = Field(default_factory=list, description="Training files, folders or HF dataset names.")
    test_data: str | None = Field(default=None, description="File evaluated once at the end.")
    base_model: str = Field(default=DEFAULT_BASE_MODEL, description="Hub id, local folder or 'bundled'.")
    output_dir: Path = Field(default=Path(DEFAULT_MODEL_DIR), description="Where the model folder goes.")
    epochs: float = Field(default=3.0, gt=0, description="Training epochs (fractions allowed).")
    learning_rate: float = Field(default=2e-5, gt=0, description="Peak learning rate (linear decay).")
    batch_size: int = Field(default=32, gt=0, description="Train and eval batch size.")
    max_length: int = Field(default=300, gt=8, description="Token truncation length.")
    truncation: Literal["head", "head_tail"] = Field(
        default="head", description="head keeps the first tokens; head_tail keeps the first and last."
    )
    validation_fraction: float = Field(default=0.1, gt=0, lt=1, description="Held out from train data.")
    max_train_samples: int | None = Field(
        default=None, gt=0, description="Use at most this many training rows (seeded sample)."
    )
    max_eval_samples: int | None = Field(
        default=None, gt=0, description="Validate each epoch on at most this many held-out rows."
    )
    seed: int = Field(default=42, description="Seed for the split, sampling and training.")
    precision: Precision = Field(
        default="auto",
        description="Mixed precision (autocast). auto: bf16 (else fp16) on a CUDA GPU, fp32 on CPU.",
    )


class Settings(BaseSettings):
    """All of sentiq's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SENTIQ_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
        # A ValidationError's text would otherwise repeat rejected values, e.g. a URL with its password.
        hide_input_in_errors=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _former_review_limits(cls, values: Any) -> Any:
        # SENTIQ_WORKER_MAX_REVIEW_CHARS / SENTIQ_PRODUCER_MAX_REVIEW_CHARS were two settings that had
        # to agree; either still sets the one limit when SENTIQ_QUEUE_MAX_REVIEW_CHARS is not set.
        if not isinstance(values, dict):
            return values
        values = dict(values)
        former: list[Any] = []
        for name in ("worker", "producer"):
            section = values.get(name)
            if isinstance(section, dict) and "max_review_chars" in section:
                section = dict(section)
                former.append(section.pop("max_review_chars"))
                values[name] = section
        queue = values.get("queue")
        if former and not (isinstance(queue, dict) and "max_review_chars" in queue):
            values["queue"] = {**(queue if isinstance(queue, dict) else {}), "max_review_chars": former[0]}
        return values

    redis: RedisSettings = Field(default_factory=RedisSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from defaults, ``.env``, ``SENTIQ_*`` variables and then ``overrides``.

    ``overrides`` maps section names to dicts of fields, e.g. ``{"redis": {"url": ...}}``;
    ``None`` values are ignored so that unset CLI flags keep the environment's value.
    """
    settings = Settings()
    if not overrides:
        return settings
    merged = settings.model_dump()
    for section, fields in overrides.items():
        merged[section].update({key: value for key, value in fields.items() if value is not None})
    return Settings.model_validate(merged)


def describe_validation_error(error: ValidationError, *, as_flags: bool = False) -> str:
    """``invalid setting redis.url (SENTIQ_REDIS_URL): ...`` for each problem, on one line.

    With ``as_flags`` a setting is named by its command-line flag: ``invalid setting --max-length
    (SENTIQ_TRAIN_MAX_LENGTH): ...``. The one formatter of the three command lines. The rejected
    values are left out (and :class:`Settings` hides them from the error's own text): a Redis URL
    may carry a password.
    """
    problems = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        name = ".".join(location) or "settings"
        if len(location) >= 2:
            section, field = location[0], location[1]
            shown = f"--{field.replace('_', '-')}" if as_flags else name
            name = f"{shown} (SENTIQ_{section.upper()}_{field.upper()})"
        # A validator's ValueError reads "Value error, <our message>": the prefix says nothing.
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "invalid setting " + "; ".join(problems)
