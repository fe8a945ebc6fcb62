"""A busy worker whose credentials Redis starts refusing (it came back with another password).

The worker read its password once: whatever it was doing (passes running, one batch or two
overlapping, gathering jobs, between publishing and finishing a batch, starting up) it must stop
within a bounded time with exit 2, one ``error:`` line, no traceback and no password in its log,
and a worker started with the new password must answer every review submitted before exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis import Redis
from rq.registry import StartedJobRegistry

from benchmarks.simulated_device import SIMULATION_PATH
from producer import Client
from sentiq.settings import Settings
from stack.embedded_redis import EmbeddedRedis
from tests.conftest import REPO_ROOT
from tests.support.workers import WorkerProcess
from worker.cli import EXIT_USAGE
from worker.model import SentimentModel
from worker.rq_internals import intermediate_queue_key

OLD_PASSWORD = "Old-pw-7Qz-never-logged"
NEW_PASSWORD = "New-pw-4Rk-never-logged"
#: How long a refused worker may take to exit (measured: 0.9 to 2.6 s; its passes end first).
EXIT_BOUND_S = 20

#: A ``sitecustomize`` that holds a worker process at the start of one function or method
#: (``module:function`` or ``module:Class.method``) until the test creates the gate file.
GATE = textwrap.dedent(
    """
    import importlib, os, pathlib, time

    module_name, _, attribute = os.environ["SENTIQ_TEST_GATE_AT"].partition(":")
    module = importlib.import_module(module_name)
    owner_name, _, method_name = attribute.rpartition(".")
    owner = getattr(module, owner_name) if owner_name else module
    real = owner.__dict__[method_name]
    gate = pathlib.Path(os.environ["SENTIQ_TEST_GATE"])

    def held(call):
        def wrapper(*args, **kwargs):
            gate.with_suffix(".reached").touch()
            while not gate.exists():
                time.sleep(0.01)
            return call(*args, **kwargs)
        return wrapper

    if isinstance(real, classmethod):
        setattr(owner, method_name, classmethod(held(real.__func__)))
    else:
        setattr(owner, method_name, held(real))
    """
)


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    # Append-only, so that a restart (with another password) keeps the queue and the results.
    with EmbeddedRedis(password=OLD_PASSWORD, appendonly=True) as started:
        yield started


def on_server(settings: Settings, server: EmbeddedRedis, password: str, **producer: int) -> Settings:
    """``settings`` on ``server`` with ``password`` (given apart from the URL, as workers get it)."""
    redis = settings.redis.model_copy(
        update={"url": f"redis://127.0.0.1:{server.port}/0", "password": SecretStr(password)}
    )
    return settings.model_copy(
        update={"redis": redis, "producer": settings.producer.model_copy(update=producer)}
    )


def slow_passes(model: SentimentModel, pass_us: int, rows: int) -> dict[str, str]:
    """A worker on the simulated device: ``pass_us`` per row, gatherings of ``rows`` reviews."""
    return {
        "PYTHONPATH": os.pathsep.join([str(SIMULATION_PATH), str(REPO_ROOT)]),
        "SENTIQ_BENCH_SIMULATED_PASS_US": str(pass_us),
        "SENTIQ_WORKER_MAX_GATHER_TOKENS": str(rows * model.info.max_length),
    }


def held_at(tmp_path: Path, target: str) -> tuple[dict[str, str], Path]:
    """A worker's variables that hold it at ``target`` until the returned gate file exists."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(GATE)
    gate = tmp_path / "gate"
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]),
        "SENTIQ_TEST_GATE_AT": target,
        "SENTIQ_TEST_GATE": str(gate),
    }
    return env, gate


