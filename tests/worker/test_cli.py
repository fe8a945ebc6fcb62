"""``python -m worker`` start-up, as a real process: one ``error:`` line, a deliberate exit status.

Exit 2 means the settings cannot work as given, 1 that the environment is not ready (retrying may
help). Secrets given in any form never reach the worker's output.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError
from rq import Worker

from sentiq.errors import ModelLoadError, RedisAuthenticationError
from sentiq.settings import Settings
from stack.embedded_redis import EmbeddedRedis, free_port
from tests.support.workers import REPO_ROOT, WorkerProcess, worker_env
from worker.assembly import load_model
from worker.cli import (
    EXIT_FAILURE,
    EXIT_USAGE,
    PASSWORD_ON_COMMAND_LINE,
    build_parser,
    describe_failure,
    fail,
    name_in_use,
    settings_from_args,
)
from worker.model import SentimentModel
from worker.worker import until_redis_answers

PASSWORD = "Xq7-not-in-any-log"
TIMEOUT_S = 180


def start_worker(
    settings: Settings, folder: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m worker`` to its end (killed if it outlives :data:`TIMEOUT_S`)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO_ROOT,
        env=worker_env(settings, folder / "ready", **env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The single ``error:`` line a failed start-up ends with; no traceback anywhere."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def evicting_redis() -> Iterator[EmbeddedRedis]:
    """A password-protected redis-server that may evict keys (100 MB, allkeys-lru)."""
    with EmbeddedRedis(password=PASSWORD) as server:
        client = Redis.from_url(server.url)
        client.config_set("maxmemory", "100mb")
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        yield server


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        "127.0.0.1:6379",
    ],
)
def test_an_unusable_redis_url_is_one_line_and_exit_2(settings: Settings, tmp_path: Path, url: str) -> None:
    result = start_worker(settings, tmp_path, "--redis-url", url)
    line = error_line(result, EXIT_USAGE)
    assert "redis" in line.lower()
    assert PASSWORD not in result.stderr + result.stdout


def test_an_unreachable_redis_is_one_line_and_exit_1(settings: Settings, tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    result = start_worker(settings, tmp_path, "--redis-url", url, SENTIQ_WORKER_REDIS_STARTUP_WAIT_S="2")
    assert "cannot reach Redis at redis://:***@127.0.0.1" in error_line(result, EXIT_FAILURE)
    assert "trying again in" in result.stderr, "it waited for Redis before giving up"
    assert PASSWORD not in result.stderr + result.stdout


def test_a_worker_started_before_its_redis_waits_for_it(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    worker = WorkerProcess(settings, tmp_path, "early", SENTIQ_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        time.sleep(2)
        assert worker.process.poll() is None, worker.log
        with EmbeddedRedis(port=port):
            worker.wait_ready(timeout_s=60)
            assert worker.stop() == 0
    finally:
        worker.stop(signal.SIGKILL)


def test_a_running_worker_whose_credentials_redis_starts_refusing_exits_2(
    settings: Settings, tmp_path: Path
) -> None:
    # Redis came back with another password: the worker read its own once, so it stops (exit 2,
    # no retrying for ever while its healthcheck says ready); a restart with the new one helps.
    with EmbeddedRedis(password=PASSWORD) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        worker = WorkerProcess(
            settings, tmp_path, "refused", "--redis-url", url, SENTIQ_REDIS_PASSWORD=PASSWORD
        )
        admin = Redis.from_url(server.url)
        try:
            worker.wait_ready(timeout_s=60)
            admin.config_set("requirepass", "another-" + PASSWORD)
            admin.client_kill_filter(_type="normal", skipme=True)
            code = worker.stop(None, timeout_s=60)
        finally:
            worker.stop(signal.SIGKILL)
            admin.close()
    log = worker.log
    assert code == EXIT_USAGE, log
    assert log.rstrip().splitlines()[-1].startswith("error: Redis refused the credentials"), log
    assert "Traceback" not in log and PASSWORD not in log
    assert not worker.ready_file.exists()


def test_refused_credentials_are_not_waited_for_at_any_step(settings: Settings) -> None:
    attempts: list[int] = []

    def refused() -> None:
        attempts.append(1)
        raise AuthenticationError("invalid username-password pair or user is disabled.")

    with pytest.raises(RedisAuthenticationError, match="refused the credentials"):
        until_redis_answers("register the worker", refused)
    assert len(attempts) == 1
    # A refusal from a step after the first PING that nothing converted still exits 2.
    message, status = describe_failure(AuthenticationError("Authentication required."), settings)
    assert status == EXIT_USAGE and "refused the credentials" in message


def test_invalid_settings_name_the_setting(settings: Settings, tmp_path: Path) -> None:
    result = start_worker(settings, tmp_path, SENTIQ_WORKER_HEARTBEAT_TTL_S="1")
    line = error_line(result, EXIT_USAGE)
    assert line.startswith("error: invalid setting worker.heartbeat_ttl_s (SENTIQ_WORKER_HEARTBEAT_TTL_S):")
    level = error_line(start_worker(settings, tmp_path, "--log-level", "LOUD"), EXIT_USAGE)
    assert "unknown level 'LOUD'" in level


def test_a_missing_model_folder_is_one_line_and_exit_2_before_torch_loads(
    settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    # The worker as `python -m worker` runs it, checking afterwards that torch was never imported.
    command = [
        sys.executable,
        "-c",
        "import runpy, sys\n"
        f"sys.argv = ['worker', '--model', {str(missing)!r}]\n"
        "try:\n    runpy.run_module('worker', run_name='__main__')\n"
        "finally:\n    assert 'torch' not in sys.modules, 'torch imported before the cheap checks'",
    ]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=worker_env(settings, tmp_path / "ready"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert f"model folder {missing} does not exist" in error_line(result, EXIT_USAGE)


def _truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _list_config(folder: Path) -> None:
    (folder / "config.json").write_text("[]")


@pytest.mark.parametrize(
    "breakage", [_truncated_weights, _list_config], ids=["truncated-weights", "config-list"]
)
def test_a_model_folder_that_does_not_load_is_one_line_and_exit_2(
    settings: Settings, tiny_model_dir: Path, tmp_path: Path, breakage: object
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    breakage(broken)  # type: ignore[operator]
    # --max-length: the tiny folder has no metrics.json, which is refused on its own.
    result = start_worker(settings, tmp_path, "--model", str(broken), "--max-length", "64")
    assert error_line(result, EXIT_USAGE).startswith(f"error: cannot load the model: {broken}")
    assert not (tmp_path / "ready").exists()
    # The traceback is there for whoever asks for it.
    debug = start_worker(
        settings, tmp_path, "--model", str(broken), "--max-length", "64", "--log-level", "DEBUG"
    )
    assert debug.returncode == EXIT_USAGE and "Traceback" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("error: cannot load the model:")


def test_a_name_reused_after_kill_9_says_whose_it_is_and_how_long_to_wait(
    settings: Settings, tmp_path: Path, redis_client: Redis
) -> None:
    name = f"cli-{settings.queue.name}"
    first = WorkerProcess(settings, tmp_path, name, "--max-length", "64")
    try:
        first.wait_ready()
    finally:
        first.stop(signal.SIGKILL)
    try:
        started = time.monotonic()
        result = start_worker(settings, tmp_path, "--name", name)
        line = error_line(result, EXIT_FAILURE)
        assert f"worker name {name!r} is taken" in line
        assert f"pid {first.process.pid}" in line and "was last seen" in line
        assert "registration expires in" in line and "another --name" in line
        # Refused before the model was loaded, not after.
        assert "loaded from" not in result.stderr, result.stderr
        assert time.monotonic() - started < 60
    finally:
        redis_client.delete(Worker.redis_worker_namespace_prefix + name)
        redis_client.srem(Worker.redis_workers_keys, Worker.redis_worker_namespace_prefix + name)


def test_name_in_use_follows_rq_registration(redis_client: Redis, settings: Settings) -> None:
    name = f"probe-{settings.queue.name}"
    worker = Worker([settings.queue.name], name=name, connection=redis_client, worker_ttl=100)
    assert name_in_use(redis_client, name) is None
    worker.register_birth()  # type: ignore[no-untyped-call]
    try:
        taken = name_in_use(redis_client, name)
        assert taken is not None and "registration expires in 1" in taken  # 100 s TTL + RQ's 60 s
        worker.register_death()  # type: ignore[no-untyped-call]
        assert name_in_use(redis_client, name) is None
    finally:
        redis_client.delete(worker.key)
        redis_client.srem(Worker.redis_workers_keys, worker.key)


def test_a_redis_that_may_evict_is_refused_or_allowed_with_a_warning(
    settings: Settings, tmp_path: Path, evicting_redis: EmbeddedRedis
) -> None:
    url = f"redis://127.0.0.1:{evicting_redis.port}/0?password={PASSWORD}"
    refused = start_worker(settings, tmp_path, "--redis-url", url)
    line = error_line(refused, EXIT_USAGE)
    assert "SENTIQ_REDIS_ALLOW_EVICTION" in line and "redis://127.0.0.1" in line
    assert PASSWORD_ON_COMMAND_LINE in refused.stderr.splitlines()

    allowed = start_worker(
        settings,
        tmp_path,
        "--redis-url",
        url,
        "--burst",
        "--max-length",
        "64",
        SENTIQ_REDIS_ALLOW_EVICTION="true",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "starting anyway (SENTIQ_REDIS_ALLOW_EVICTION is set)" in allowed.stderr
    assert "max_length 64" in allowed.stderr
    for result in (refused, allowed):
        assert PASSWORD not in result.stderr + result.stdout


def test_a_password_from_the_environment_or_a_file_is_used_and_never_printed(
    settings: Settings, tmp_path: Path, evicting_redis: EmbeddedRedis
) -> None:
    url = f"redis://127.0.0.1:{evicting_redis.port}/0"
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    # Refused for eviction: proof that the password was accepted (PING passed), without loading a model.
    for env in ({"SENTIQ_REDIS_PASSWORD": PASSWORD}, {"SENTIQ_REDIS_PASSWORD_FILE": str(password_file)}):
        result = start_worker(settings, tmp_path, "--redis-url", url, **env)
        assert "SENTIQ_REDIS_ALLOW_EVICTION" in error_line(result, EXIT_USAGE)
        assert PASSWORD_ON_COMMAND_LINE not in result.stderr
        assert PASSWORD not in result.stderr + result.stdout
    # Refused credentials fail at once with exit 2: waiting for this Redis cannot help.
    for refused_env in ({"SENTIQ_REDIS_PASSWORD": "wrong-" + PASSWORD}, {}):
        refused = start_worker(settings, tmp_path, "--redis-url", url, **refused_env)
        assert "refused the credentials" in error_line(refused, EXIT_USAGE)
        assert "trying again" not in refused.stderr
        assert PASSWORD not in refused.stderr + refused.stdout


def test_max_length_flag_and_documented_exit_status() -> None:
    parser = build_parser()
    assert settings_from_args(parser.parse_args(["--max-length", "128"])).worker.max_length == 128
    help_text = parser.format_help()
    assert "exit status (the same for python -m worker, producer and training):" in help_text
    for status in (f"  {EXIT_FAILURE}    runtime failure", f"  {EXIT_USAGE}    bad input or configuration"):
        assert status in help_text


def test_any_exception_while_loading_becomes_a_model_load_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Model loading already names most failures itself; this is the net under whatever it misses.
    def fail_to_load(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later")

    monkeypatch.setattr(SentimentModel, "load", fail_to_load)
    with pytest.raises(ModelLoadError) as caught:
        load_model(settings, "cpu", "fp32")
    assert isinstance(caught.value.__cause__, RuntimeError)
    message, status = describe_failure(caught.value, settings)
    assert status == EXIT_USAGE
    assert fail(message, status) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"error: cannot load the model: {settings.model.path}: RuntimeError while loading on cpu (fp32): "
        "CUDA error: out of memory CUDA kernel errors might be reported later\n"
    )
