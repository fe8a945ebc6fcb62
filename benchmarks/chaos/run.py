"""The chaos run: reviews stream through real workers while workers and Redis are killed.

One private ``redis-server`` (append-only file, restarted on the same port from its data), three
(``--workers``) real ``python -m worker`` processes serving a tiny random BERT, and sentiq's own
:class:`~producer.Client` on the producing side. While the producer streams the reviews in at an
even pace and waits for their results:

- worker slot 0 gets SIGKILL every few seconds (preferably while it holds jobs) and is restarted;
  each kill waits until the previous replacement serves, so loading a model sets the pace;
- another worker (slot 1, else 2) gets SIGTERM while it holds jobs, must finish them and exit 0,
  and is restarted;
- Redis gets SIGKILL and is restarted on the same port, twice by default;
- a worker that exits although nobody signalled it is a crash: it is recorded with its exit code
  and restarted (as ``restart: unless-stopped`` in the compose file would).

The producer never has a submit in flight at the moment Redis is killed (they share a lock), so a
submit that failed wrote nothing and is simply repeated: a duplicate result can only come from
the workers. Kills still planned when every review is answered are skipped (and listed). After a
settling time for late duplicates, every entry of the predictions stream is read back: a review
with no result is lost, a review with more than one entry is a duplicate.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import queue
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from benchmarks.chaos import report
from benchmarks.throughput import DEFAULT_DATA, REPO_ROOT, load_reviews
from producer import Client
from sentiq.contract import Prediction, stream_key
from sentiq.errors import RedisUnavailableError, ResultsTimeoutError
from sentiq.result_store import STREAM_FIELD_ID, STREAM_FIELD_RESULT
from sentiq.settings import Settings, load_settings
from stack.embedded_redis import EmbeddedRedis
from stack.worker_processes import WorkerProcess
from tools.tiny_models import build_tiny_model, sample_texts

#: The worker slot that takes every SIGKILL; SIGTERMs go to the others.
SIGKILL_SLOT = 0
QUEUE_NAME = "chaos"
#: How long a kill waits for its worker to hold a job before killing it anyway.
BUSY_WAIT_S = 3.0
#: A kill lands up to this long after its worker took a job (seeded random).
KILL_JITTER_S = 0.2
#: How long a kill waits for its worker to be serving.
SERVING_WAIT_S = 120.0
#: Long enough for a restarted Redis to read its append-only file back.
REDIS_START_TIMEOUT_S = 30.0
#: ``--quick``: the CI variant, one kill of each kind (under 90 s on two cores).
QUICK: dict[str, Any] = {"reviews": 600, "submit_s": 20.0, "sigkills": 1, "sigterms": 1, "redis_restarts": 1}
#: Lines of evidence (stream entries, jobs, log lines) kept per lost or duplicated review.
EVIDENCE_REVIEWS = 20


@dataclass(frozen=True)
class Options:
    """What one chaos run does; every field is a command-line flag."""

    reviews: int = 5_000
    submit_s: float = 60.0
    workers: int = 3
    sigkills: int | None = None
    sigkill_every_s: float = 6.0
    sigterms: int = 2
    redis_restarts: int = 2
    redis_down_s: float = 5.0
    heartbeat_ttl_s: int = 5
    maintenance_interval_s: int = 2
    reviews_per_job: int = 32
    max_batch_size: int = 64
    drain_timeout_s: float = 180.0
    seed: int = 7
    #: Seconds to wait after the last result for late duplicates (default: heartbeat TTL plus two
    #: maintenance intervals plus 2 s, the time a re-queued job takes to show up).
    settle_s: float = 11.0
    model: Path | None = None
    data: Path = DEFAULT_DATA
    output: Path = REPO_ROOT / "bench-results" / "chaos"

    def plan(self) -> list[tuple[float, str]]:
        """The kills as (seconds after the first submit, kind), in order.

        SIGKILLs start 3 s in and repeat every ``sigkill_every_s`` (by default as many as fit in
        the submit window); SIGTERMs and Redis kills are spread over the window, offset from each
        other. A kill whose worker is still loading waits for it, so later ones may run late.
        Redis kills wait for nothing: an outage can come while a worker starts.
        """
        sigkills = self.sigkills
        if sigkills is None:
            sigkills = max(1, int((self.submit_s - 3.0) // self.sigkill_every_s) + 1)
        steps = [(3.0 + index * self.sigkill_every_s, report.SIGKILL) for index in range(sigkills)]
        steps += [
            (self.submit_s * (index + 0.5) / self.sigterms, report.SIGTERM) for index in range(self.sigterms)
        ]
        steps += [
            (self.submit_s * (index + 0.75) / self.redis_restarts, report.REDIS_KILL)
            for index in range(self.redis_restarts)
        ]
        return sorted(steps)


class Chaos:
    """The processes of one run and what happened to them."""

    def __init__(self, options: Options, settings: Settings, redis: EmbeddedRedis, log_dir: Path) -> None:
        self.options = options
        self.settings = settings
        self.redis = redis
        self.log_dir = log_dir
        self.control = Redis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=1)
        self.events: list[report.Event] = []
        self.workers: dict[int, WorkerProcess] = {}
        self._generations: dict[int, int] = {}
        # Names of the workers seen serving (model loaded, registered in Redis).
        self.served: set[str] = set()
        # Pids the harness signalled (or already handled as crashed): never reported as crashes.
        self._handled: set[int] = set()
        self._lock = threading.RLock()
        # Held by the producer around each submit and by the Redis kill: no submit is in flight when
        # Redis dies, so a submit that failed wrote nothing and repeating it adds no job.
        self.submit_lock = threading.Lock()
        # Held by a worker kill while it reads what the worker held, and by the Redis kill.
        self.chaos_lock = threading.Lock()
        self.redis_up = threading.Event()
        self.redis_up.set()
        self.stopping = threading.Event()
        # Every submitted review is answered: kills still to come would hit an idle system.
        self.stream_over = threading.Event()
        self.skipped: list[str] = []
        self.submit_done = threading.Event()
        self.new_ids: queue.Queue[list[str]] = queue.Queue()
        self.failures: list[str] = []
        self.started_at = 0.0
        self.submit_retries = 0
        self.wait_interruptions = 0
        self.random = random.Random(options.seed)

    # -- workers ----------------------------------------------------------------------------

    def start_worker(self, slot: int) -> WorkerProcess:
        """Start a new worker process in ``slot`` (a fresh name each time, e.g. ``w0-3``)."""
        with self._lock:
            generation = self._generations[slot] = self._generations.get(slot, -1) + 1
            worker = WorkerProcess(
                self.settings,
                self.log_dir,
                f"w{slot}-{generation}",
                env={
                    "SENTIQ_WORKER_LOG_LEVEL": "INFO",
                    "SENTIQ_WORKER_MAX_BATCH_SIZE": str(self.options.max_batch_size),
                    "SENTIQ_QUEUE_STREAM_MAXLEN": str(self.settings.queue.stream_maxlen),
                },
                cwd=REPO_ROOT,
            )
            self.workers[slot] = worker
            return worker

    def restart_worker(self, slot: int, reason: str) -> None:
        """Start a replacement for ``slot``'s worker and record it."""
        worker = self.start_worker(slot)
        self.record(report.Event(report.WORKER_RESTART, time.time(), worker.name, detail=reason))

    def stop_all_workers(self) -> None:
        """SIGTERM every worker still running (SIGKILL after 30 s); they finish their batch first."""
        with self._lock:
            workers = list(self.workers.values())
            self._handled.update(worker.process.pid for worker in workers)
        # All at once: each one's shutdown takes seconds, and a second SIGTERM would make RQ cold-stop.
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            worker.stop(signal.SIGKILL)

    def _done(self) -> bool:
        return self.stopping.is_set() or self.stream_over.is_set()

    def _serving(self, worker: WorkerProcess) -> bool:
        """Whether ``worker`` has loaded its model (ready file) and RQ has registered it in Redis."""
        if worker.name in self.served:
            return worker.process.poll() is None
        if not (self.redis_up.is_set() and worker.ready_file.exists() and worker.process.poll() is None):
            return False
        if not self.control.exists(Worker.redis_worker_namespace_prefix + worker.name):
            return False
        self.served.add(worker.name)
        return True

    def _wait_serving(self, slots: Sequence[int]) -> int | None:
        """The first of ``slots`` whose worker serves, once one does: kills never land in a start-up."""
        deadline = time.monotonic() + SERVING_WAIT_S
        while not self._done() and time.monotonic() < deadline:
            for slot in slots:
                if self._serving(self.workers[slot]):
                    return slot
            self.stopping.wait(0.05)
        return None

    def _executions(self, worker: WorkerProcess) -> list[str]:
        """Ids of the jobs ``worker`` has started and not finished (RQ's per-worker execution set)."""
        members = cast(
            "set[bytes]", self.control.smembers(WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker.name))
        )
        # Members are "<job id>:<execution id>".
        return sorted({member.decode().rsplit(":", 1)[0] for member in members})

    def _wait_busy(self, worker: WorkerProcess) -> bool:
        """Wait up to :data:`BUSY_WAIT_S` for ``worker`` to hold a job: kills should land mid-batch.

        The first time it holds one, the kill waits a random bit longer so that it lands anywhere
        in the batch (admission, forward passes, publishing); if the batch is over by then, the
        kill lands as soon as the next one starts.
        """
        deadline = time.monotonic() + BUSY_WAIT_S
        key = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker.name)
        jittered = False
        while time.monotonic() < deadline and not self._done():
            if self.control.scard(key):
                if jittered:
                    return True
                time.sleep(self.random.uniform(0.0, KILL_JITTER_S))
                jittered = True
                if self.control.scard(key):
                    return True
            time.sleep(0.002)
        return False

    def reviews_of(self, job_ids: Sequence[str]) -> tuple[list[str], str]:
        """The review ids the given jobs carry (jobs already gone are skipped), and their statuses."""
        reviews: list[str] = []
        statuses: collections.Counter[str] = collections.Counter()
        for job in Job.fetch_many(job_ids, connection=self.control, serializer=JSONSerializer):
            if job is not None:
                reviews += [str(review["id"]) for review in job.args[0]["reviews"]]
                status = job.get_status(refresh=False)
                statuses[str(getattr(status, "value", status))] += 1
        return reviews, ", ".join(f"{count} job(s) {status}" for status, count in sorted(statuses.items()))

    def kill_worker(self, slots: Sequence[int], sig: signal.Signals) -> bool:
        """Signal the first serving worker of ``slots`` (preferably mid-batch), record it, restart it.

        False when the stream ended (or none served) before it could.
        """
        while (slot := self._wait_serving(slots)) is not None:
            with self.chaos_lock:
                # Checked again under the lock: Redis may have gone down meanwhile.
                if self.redis_up.is_set() and self._serving(self.workers[slot]):
                    self._kill_worker(slot, sig)
                    return True
        return False

    def _kill_worker(self, slot: int, sig: signal.Signals) -> None:
        worker = self.workers[slot]
        busy = self._wait_busy(worker)
        # SIGTERM: the jobs it holds now are the ones it must finish before exiting.
        held = self._executions(worker) if sig == signal.SIGTERM else []
        with self._lock:
            self._handled.add(worker.process.pid)
        at = time.time()
        mood = "mid-batch" if busy else "idle"
        if sig == signal.SIGKILL:
            worker.stop(signal.SIGKILL)
            # The dead worker cannot touch its execution set any more: it holds what it died with.
            held = self._executions(worker)
            reviews, statuses = self.reviews_of(held)
            detail = f"{mood}; {statuses}" if statuses else mood
            self.record(report.Event(report.SIGKILL, at, worker.name, tuple(held), tuple(reviews), detail))
        else:
            reviews, statuses = self.reviews_of(held)
            detail = f"{mood}; {statuses}" if statuses else mood
            self.record(report.Event(report.SIGTERM, at, worker.name, tuple(held), tuple(reviews), detail))
            # It finishes its batch first; the plan goes on meanwhile.
            self.spawn(f"stop-{worker.name}", lambda: self._await_exit(slot, worker, at))
            return
        self.restart_worker(slot, "after SIGKILL")

    def _await_exit(self, slot: int, worker: WorkerProcess, signalled_at: float) -> None:
        code = worker.stop(signal.SIGTERM, timeout_s=60)
        exited = time.time()
        detail = f"exit code {code}, {exited - signalled_at:.1f}s after SIGTERM"
        self.record(report.Event(report.WORKER_EXIT, exited, worker.name, detail=detail))
        if not self.stopping.is_set():
            self.restart_worker(slot, "after SIGTERM")

    # -- redis ------------------------------------------------------------------------------

    def restart_redis(self) -> bool:
        """SIGKILL Redis, leave it down, start it again on its port (from its append-only file).

        It does not wait for workers that are still starting: an outage can come at any time.
        """
        with self.chaos_lock, self.submit_lock:
            started = StartedJobRegistry(QUEUE_NAME, connection=self.control, serializer=JSONSerializer)
            # cleanup=False: the harness must never do the workers' abandoned-job handling for them.
            held = started.get_job_ids(cleanup=False)
            reviews, _ = self.reviews_of(held)
            self.redis_up.clear()
            at = time.time()
            self.redis.kill()
        self.record(report.Event(report.REDIS_KILL, at, "redis", tuple(held), tuple(reviews)))
        self.stopping.wait(self.options.redis_down_s)
        self.redis.start(timeout_s=REDIS_START_TIMEOUT_S)
        self.redis_up.set()
        self.record(report.Event(report.REDIS_RESTART, time.time(), "redis"))
        return True

    # -- threads ----------------------------------------------------------------------------

    def record(self, event: report.Event) -> None:
        """Add ``event`` to the run's record and say it on stderr."""
        with self._lock:
            self.events.append(event)
        held = f" holding {len(event.jobs)} job(s), {len(event.reviews)} review(s)" if event.jobs else ""
        detail = f" ({event.detail})" if event.detail else ""
        print(
            f"  {event.at - self.started_at:7.1f}s {event.kind} {event.target}{held}{detail}", file=sys.stderr
        )

    def spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """Run ``target`` on a daemon thread; an exception in it stops the whole run."""

        def guarded() -> None:
            try:
                target()
            except Exception:
                self.failures.append(f"{name} thread failed:\n{traceback.format_exc()}")
                self.stopping.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def run_plan(self) -> list[threading.Thread]:
        """Carry out :meth:`Options.plan` against the clock: one thread per kind of kill.

        Separate timelines, so that a SIGKILL waiting for a replacement to load never holds back
        a Redis kill; the chaos lock keeps a worker kill's own Redis reads out of an outage.
        """
        actions: dict[str, Callable[[], bool]] = {
            report.SIGKILL: lambda: self.kill_worker([SIGKILL_SLOT], signal.SIGKILL),
            # Any other worker, slot 1 first: one of them serves even while another restarts.
            report.SIGTERM: lambda: self.kill_worker(range(1, self.options.workers), signal.SIGTERM),
            report.REDIS_KILL: self.restart_redis,
        }
        plan = self.options.plan()

        def timeline(kind: str) -> None:
            offsets = [offset for offset, step in plan if step == kind]
            for index, offset in enumerate(offsets):
                self.stopping.wait(max(0.0, self.started_at + offset - time.time()))
                if self._done() or not actions[kind]():
                    with self._lock:
                        self.skipped += [f"{kind} planned at {at:.1f}s" for at in offsets[index:]]
                    return

        return [self.spawn(f"plan-{kind}", functools.partial(timeline, kind)) for kind in actions]

    def watch_workers(self) -> None:
        """Note which workers serve; record an exit nobody asked for as a crash; restart it with Redis up."""
        crashed: dict[int, WorkerProcess] = {}
        while not self.stopping.wait(0.2):
            with self._lock:
                for slot, worker in list(self.workers.items()):
                    with contextlib.suppress(RedisError):
                        self._serving(worker)
                    code = worker.process.poll()
                    if code is None or worker.process.pid in self._handled:
                        continue
                    self._handled.add(worker.process.pid)
                    crashed[slot] = worker
                    when = "while serving" if worker.name in self.served else "during start-up"
                    detail = f"{when}; {_crash_detail(worker, code)}"
                    self.record(report.Event(report.WORKER_CRASH, time.time(), worker.name, detail=detail))
                if self.redis_up.is_set():
                    for slot in list(crashed):
                        del crashed[slot]
                        self.restart_worker(slot, "after a crash")

    def produce(self, texts: Sequence[str], ids: Sequence[str]) -> None:
        """Submit one job's worth of reviews at a time, evenly over ``submit_s`` seconds."""
        per_job = self.settings.producer.reviews_per_job
        starts = range(0, len(ids), per_job)
        interval = self.options.submit_s / max(1, len(starts))
        with Client.from_settings(self.settings) as client:
            for index, start in enumerate(starts):
                if self.stopping.wait(max(0.0, self.started_at + index * interval - time.time())):
                    return
                chunk = list(ids[start : start + per_job])
                while not self.stopping.is_set():
                    with self.submit_lock:
                        try:
                            client.submit(texts[start : start + per_job], chunk)
                            break
                        except RedisUnavailableError:
                            # Redis died before this submit reached it (see submit_lock): nothing
                            # was written, so the same ids go again.
                            self.submit_retries += 1
                    self.stopping.wait(0.2)
                self.new_ids.put(chunk)
        self.submit_done.set()

    def wait_for_results(self) -> dict[str, float]:
        """Wait, as a client does, for every submitted review's result; returns id -> arrival time."""
        arrived: dict[str, float] = {}
        pending: dict[str, None] = {}
        deadline: float | None = None
        with Client.from_settings(self.settings) as client:
            while not self.stopping.is_set():
                with contextlib.suppress(queue.Empty):
                    while True:
                        pending.update(dict.fromkeys(self.new_ids.get_nowait()))
                finished = self.submit_done.is_set() and self.new_ids.empty()
                if finished and deadline is None:
                    deadline = time.monotonic() + self.options.drain_timeout_s
                if (finished and not pending) or (deadline is not None and time.monotonic() > deadline):
                    break
                if not pending:
                    time.sleep(0.1)
                    continue
                try:
                    for prediction in client.iter_results(list(pending), timeout=2.0):
                        arrived[prediction.id] = time.time()
                        pending.pop(prediction.id, None)
                except ResultsTimeoutError:
                    pass
                except RedisUnavailableError:
                    self.wait_interruptions += 1
                    self.stopping.wait(0.5)
        return arrived

    # -- reading back -----------------------------------------------------------------------

    def stream_entries(self) -> list[report.ResultEntry]:
        """Every entry of the predictions stream, oldest first."""
        key = stream_key(self.settings.queue.key_prefix)
        entries: list[report.ResultEntry] = []
        start = "-"
        while True:
            page = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]", self.control.xrange(key, min=start, count=5_000)
            )
            for entry_id, fields in page:
                # A stream entry id starts with the server's clock in milliseconds.
                at = int(entry_id.decode().split("-")[0]) / 1000
                prediction = Prediction.from_json(fields[STREAM_FIELD_RESULT.encode()])
                entries.append(
                    report.ResultEntry(fields[STREAM_FIELD_ID.encode()].decode(), at, prediction.error)
                )
            if len(page) < 5_000:
                return entries
            start = "(" + page[-1][0].decode()

    def rq_state(self) -> dict[str, int]:
        """How many jobs are still queued, in flight or failed: after a clean run, only finished ones."""
        started = StartedJobRegistry(QUEUE_NAME, connection=self.control, serializer=JSONSerializer)
        failed = FailedJobRegistry(QUEUE_NAME, connection=self.control, serializer=JSONSerializer)
        queue = Queue(QUEUE_NAME, connection=self.control, serializer=JSONSerializer)
        return {
            "queued": queue.count,
            "intermediate": len(queue.intermediate_queue.get_job_ids()),
            "started": len(started.get_job_ids(cleanup=False)),
            "failed": len(failed.get_job_ids(cleanup=False)),
        }

    def evidence(
        self, review_ids: Sequence[str], entries: Sequence[report.ResultEntry]
    ) -> list[dict[str, Any]]:
        """For each review: its stream entries, the jobs that carried it, and the log lines naming them."""
        wanted = set(review_ids[:EVIDENCE_REVIEWS])
        jobs_of: dict[str, list[Job]] = {review_id: [] for review_id in wanted}
        job_ids = [
            cast(bytes, key).decode().removeprefix("rq:job:")
            for key in self.control.scan_iter(match="rq:job:*", count=1000)
        ]
        for job in Job.fetch_many(job_ids, connection=self.control, serializer=JSONSerializer):
            for review in job.args[0]["reviews"] if job is not None else ():
                if review["id"] in wanted:
                    jobs_of[review["id"]].append(job)  # type: ignore[arg-type]
        logs = {
            path.name: path.read_text(errors="replace").splitlines()
            for path in sorted(self.log_dir.glob("*.log"))
        }
        found = []
        for review_id in review_ids[:EVIDENCE_REVIEWS]:
            found.append(
                {
                    "review_id": review_id,
                    "stream_entries": [
                        {"at_s": round(entry.at - self.started_at, 3), "error": entry.error}
                        for entry in entries
                        if entry.review_id == review_id
                    ],
                    "jobs": [_job_evidence(job, logs) for job in jobs_of[review_id]],
                }
            )
        return found


