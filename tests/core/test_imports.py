"""The core (sentiq/) is what both sides share: it never imports a role package, nor torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "sentiq"
#: Packages built on the core; an import of one from the core would run upward.
ROLE_PACKAGES = ("worker", "producer", "training", "stack", "tools", "benchmarks", "tests")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_core_module_imports_a_role_package() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) >= 8
    upward = {
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in modules
        for name in imported_modules(path)
        if name.split(".")[0] in ROLE_PACKAGES
    }
    assert upward == set()


def test_importing_every_core_module_loads_no_role_package_and_no_torch() -> None:
    modules = [
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        for path in sorted(CORE.rglob("*.py"))
        if path.name != "__main__.py"
    ]
    check = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"roles = {ROLE_PACKAGES!r} + ('torch', 'transformers')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roles))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
