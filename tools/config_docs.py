"""The configuration reference, generated from :mod:`sentiq.settings` so that it cannot drift.

``python -m tools.config_docs`` prints a Markdown table of every setting (environment variable,
type, default, description), found by walking the :class:`~sentiq.settings.Settings` model.
``--env-example`` prints ``.env.example`` instead: every setting, commented out at its default,
plus the variables that only the Docker Compose files read (:data:`COMPOSE_VARIABLES`).

``--write`` rewrites ``.env.example`` and the generated blocks of the docs (between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers, see :data:`MANAGED_BLOCKS`);
``--check`` exits 1 when any of them differs from what ``--write`` would write. A doc that is
missing, or lacks its markers, is skipped with a note.

Torch-free: only the settings model is imported.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python
from pydantic_settings import BaseSettings

from sentiq.settings import Settings

ENV_EXAMPLE = Path(".env.example")
WRITE_COMMAND = "python -m tools.config_docs --write"


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the docs show it."""

    env_name: str
    section: str | None
    field: str
    type_hint: str
    #: The default as an environment value would spell it; ``None`` when it has no spelling (unset).
    env_default: str | None
    description: str


@dataclass(frozen=True)
class SectionDoc:
    """One settings section (``redis``, ``worker`` ...) and its fields."""

    name: str | None
    description: str
    settings: tuple[SettingDoc, ...]


@dataclass(frozen=True)
class ComposeVariable:
    """A variable that the compose files read but the sentiq code does not."""

    name: str
    description: str
    #: The value the compose files fall back to; ``None`` for a required variable.
    default: str | None


#: Compose variables that are settings too, with the same meaning: the compose files read the
#: stack's Redis password, and so does every sentiq process (``RedisSettings.password``).
SHARED_WITH_SETTINGS = frozenset({"SENTIQ_REDIS_PASSWORD"})

#: What docker-compose.yml and its overrides read from .env beyond the settings themselves.
#: tests/deploy/test_compose.py checks that this list and the compose files agree.
COMPOSE_VARIABLES: tuple[ComposeVariable, ...] = (
    ComposeVariable(
        "SENTIQ_REDIS_PASSWORD",
        "Required. Password of the stack's Redis; also put into the containers' redis:// URL as is, "
        "so use URL-safe characters (e.g. the output of `openssl rand -hex 24`).",
        None,
    ),
    ComposeVariable(
        "SENTIQ_REDIS_HOST_PORT",
        "Port on 127.0.0.1 where the stack's Redis is published for clients on this host.",
        "6379",
    ),
    ComposeVariable(
        "SENTIQ_IMAGE",
        "Image name; the compose files tag it :cuda (docker-compose.yml) or :cpu (docker-compose.cpu.yml).",
        "sentiq",
    ),
    ComposeVariable(
        "SENTIQ_GPU_COUNT",
        "GPUs reserved by each GPU container (train, every worker replica): a number or `all`.",
        "1",
    ),
    ComposeVariable(
        "COMPOSE_FILE",
        "Compose's own: the files used when no -f is given, ':'-separated; e.g. "
        "docker-compose.yml:docker-compose.cpu.yml on a machine without a GPU.",
        "docker-compose.yml",
    ),
)


# -- Walking the settings model ---------------------------------------------------------------