def wait_until(worker: WorkerProcess, condition: Callable[[], bool], timeout_s: float) -> None:
    """Wait (polling every millisecond) until ``condition()`` holds while ``worker`` runs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert worker.process.poll() is None and time.monotonic() < deadline, worker.log
        time.sleep(0.001)


def wait_until_held(worker: WorkerProcess, gate: Path) -> None:
    wait_until(worker, gate.with_suffix(".reached").exists, 60)


def change_password(admin: Redis) -> float:
    """Redis comes back with another password: every client but ``admin`` must log in again."""
    admin.config_set("requirepass", NEW_PASSWORD)
    admin.client_kill_filter(_type="normal", skipme=True)
    return time.monotonic()


def restart_with_new_password(server: EmbeddedRedis, outage_s: float = 1.0) -> float:
    """Redis dies and comes back after ``outage_s`` with another password (and all its data)."""
    server.kill()
    time.sleep(outage_s)
    server.password = NEW_PASSWORD
    server.start()
    return time.monotonic()


@contextlib.contextmanager
def old_password_worker(
    settings: Settings, server: EmbeddedRedis, tmp_path: Path, *args: str, **env: str
) -> Iterator[tuple[WorkerProcess, Redis]]:
    """A worker with the old password, and an admin connection opened while that one is valid."""
    admin = Redis.from_url(server.url)
    worker = WorkerProcess(settings, tmp_path, "refused", *args, SENTIQ_REDIS_PASSWORD=OLD_PASSWORD, **env)
    try:
        yield worker, admin
    finally:
        worker.stop()
        admin.close()


def assert_refused_cleanly(worker: WorkerProcess, since: float, what: str) -> None:
    """The worker exits 2 in time (after ``since``) with one ``error:`` line last, the refusal
    logged once, no traceback and no password."""
    code = worker.stop(None, timeout_s=EXIT_BOUND_S + 5)
    took_s = time.monotonic() - since
    print(f"{what}: exit {code} {took_s:.2f}s after the password changed")
    log = worker.log
    assert code == EXIT_USAGE, f"exit {code} after {took_s:.1f}s:\n{log}"
    assert took_s < EXIT_BOUND_S, log
    assert log.rstrip().splitlines()[-1].startswith("error: Redis refused the credentials"), log
    assert log.count("this worker stops") <= 1, log
    # A refusal is a configuration error, reported as one: not as a batch that failed unexpectedly.
    assert "Traceback" not in log and "unexpectedly" not in log, log
    assert OLD_PASSWORD not in log and NEW_PASSWORD not in log
    assert not worker.ready_file.exists()


def assert_answered_once_after_restart(
    settings: Settings, server: EmbeddedRedis, tmp_path: Path, ids: list[str]
) -> None:
    """A worker with the new password answers every review with a label, each exactly once."""
    renewed = on_server(settings, server, NEW_PASSWORD)
    with Client.from_settings(renewed) as client:
        worker = WorkerProcess(renewed, tmp_path, "renewed", SENTIQ_REDIS_PASSWORD=NEW_PASSWORD)
        try:
            worker.wait_ready()
            predictions = client.results(ids, timeout=60)
        finally:
            code = worker.stop()
        counts = collections.Counter(
            fields[b"id"].decode()
            for _, fields in client.redis.xrange(f"{renewed.queue.key_prefix}:predictions")
        )
    assert code == 0, worker.log
    assert all(p.ok for p in predictions), predictions
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}, counts


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [("off", "config-set"), ("on", "config-set"), ("on", "restart")], ids="-".join
)
def test_a_worker_refused_mid_passes_exits_2_and_loses_nothing(
    case: tuple[str, str],
    settings: Settings,
    server: EmbeddedRedis,
    tiny_model: SentimentModel,
    tmp_path: Path,
) -> None:
    overlap, how = case  # batches overlapping or not; the password changed live or by a restart
    old = on_server(settings, server, OLD_PASSWORD, reviews_per_job=4)
    with Client.from_settings(old) as client:
        ids = client.submit([f"review {n} was great" for n in range(32)])
    # Batches of two jobs (8 reviews) in passes of 0.8 s (8 rows at 0.1 s).
    slow = slow_passes(tiny_model, 100_000, 8)
    args = ("--max-batch-size", "8", "--overlap-batches", overlap)
    with old_password_worker(old, server, tmp_path, *args, **slow) as (worker, admin):
        worker.wait_ready()
        started = StartedJobRegistry(old.queue.name, connection=admin)
        in_flight = 4 if overlap == "on" else 2  # two batches in flight, or one
        wait_until(worker, lambda: started.count >= in_flight, 20)
        since = change_password(admin) if how == "config-set" else restart_with_new_password(server)
        assert_refused_cleanly(worker, since, f"mid-passes, overlap {overlap}, {how}")
    assert_answered_once_after_restart(settings, server, tmp_path, ids)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", ["off", "on"])
def test_a_worker_refused_while_it_gathers_exits_2_and_loses_nothing(
    overlap: str, settings: Settings, server: EmbeddedRedis, tmp_path: Path
) -> None:
    old = on_server(settings, server, OLD_PASSWORD, reviews_per_job=1)
    waits = {"SENTIQ_WORKER_MAX_WAIT_MS": "1000"}
    with (
        old_password_worker(old, server, tmp_path, "--overlap-batches", overlap, **waits) as (worker, admin),
        Client.from_settings(old) as client,
    ):
        worker.wait_ready()
        ids = client.submit(["a lone review waits for company"])
        # The worker took it (into the intermediate list) and waits up to 1 s for more.
        held = intermediate_queue_key(client.queue)
        wait_until(worker, lambda: bool(admin.llen(held)), 10)
        since = change_password(admin)
        assert admin.llen(held) == 1, worker.log  # still gathering: not started yet
        assert_refused_cleanly(worker, since, f"gathering, overlap {overlap}")
        assert "stopped gathering jobs, Redis unavailable" not in worker.log  # a refusal, not an outage
    # Left in the intermediate list: the sweep puts it back after a heartbeat TTL.
    assert_answered_once_after_restart(settings, server, tmp_path, ids)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", ["off", "on"])
def test_a_worker_refused_after_publishing_before_finishing_answers_once(
    overlap: str, settings: Settings, server: EmbeddedRedis, tmp_path: Path
) -> None:
    # The batch's results are out, its jobs still started: the next worker runs them again
    # (abandoned) and must not publish their results a second time.
    old = on_server(settings, server, OLD_PASSWORD, reviews_per_job=2)
    with Client.from_settings(old) as client:
        ids = client.submit([f"review {n} was fine" for n in range(8)])
    env, gate = held_at(tmp_path, "worker.worker:finish_jobs")
    with old_password_worker(old, server, tmp_path, "--overlap-batches", overlap, **env) as (worker, admin):
        wait_until_held(worker, gate)
        since = change_password(admin)
        gate.touch()
        assert_refused_cleanly(worker, since, f"published, not finished, overlap {overlap}")
        assert admin.xlen(f"{old.queue.key_prefix}:predictions") == len(ids)  # published once
    assert_answered_once_after_restart(settings, server, tmp_path, ids)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        # After the first PING, during the model load: RQ's worker is created after it.
        "worker.model:SentimentModel.load",
        # The worker created, not registered yet: RQ's bootstrap runs outside its loop's clean-up.
        "worker.worker:SentiqWorker.register_birth",
        "worker.worker:SentiqWorker.subscribe",
    ],
    ids=["model-load", "register-birth", "subscribe"],
)
def test_a_worker_refused_while_it_starts_exits_2(
    target: str, settings: Settings, server: EmbeddedRedis, tmp_path: Path
) -> None:
    env, gate = held_at(tmp_path, target)
    old = on_server(settings, server, OLD_PASSWORD)
    with old_password_worker(old, server, tmp_path, **env) as (worker, admin):
        wait_until_held(worker, gate)
        since = change_password(admin)
        gate.touch()
        assert_refused_cleanly(worker, since, f"starting, held at {target}")