def _job_evidence(job: Job, logs: dict[str, list[str]]) -> dict[str, Any]:
    result = job.latest_result()
    return {
        "job_id": job.id,
        "status": str(job.get_status(refresh=False)),
        "retries_left": job.retries_left,
        "last_failure": (result.exc_string or "").strip().splitlines()[-1:] if result is not None else [],
        "log_lines": [f"{name}: {line}" for name, lines in logs.items() for line in lines if job.id in line],
    }


def _crash_detail(worker: WorkerProcess, code: int) -> str:
    lines = [line for line in worker.log.splitlines() if line.strip()]
    last = lines[-1][:200] if lines else "no output"
    return f"exit code {code}; last log line: {last}"


_LAUNCHED = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the program started."""
    print(f"[{time.monotonic() - _LAUNCHED:6.1f}s] {message}", file=sys.stderr)


def tiny_model_folder(target: Path) -> Path:
    """A tiny random BERT classifier folder, as the tests build it."""
    texts = sample_texts(REPO_ROOT / "sentiq" / "data" / "imdb_train_sample.csv.gz")
    return build_tiny_model(target, texts, model_id="chaos-tiny-random-bert")


def run(options: Options, command: str) -> tuple[report.Figures, dict[str, Any]]:
    """Run the chaos and return its figures and the whole JSON report."""
    output = options.output
    log_dir = output / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    scratch = Path(tempfile.mkdtemp(prefix="sentiq-chaos-"))
    # The compose file's persistence (append-only, fsync every second): a SIGKILLed server comes
    # back on its port with its data, as a crashed production Redis does.
    redis = EmbeddedRedis(appendonly=True, fsync="everysec", folder=scratch / "redis")
    chaos: Chaos | None = None
    try:
        if options.model is None:
            say("building a tiny random BERT model folder")
        model = options.model or tiny_model_folder(scratch / "model")
        redis.start(timeout_s=REDIS_START_TIMEOUT_S)
        settings = load_settings(
            redis={"url": redis.url},
            queue={
                "name": QUEUE_NAME,
                "key_prefix": QUEUE_NAME,
                "stream_maxlen": max(100_000, 4 * options.reviews),
            },
            model={"path": model},
            worker={
                "device": "cpu",
                "precision": "fp32",
                "heartbeat_ttl_s": options.heartbeat_ttl_s,
                "maintenance_interval_s": options.maintenance_interval_s,
            },
            producer={"reviews_per_job": options.reviews_per_job},
        )
        chaos = Chaos(options, settings, redis, log_dir)
        texts = load_reviews(options.data, options.reviews)
        ids = [f"chaos-{index:06d}" for index in range(options.reviews)]
        say(f"starting {options.workers} workers on {redis.url} (logs in {log_dir})")
        for slot in range(options.workers):
            chaos.start_worker(slot)
        for worker in chaos.workers.values():
            worker.wait_ready(timeout_s=SERVING_WAIT_S)
        chaos.started_at = time.time()
        say(f"workers ready; streaming {len(ids):,} reviews over {options.submit_s:g}s:")
        chaos.spawn("watch", chaos.watch_workers)
        chaos.spawn("produce", lambda: chaos.produce(texts, ids))  # type: ignore[union-attr]
        timelines = chaos.run_plan()
        arrived = chaos.wait_for_results()
        finished_at = max(arrived.values(), default=time.time())
        chaos.stream_over.set()
        # A Redis outage under way ends first; then late duplicates (a job re-run after its results
        # were published) get the time it takes to notice an abandoned job.
        for timeline in timelines:
            timeline.join(timeout=options.redis_down_s + SERVING_WAIT_S)
        say(f"{len(arrived):,} of {len(ids):,} results arrived; {options.settle_s:g}s for late duplicates")
        chaos.stopping.wait(options.settle_s)
        if chaos.failures:
            raise RuntimeError("\n".join(chaos.failures))
        entries = chaos.stream_entries()
        with Client.from_settings(settings) as client:
            stored = set(client.fetch(ids))
        events = sorted(chaos.events, key=lambda event: event.at)
        figures = report.summarize(
            ids,
            entries,
            stored=stored,
            events=events,
            started_at=chaos.started_at,
            finished_at=finished_at,
            planned=collections.Counter(kind for _, kind in options.plan()),
        )
        output.mkdir(parents=True, exist_ok=True)
        report.write_timeline(entries, events, chaos.started_at, output / "chaos.png")
        data = {
            "command": command,
            "options": {
                key: str(value) if isinstance(value, Path) else value for key, value in vars(options).items()
            },
            "figures": figures.to_json(),
            "client": {
                "received": len(arrived),
                "submit_retries_during_outages": chaos.submit_retries,
                "result_waits_interrupted_by_outages": chaos.wait_interruptions,
            },
            "plan_skipped": sorted(chaos.skipped),
            "rq_at_end": chaos.rq_state(),
            "lost_evidence": chaos.evidence(figures.lost_ids, entries),
            "duplicate_evidence": chaos.evidence(figures.duplicate_ids, entries),
            "events": [
                {
                    "kind": event.kind,
                    "at_s": round(event.at - chaos.started_at, 3),
                    "target": event.target,
                    "jobs": list(event.jobs),
                    "reviews": len(event.reviews),
                    "detail": event.detail,
                }
                for event in events
            ],
        }
        (output / "chaos.json").write_text(json.dumps(data, indent=2))
        (output / "chaos.md").write_text(report.markdown(figures, command))
        return figures, data
    finally:
        if chaos is not None:
            chaos.stopping.set()
            chaos.stop_all_workers()
            chaos.control.close()
        redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def parse_options(argv: Sequence[str] | None) -> Options:
    """Options from the command line (``--quick``: the CI variant's counts)."""
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI variant: 600 reviews over 20 s, one kill of each kind"
    )
    parser.add_argument("--reviews", type=int, help=f"reviews to stream (default {defaults.reviews})")
    parser.add_argument(
        "--submit-s", type=float, help=f"seconds to stream them over (default {defaults.submit_s:g})"
    )
    parser.add_argument("--workers", type=int, default=defaults.workers, help="worker processes (at least 2)")
    parser.add_argument(
        "--sigkills", type=int, help="worker SIGKILLs (default: every --sigkill-every-s while streaming)"
    )
    parser.add_argument("--sigkill-every-s", type=float, default=defaults.sigkill_every_s)
    parser.add_argument("--sigterms", type=int, help=f"worker SIGTERMs (default {defaults.sigterms})")
    parser.add_argument(
        "--redis-restarts", type=int, help=f"Redis SIGKILL + restart (default {defaults.redis_restarts})"
    )
    parser.add_argument(
        "--redis-down-s", type=float, default=defaults.redis_down_s, help="seconds Redis stays down"
    )
    parser.add_argument("--heartbeat-ttl-s", type=int, default=defaults.heartbeat_ttl_s)
    parser.add_argument("--maintenance-interval-s", type=int, default=defaults.maintenance_interval_s)
    parser.add_argument("--reviews-per-job", type=int, default=defaults.reviews_per_job)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument(
        "--drain-timeout-s", type=float, default=defaults.drain_timeout_s, help="wait for the last results"
    )
    parser.add_argument("--settle-s", type=float, help="wait after the last result for late duplicates")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of where in a batch kills land")
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny random BERT built now)")
    parser.add_argument("--data", type=Path, default=defaults.data, help="CSV with a review column")
    parser.add_argument(
        "--output", type=Path, default=defaults.output, help="where the JSON, Markdown, PNG and logs go"
    )
    args = parser.parse_args(argv)
    preset: dict[str, Any] = QUICK if args.quick else {}

    def pick(name: str) -> Any:
        given = getattr(args, name)
        return given if given is not None else preset.get(name, getattr(defaults, name))

    options = Options(
        reviews=pick("reviews"),
        workers=args.workers,
        submit_s=pick("submit_s"),
        sigkills=pick("sigkills"),
        sigkill_every_s=args.sigkill_every_s,
        sigterms=pick("sigterms"),
        redis_restarts=pick("redis_restarts"),
        redis_down_s=args.redis_down_s,
        heartbeat_ttl_s=args.heartbeat_ttl_s,
        maintenance_interval_s=args.maintenance_interval_s,
        reviews_per_job=args.reviews_per_job,
        max_batch_size=args.max_batch_size,
        drain_timeout_s=args.drain_timeout_s,
        seed=args.seed,
        settle_s=args.settle_s
        if args.settle_s is not None
        else args.heartbeat_ttl_s + 2 * args.maintenance_interval_s + 2,
        model=args.model,
        data=args.data,
        output=args.output,
    )
    if options.reviews < 1 or options.submit_s <= 0 or options.sigkill_every_s <= 0:
        parser.error("--reviews must be at least 1, --submit-s and --sigkill-every-s positive")
    if options.workers < 2:
        parser.error("--workers must be at least 2: one takes the SIGKILLs, another the SIGTERMs")
    if min(options.sigterms, options.redis_restarts, options.sigkills or 0) < 0:
        parser.error("kill counts must not be negative")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.chaos``: 0 when nothing was lost or duplicated, else 1."""
    options = parse_options(argv)
    command = shlex.join(["python", "-m", "benchmarks.chaos", *(sys.argv[1:] if argv is None else argv)])
    try:
        figures, _ = run(options, command)
    except KeyboardInterrupt:
        print("interrupted: every process the run started has been stopped", file=sys.stderr)
        return 130
    print()
    print(report.markdown(figures, command))
    print(f"wrote {options.output / 'chaos.json'}, chaos.md, chaos.png and logs/")
    return 0 if figures.passed and figures.complete else 1
