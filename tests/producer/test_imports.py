"""The producer side stays light: importing it never pulls in torch, transformers or the worker."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

CHECK = """
import importlib, pkgutil, sys
import producer, sentiq
names = []
for package in (producer, sentiq):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name != "producer.__main__":
            importlib.import_module(module.name)
            names.append(module.name)
assert "producer.cli" in names and "sentiq.result_store" in names, names
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {"torch", "transformers", "worker"})
assert not heavy, heavy[:10]
print(len(names))
"""


def test_producer_and_sentiq_never_import_torch_or_transformers() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10
