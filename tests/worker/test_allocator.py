"""worker.allocator: freed memory kept for reuse, seen in the page faults of real processes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest
import torch
from redis import Redis

import worker.assembly
from sentiq.settings import Settings
from tests.conftest import REPO_ROOT
from worker.allocator import keep_freed_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)

# Frees and re-allocates a 48 MiB block twenty times, as a forward pass does its activations.
_LOOP = """
import json, resource, sys
import numpy as np
from worker.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
np.ones(48 << 17)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = np.ones(48 << 17)
    del block
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _loop(side: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", _LOOP, side],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@glibc_only
def test_a_block_freed_and_allocated_again_is_not_faulted_in_again() -> None:
    default, kept = _loop("default"), _loop("keep")
    assert kept["applied"] is True and default["applied"] is False
    # glibc's default maps and unmaps a block this large every time; kept, it is reused.
    assert kept["faults"] * 5 < default["faults"], (default, kept)


@glibc_only
def test_glibc_variables_set_by_the_user_win() -> None:
    result = _loop("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert result["applied"] is False
    assert _loop("keep", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")["applied"] is False
    # Tunables this module does not set leave it free to set its own.
    assert _loop("keep", GLIBC_TUNABLES="glibc.malloc.arena_max=2")["applied"] is True
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) is False
    assert keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "0"}) is False


@pytest.mark.parametrize("keep", [True, False])
def test_the_worker_keeps_freed_memory_unless_its_setting_says_not(
    settings: Settings, redis_client: Redis, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    calls: list[bool] = []

    def record() -> bool:
        calls.append(True)
        return True

    monkeypatch.setattr(worker.assembly, "keep_freed_memory", record)
    # torch allows this once per process; this test builds two classifiers.
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda threads: None)
    configured = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"keep_freed_memory": keep, "device": "cpu"})}
    )
    worker.assembly.build_classifier(configured, redis_client)
    assert calls == ([True] if keep else [])
