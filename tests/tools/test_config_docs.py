"""The generated configuration reference: complete, correct about env names, and committed in sync."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, SecretStr

from sentiq.settings import Settings
from tools.config_docs import (
    COMPOSE_VARIABLES,
    ENV_EXAMPLE,
    SHARED_WITH_SETTINGS,
    ManagedBlock,
    all_settings,
    check,
    env_example,
    main,
    replace_block,
    settings_table,
    write,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def every_field() -> list[tuple[str, str, Any]]:
    """(section, field, FieldInfo) for each field of each Settings section."""
    fields: list[tuple[str, str, Any]] = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        fields.extend((section, name, field) for name, field in model.model_fields.items())
    return fields


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No SENTIQ_* variable and no .env file: Settings() gives the defaults."""
    for name in list(os.environ):
        if name.startswith("SENTIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_committed_env_example_and_docs_are_in_sync() -> None:
    outcome = check(REPO_ROOT)
    assert outcome.stale == [], "".join(outcome.diffs) + "\nrun `python -m tools.config_docs --write`"


def test_every_field_appears_in_the_table_and_the_env_example() -> None:
    table, example = settings_table(), env_example()
    committed = (REPO_ROOT / ENV_EXAMPLE).read_text(encoding="utf-8")
    documented = {setting.env_name for setting in all_settings()}
    for section, name, _field in every_field():
        env_name = f"SENTIQ_{section}_{name}".upper()
        assert env_name in documented
        assert f"| `{env_name}` |" in table
        spelled = f"{env_name}=" if env_name in SHARED_WITH_SETTINGS else f"# {env_name}="
        assert spelled in example
        assert spelled in committed
    assert len(documented) == len(every_field())
    for variable in COMPOSE_VARIABLES:
        assert variable.name in example


def other_value(annotation: Any, default: Any, metadata: list[Any]) -> tuple[str, Any]:
    """An env spelling of a valid non-default value for a field, and the value it must parse to."""
    if typing.get_origin(annotation) is Literal:
        choice = next(value for value in typing.get_args(annotation) if value != default)
        return str(choice), choice
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return other_value(members[0], None, metadata)
    if typing.get_origin(annotation) is list:
        return '["a.csv", "b.csv"]', ["a.csv", "b.csv"]
    if annotation is bool:
        return str(not default).lower(), not default
    if annotation is int:
        value = (default or 0) + 7
        return str(value), value
    if annotation is float:
        value = default / 2 if default else 0.5
        return str(value), value
    if annotation is Path:
        return "/srv/sentiq/x", Path("/srv/sentiq/x")
    if annotation is str and str(default).startswith("redis://"):
        return "rediss://cache.example:6380/2", "rediss://cache.example:6380/2"
    if annotation is str:
        return f"{default or 'x'}-changed", f"{default or 'x'}-changed"
    if annotation is SecretStr:
        return "x-changed", SecretStr("x-changed")
    raise AssertionError(f"add a test value for {annotation!r}")


@pytest.mark.parametrize(
    ("section", "name", "field"), every_field(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_documented_env_name_sets_its_field(
    clean_env: pytest.MonkeyPatch, section: str, name: str, field: Any
) -> None:
    (setting,) = [s for s in all_settings() if (s.section, s.field) == (section, name)]
    default = getattr(getattr(Settings(), section), name)
    text, expected = other_value(field.annotation, default, field.metadata)
    clean_env.setenv(setting.env_name, text)
    assert getattr(getattr(Settings(), section), name) == expected
    # The documented default, set explicitly, parses back to the default.
    if setting.env_default is not None:
        clean_env.setenv(setting.env_name, setting.env_default)
        assert getattr(getattr(Settings(), section), name) == default


def test_compose_only_variables_are_ignored_by_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings().model_dump()
    for variable in COMPOSE_VARIABLES:
        if variable.name not in SHARED_WITH_SETTINGS:
            clean_env.setenv(variable.name, variable.default or "secret")
    assert Settings().model_dump() == defaults


def test_the_stack_password_is_the_redis_password_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SENTIQ_REDIS_PASSWORD", "stack-secret")
    password = Settings().redis.password
    assert password is not None and password.get_secret_value() == "stack-secret"


def test_the_copied_env_example_loads_as_a_dotenv(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = env_example().replace("SENTIQ_REDIS_PASSWORD=\n", "SENTIQ_REDIS_PASSWORD=abc\n")
    text = text.replace("# SENTIQ_WORKER_MAX_BATCH_SIZE=0\n", "SENTIQ_WORKER_MAX_BATCH_SIZE=8\n")
    defaults = Settings().model_dump()
    (tmp_path / ".env").write_text(text, encoding="utf-8")
    loaded = Settings().model_dump()
    assert loaded["worker"].pop("max_batch_size") == 8
    defaults["worker"].pop("max_batch_size")
    assert loaded["redis"].pop("password").get_secret_value() == "abc"
    defaults["redis"].pop("password")
    assert loaded == defaults


def test_table_rows_escape_pipes_and_show_unset_defaults() -> None:
    table = settings_table()
    row = next(line for line in table.splitlines() if "`SENTIQ_WORKER_READY_FILE`" in line)
    assert "| path, optional | *unset* |" in row
    precision = next(line for line in table.splitlines() if "`SENTIQ_WORKER_PRECISION`" in line)
    assert "auto or fp32 or bf16 or fp16" in precision
    assert all(line.count(" | ") == 3 for line in table.splitlines()), "a cell leaks an unescaped pipe"


README_WITH_MARKERS = (
    "# Title\n\nIntro.\n\n<!-- config-table:start -->\nold table\n<!-- config-table:end -->\n\nMore.\n"
)


def test_check_and_write_find_and_fix_drift(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("stale\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(README_WITH_MARKERS, encoding="utf-8")
    outcome = check(tmp_path)
    assert set(outcome.stale) == {".env.example", "README.md"}
    assert "docs/compose.md: not there" in outcome.skipped
    assert main(["--check", "--root", str(tmp_path)]) == 1

    write(tmp_path)
    assert check(tmp_path).stale == []
    assert main(["--check", "--root", str(tmp_path)]) == 0
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# Title\n\nIntro.\n\n<!-- config-table:start -->\n| Variable |")
    assert readme.endswith("<!-- config-table:end -->\n\nMore.\n")
    assert "old table" not in readme
    assert (tmp_path / ".env.example").read_text(encoding="utf-8") == env_example()


def test_a_readme_without_markers_is_skipped_not_rewritten(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text(env_example(), encoding="utf-8")
    (tmp_path / "README.md").write_text("# No markers\n", encoding="utf-8")
    outcome = write(tmp_path)
    assert outcome.stale == []
    assert any(note.startswith("README.md: no <!-- config-table:start -->") for note in outcome.skipped)
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "# No markers\n"
    assert main(["--check", "--root", str(tmp_path)]) == 0


def test_replace_block_needs_both_markers_in_order() -> None:
    block = ManagedBlock(Path("x.md"), "t", lambda: "new\n")
    assert replace_block("a <!-- t:start --> b", block) is None
    assert replace_block("<!-- t:end --> <!-- t:start -->", block) is None
    assert (
        replace_block("<!-- t:start -->\nold\n<!-- t:end -->", block)
        == "<!-- t:start -->\nnew\n<!-- t:end -->"
    )


def test_cli_prints_the_table_and_the_env_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == settings_table()
    assert main(["--env-example"]) == 0
    assert capsys.readouterr().out == env_example()


def test_module_runs_without_importing_torch() -> None:
    code = (
        "import sys, runpy; sys.argv = ['x', '--env-example']\n"
        "try:\n    runpy.run_module('tools.config_docs', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == env_example()
