"""``python -m sentiq.demo`` end to end, as a real process: Redis choice, summary, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from stack.embedded_redis import EmbeddedRedis
from stack.namespace import delete_namespace
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_env(tiny_model_dir: Path, redis_client: Redis) -> Iterator[dict[str, str]]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SENTIQ_")}
    env.update(
        SENTIQ_MODEL_PATH=str(tiny_model_dir), SENTIQ_QUEUE_NAME=namespace, SENTIQ_QUEUE_KEY_PREFIX=namespace
    )
    yield env
    delete_namespace(redis_client, f"{namespace}-demo")


def started_pids(stderr: str) -> list[int]:
    """The pids the demo says it started (its Redis and its workers)."""
    pids = [int(pid) for pid in re.findall(r"redis-server on \S+ \(pid (\d+)\)", stderr)]
    for group in re.findall(r"workers ready \(pids ([\d, ]+)\)", stderr):
        pids += [int(pid) for pid in group.split(", ")]
    return pids


def assert_all_stopped(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        time.sleep(0.1)
    assert not alive, f"still running: {alive}"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stack.demo ARGS`` to its end, with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "stack.demo", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_runs_to_its_summary_on_a_private_redis(demo_env: dict[str, str]) -> None:
    result = run_demo(demo_env, "--count", "40")
    assert result.returncode == 0, result.stderr
    assert "started a private redis-server" in result.stderr
    assert "reviews:     40 (0 error(s))" in result.stdout
    assert re.search(r"accuracy:\s+\d+\.\d%", result.stdout)
    assert re.search(r"latency:\s+p50 [\d,]+ ms, p95 [\d,]+ ms", result.stdout)
    pids = started_pids(result.stderr)
    assert len(pids) == 3
    assert_all_stopped(pids)


def test_demo_uses_a_reachable_configured_redis(demo_env: dict[str, str], redis_url: str) -> None:
    result = run_demo({**demo_env, "SENTIQ_REDIS_URL": redis_url}, "--count", "10", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "using Redis at" in result.stderr
    assert "private redis-server" not in result.stderr


def test_demo_refuses_a_configured_redis_that_refuses_its_password(demo_env: dict[str, str]) -> None:
    with EmbeddedRedis(password="demo-s3cret") as server:
        wrong = server.url.replace("demo-s3cret", "wrong-s3cret")
        result = run_demo({**demo_env, "SENTIQ_REDIS_URL": wrong}, "--count", "10", "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert "refused the credentials" in result.stderr
    assert "private redis-server" not in result.stderr and "s3cret" not in result.stderr


def test_ctrl_c_stops_everything_the_demo_started(demo_env: dict[str, str], tmp_path: Path) -> None:
    stderr_path = tmp_path / "demo.err"
    with stderr_path.open("w") as stderr:
        # A session of its own, like a terminal's foreground job: Ctrl-C goes to the whole group.
        demo = subprocess.Popen(
            [sys.executable, "-m", "stack.demo", "--count", "500"],
            cwd=REPO_ROOT,
            # One review per job and per pass keeps the stream going long enough to interrupt it.
            env={**demo_env, "SENTIQ_PRODUCER_REVIEWS_PER_JOB": "1", "SENTIQ_WORKER_MAX_BATCH_SIZE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while "streaming" not in stderr_path.read_text():
                assert demo.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "demo never started streaming"
                time.sleep(0.05)
            os.killpg(demo.pid, signal.SIGINT)
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    log = stderr_path.read_text()
    assert code == 130, log
    assert "interrupted; everything the demo started is stopped" in log
    assert_all_stopped(started_pids(log))
