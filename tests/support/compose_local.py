"""Running docker-compose.yml's services as local processes, for tests on machines without Docker.

What Docker Compose would do is done here by hand, on a small scale: read an env file, interpolate
``${VAR}`` references the way Compose does, assemble each service's command (entrypoint plus
command) and environment (image ``ENV``, then ``env_file``, then ``environment``), and map what
only exists inside the stack to local equivalents: container paths (``/models``, ``/app`` ...) to
folders, the ``redis`` host name to the test's own port on 127.0.0.1, ``python`` to this
interpreter.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"

_REFERENCE = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    """Raised when a required variable (``${VAR:?message}``) has no value, or a reference is malformed."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a Compose env file; comments, blank lines and quotes handled."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: not KEY=value: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        values[key.strip()] = value
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` ... resolved."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        parts = _BRACED.match(match.group("braced"))
        if parts is None:
            raise InterpolationError(f"malformed reference {match.group(0)!r}")
        name, op, arg = parts.group("name"), parts.group("op"), parts.group("arg") or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env) if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if empty else interpolate(arg, env)
        return value or ""

    return _REFERENCE.sub(resolve, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value in a parsed YAML tree interpolated (keys are left alone, as in Compose)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file, anchors and merge keys resolved, interpolated with ``env``."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(interpolate_tree(raw, env))


def referenced_variables(path: Path) -> set[str]:
    """Names of the variables a compose file interpolates."""
    names: set[str] = set()
    for match in _REFERENCE.finditer(path.read_text(encoding="utf-8")):
        if match.group("plain"):
            names.add(match.group("plain"))
        elif match.group("braced") is not None:
            parts = _BRACED.match(match.group("braced"))
            if parts:
                names.add(parts.group("name"))
    return names


def as_list(value: str | list[str] | None) -> list[str]:
    """A compose command/entrypoint in list form (a string is split the way Compose does)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def as_mapping(value: Mapping[str, Any] | list[str] | None) -> dict[str, str]:
    """A compose ``environment`` (mapping or ``KEY=value`` list) as a dict of strings."""
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {key: "" if item is None else str(item) for key, item in value.items()}


def dockerfile_env() -> dict[str, str]:
    """``ENV`` values of the Dockerfile (all stages), less PATH and VIRTUAL_ENV."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for token in shlex.split(line.strip()[4:]):
                key, _, value = token.partition("=")
                values[key] = value
    return {key: value for key, value in values.items() if key not in ("PATH", "VIRTUAL_ENV")}


@dataclass
class LocalStack:
    """Where the container world lands on this machine."""

    root: Path
    redis_port: int
    #: Container path prefix -> local folder.
    paths: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = {
            "/app": REPO_ROOT,
            "/models": self.root / "volumes" / "models",
            "/cache": self.root / "volumes" / "cache",
            "/data": self.root / "volumes" / "redis-data",
            "/tmp": self.root / "container-tmp",
        } | self.paths
        for local in self.paths.values():
            local.mkdir(parents=True, exist_ok=True)

    def localize(self, value: str) -> str:
        """A container path or a URL naming the ``redis`` service, as seen from this machine."""
        value = re.sub(r"(?<=[@/])redis:6379\b", f"127.0.0.1:{self.redis_port}", value)
        for prefix, local in self.paths.items():
            if value == prefix or value.startswith(prefix + "/"):
                return str(local) + value[len(prefix) :]
        return value

    def argv(self, service: Mapping[str, Any]) -> list[str]:
        """The service's entrypoint plus command, localized; ``python`` is this interpreter."""
        argv = [self.localize(part) for part in as_list(service.get("entrypoint"))]
        argv += [self.localize(part) for part in as_list(service.get("command"))]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        return argv

    def environ(self, service: Mapping[str, Any], env_file_values: Mapping[str, str]) -> dict[str, str]:
        """The process environment: this machine's (minus any SENTIQ_*), then what the container gets.

        Image ``ENV`` and the service's ``environment`` describe the container and are localized;
        ``env_file_values`` stand for the user's .env and are taken as they are.
        """
        environ = {key: value for key, value in os.environ.items() if not key.startswith("SENTIQ_")}
        environ["PYTHONPATH"] = str(REPO_ROOT)
        environ |= {key: self.localize(value) for key, value in dockerfile_env().items()}
        if service.get("env_file"):
            environ |= env_file_values
        environ |= {
            key: self.localize(value) for key, value in as_mapping(service.get("environment")).items()
        }
        if "SENTIQ_WORKER_METRICS_PORT" in environ:
            # In a container the port is the container's own; on this machine any free one will do.
            environ["SENTIQ_WORKER_METRICS_PORT"] = "0"
            environ["SENTIQ_WORKER_METRICS_HOST"] = "127.0.0.1"
        return environ


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code. A no-op for a process that has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=timeout_s)


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for assertion messages."""
    if not path.is_file():
        return f"({path} missing)"
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[-chars:]


def duration_s(text: str) -> float:
    """A Compose duration (``90s``, ``1m30s``, ``5m``, ``1h``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)
