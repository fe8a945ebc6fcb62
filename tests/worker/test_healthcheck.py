"""The container healthcheck: fresh ready file means ready; it stays light (no torch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sentiq.settings import load_settings
from worker.healthcheck import is_ready

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ready_only_with_a_fresh_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    settings = load_settings(worker={"ready_file": ready, "heartbeat_ttl_s": 30})
    assert is_ready(settings) == (False, f"{ready} does not exist: model not loaded yet, or worker stopped")
    ready.touch()
    assert is_ready(settings)[0]
    stale = time.time() + 3 * 30 + 61
    ok, reason = is_ready(settings, now=stale)
    assert not ok and "worker looks stuck" in reason


def test_unset_ready_file_is_not_ready() -> None:
    assert is_ready(load_settings()) == (False, "SENTIQ_WORKER_READY_FILE is not set")


def test_healthcheck_command_exits_by_readiness_and_never_imports_torch(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    env = {**os.environ, "SENTIQ_WORKER_READY_FILE": str(ready)}
    command = [
        sys.executable,
        "-c",
        "import sys, runpy\n"
        "try:\n    runpy.run_module('worker.healthcheck', run_name='__main__')\n"
        "finally:\n    assert 'torch' not in sys.modules, 'healthcheck imported torch'",
    ]
    missing = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    ready.touch()
    present = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert present.returncode == 0, present.stderr
    assert "ready" in present.stdout


def test_invalid_settings_are_one_line_and_unhealthy(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.touch()
    env = {
        **os.environ,
        "SENTIQ_WORKER_READY_FILE": str(ready),
        "SENTIQ_REDIS_URL": "http://user:Xq7-secret@127.0.0.1:6379/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker.healthcheck"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # Docker reserves healthcheck status 2; any failure is 1.
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: invalid setting redis.url (SENTIQ_REDIS_URL): ")
    assert len(result.stderr.splitlines()) == 1 and "Xq7-secret" not in result.stderr