def _constraint_text(metadata: Sequence[Any]) -> tuple[str, str]:
    """(prefix, suffix) spelling a field's constraints, e.g. ("non-empty", "") or ("", "> 0")."""
    prefix, bounds = "", []
    for item in metadata:
        if isinstance(item, annotated_types.Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            bounds.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            prefix = "non-empty"
    return prefix, ", ".join(bounds)


def _annotation_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(str(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_annotation_text(arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        (item, *_rest) = typing.get_args(annotation) or (Any,)
        return f"JSON list of {_annotation_text(item)}"
    if origin is dict:
        return "JSON object"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def type_hint(field: FieldInfo) -> str:
    """A short human spelling of a field's type and constraints, e.g. ``int > 0, optional``."""
    optional = _is_optional(field.annotation)
    if optional:
        members = [arg for arg in typing.get_args(field.annotation) if arg is not type(None)]
        base = " or ".join(_annotation_text(member) for member in members)
    else:
        base = _annotation_text(field.annotation)
    prefix, bounds = _constraint_text(field.metadata)
    text = " ".join(part for part in (prefix, base, bounds) if part)
    return f"{text}, optional" if optional else text


def env_value(value: Any) -> str | None:
    """``value`` as an environment variable would spell it for pydantic-settings.

    Lists and mappings are JSON (that is how pydantic-settings parses complex fields), booleans
    are ``true``/``false``, ``None`` has no spelling at all.
    """
    if value is None:
        return None
    jsonable = to_jsonable_python(value)
    if isinstance(jsonable, str):
        return jsonable
    return json.dumps(jsonable, separators=(", ", ": "))


def _default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.get_default(call_default_factory=True, validated_data={})
    return None if field.default is PydanticUndefined else field.default


def _setting(prefix: str, section: str | None, name: str, field: FieldInfo) -> SettingDoc:
    return SettingDoc(
        env_name=(prefix + name).upper(),
        section=section,
        field=name,
        type_hint=type_hint(field),
        env_default=env_value(_default_of(field)),
        description=" ".join((field.description or "").split()),
    )


def _docstring_line(cls: type) -> str:
    first = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
    return " ".join(first.replace("``", "`").split())


def walk_settings(settings_class: type[BaseSettings] = Settings) -> list[SectionDoc]:
    """Every setting of ``settings_class``, section by section, with its environment variable.

    A field whose type is a pydantic model is a section: its fields are read from
    ``<prefix><SECTION><delimiter><FIELD>``, upper-case, which is how :class:`Settings` is
    configured (``env_nested_delimiter="_"``, ``env_nested_max_split=1``).
    """
    config = settings_class.model_config
    prefix = str(config.get("env_prefix") or "")
    delimiter = str(config.get("env_nested_delimiter") or "__")
    top_level: list[SettingDoc] = []
    sections: list[SectionDoc] = []
    for name, field in settings_class.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section_prefix = f"{prefix}{name}{delimiter}"
            fields = tuple(
                _setting(section_prefix, name, sub_name, sub_field)
                for sub_name, sub_field in annotation.model_fields.items()
            )
            sections.append(SectionDoc(name, _docstring_line(annotation), fields))
        else:
            top_level.append(_setting(prefix, None, name, field))
    if top_level:
        sections.insert(0, SectionDoc(None, "General.", tuple(top_level)))
    return sections


def all_settings(settings_class: type[BaseSettings] = Settings) -> list[SettingDoc]:
    """Every setting of ``settings_class``, in declaration order."""
    return [setting for section in walk_settings(settings_class) for setting in section.settings]


# -- Rendering ----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`"


def settings_table(settings_class: type[BaseSettings] = Settings) -> str:
    """The Markdown table of every setting."""
    lines = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for setting in all_settings(settings_class):
        if setting.env_default is None:
            default = "*unset*"
        elif setting.env_default == "":
            default = "*empty*"
        else:
            default = _code(setting.env_default)
        lines.append(
            f"| {_code(setting.env_name)} | {_cell(setting.type_hint)} | {default} "
            f"| {_cell(setting.description)} |"
        )
    return "\n".join(lines) + "\n"


def compose_table(variables: Sequence[ComposeVariable] = COMPOSE_VARIABLES) -> str:
    """The Markdown table of the compose-only variables."""
    lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for variable in variables:
        default = "*required*" if variable.default is None else _code(variable.default)
        lines.append(f"| {_code(variable.name)} | {default} | {_cell(variable.description)} |")
    return "\n".join(lines) + "\n"


ENV_EXAMPLE_HEADER = f"""\
# sentiq configuration: copy to .env, set SENTIQ_REDIS_PASSWORD, uncomment what you change.
#
# Generated from sentiq/settings.py by `{WRITE_COMMAND}`: edit the
# settings, not this file (CI fails when the two disagree).
#
# Who reads .env:
# - Docker Compose, for the ${{...}} in docker-compose*.yml, and it passes every line into the
#   sentiq containers. Inside them docker-compose.yml sets SENTIQ_REDIS_URL, SENTIQ_MODEL_PATH,
#   SENTIQ_TRAIN_OUTPUT_DIR and SENTIQ_WORKER_READY_FILE itself, to point inside the stack.
# - sentiq itself (pydantic-settings), from the working directory, for local runs; variables set
#   in the environment win over .env.
# Values are plain text, no quotes needed; lists are JSON, e.g. ["a.csv", "b.csv"]. Avoid `$`
# (both readers expand ${{VAR}}). The same list as a table: README.md; compose: docs/compose.md.
"""


def _comment(text: str, width: int = 100) -> list[str]:
    words, lines, line = text.split(), [], "#"
    for word in words:
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + word
    lines.append(line)
    return lines


def env_example(
    settings_class: type[BaseSettings] = Settings,
    variables: Sequence[ComposeVariable] = COMPOSE_VARIABLES,
) -> str:
    """The text of ``.env.example``: compose variables, then every setting at its default."""
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n"), "", "# ===== Docker Compose ====="]
    for variable in variables:
        lines.append("")
        lines.extend(_comment(variable.description))
        if variable.default is None:
            lines.append(f"{variable.name}=")
        else:
            lines.append(f"# {variable.name}={variable.default}")
    for section in walk_settings(settings_class):
        title = f"{section.name}: {section.description}" if section.name else section.description
        lines.extend(["", f"# ===== {title} ====="])
        for setting in section.settings:
            if setting.env_name in SHARED_WITH_SETTINGS:
                # Already above, uncommented, as the compose variable it also is.
                continue
            lines.append("")
            kind = setting.type_hint + ("; unset by default" if setting.env_default is None else "")
            lines.extend(_comment(f"{setting.description} ({kind})".lstrip()))
            lines.append(f"# {setting.env_name}={setting.env_default or ''}")
    return "\n".join(lines) + "\n"


# -- Managed files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedBlock:
    """A generated block inside a hand-written doc, between ``<!-- NAME:start/end -->`` markers."""

    path: Path
    marker: str
    render: Callable[[], str]

    @property
    def start(self) -> str:
        """The opening marker line."""
        return f"<!-- {self.marker}:start -->"

    @property
    def end(self) -> str:
        """The closing marker line."""
        return f"<!-- {self.marker}:end -->"


MANAGED_BLOCKS: tuple[ManagedBlock, ...] = (
    ManagedBlock(Path("README.md"), "config-table", settings_table),
    ManagedBlock(Path("docs/compose.md"), "compose-vars", compose_table),
)


def replace_block(text: str, block: ManagedBlock) -> str | None:
    """``text`` with the block between the markers regenerated; ``None`` when a marker is missing."""
    start = text.find(block.start)
    end = text.find(block.end, start + len(block.start)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    head = text[: start + len(block.start)]
    return f"{head}\n{block.render()}{text[end:]}"


@dataclass
class Outcome:
    """What a check or write found, file by file."""

    stale: list[str]
    skipped: list[str]
    diffs: list[str]


def _expected_files(root: Path) -> tuple[dict[Path, tuple[str, str]], list[str]]:
    """Each managed file's (current, expected) text, and notes on the blocks that were skipped."""
    files: dict[Path, tuple[str, str]] = {}
    skipped: list[str] = []
    env_path = root / ENV_EXAMPLE
    current_env = env_path.read_text(encoding="utf-8") if env_path.is_file() else ""
    files[ENV_EXAMPLE] = (current_env, env_example())
    for block in MANAGED_BLOCKS:
        path = root / block.path
        if not path.is_file():
            skipped.append(f"{block.path}: not there")
            continue
        current = files[block.path][0] if block.path in files else path.read_text(encoding="utf-8")
        expected = files[block.path][1] if block.path in files else current
        updated = replace_block(expected, block)
        if updated is None:
            skipped.append(f"{block.path}: no {block.start} ... {block.end} markers")
            continue
        files[block.path] = (current, updated)
    return files, skipped


def check(root: Path) -> Outcome:
    """Compare the managed files under ``root`` with what :func:`write` would make of them."""
    files, skipped = _expected_files(root)
    stale, diffs = [], []
    for relative, (current, expected) in files.items():
        if current != expected:
            stale.append(str(relative))
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{relative} (committed)",
                tofile=f"{relative} (generated)",
            )
            diffs.append("".join(diff))
    return Outcome(stale=stale, skipped=skipped, diffs=diffs)


def write(root: Path) -> Outcome:
    """Rewrite every managed file under ``root`` that differs; returns what was rewritten."""
    files, skipped = _expected_files(root)
    written = []
    for relative, (current, expected) in files.items():
        if current != expected:
            (root / relative).write_text(expected, encoding="utf-8")
            written.append(str(relative))
    return Outcome(stale=written, skipped=skipped, diffs=[])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the table (default) or .env.example, or check or write the files."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.config_docs", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--env-example", action="store_true", help="print .env.example")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if .env.example or a doc's generated block is stale"
    )
    mode.add_argument("--write", action="store_true", help="rewrite .env.example and the docs' blocks")
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root (default: the current directory)"
    )
    args = parser.parse_args(argv)
    if args.env_example:
        sys.stdout.write(env_example())
        return 0
    if not (args.check or args.write):
        sys.stdout.write(settings_table())
        return 0
    outcome = check(args.root) if args.check else write(args.root)
    for note in outcome.skipped:
        print(f"skipped {note}", file=sys.stderr)
    if args.write:
        for path in outcome.stale:
            print(f"wrote {path}")
        return 0
    if outcome.stale:
        for diff in outcome.diffs:
            sys.stderr.write(diff if len(diff) < 4000 else diff[:4000] + "\n... (diff cut)\n")
        print(f"stale: {', '.join(outcome.stale)}; run `{WRITE_COMMAND}`", file=sys.stderr)
        return 1
    print("configuration docs are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
