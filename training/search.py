"""``python -m training search``: a grid search over learning rate, epochs, truncation and max length.

Each combination of the values given is one trial: one run of :func:`training.fit.train` (the
same code as ``python -m training train``) into its own model folder under ``--output-dir``,
named after its values (``lr1e-4-e1-head_tail``; ``-len128`` is added when several max lengths
are searched). The other train options (base model, data, sample caps, batch size, seed,
precision, ``--preset``) are shared by all trials and resolved as ``train`` resolves them:
environment (``SENTIQ_TRAIN_*``, ``.env``) < preset < flags. A grid option that is not given
takes that single shared value.

Trials are compared on the validation split held out from the training data (accuracy of each
trial's best epoch, then F1, then loss). A search never reads a test set: ``--test-data`` is
refused and ``SENTIQ_TRAIN_TEST_DATA`` ignored, so the test set stays unseen until the chosen
model is scored once with ``python -m training evaluate --model DIR --data TEST``.

Run it, e.g. (six trials of 2,000 reviews, 128 tokens)::

    python -m training search --base-model bundled --data ../shared/data/imdb/train.csv.gz \\
        --max-train-samples 2000 --max-length 128 --learning-rate 5e-5 1e-4 2e-4 --epochs 1 2 \\
        --truncation head head_tail --output-dir runs/search

After each trial one progress line is printed (trial i/n, its values, validation accuracy, wall
seconds); ``search.json`` (every trial: values, validation accuracy/F1/loss of its best epoch,
wall seconds, model id, folder, or its error) and ``search.md`` (the trials as a Markdown table,
best first, with the command line and the shared settings) are rewritten in ``--output-dir``
after each trial, and the table is printed at the end. A trial that raises is recorded with its
error and the search goes on; the exit status is non-zero only when every trial failed.

Trials skip the CPU int8 copy that ``train`` builds (``train(..., int8_copy=False)``): it serves
workers, not the comparison, and costs 20-45 s a trial; ``python -m worker.int8 --model DIR``
builds it for the folder chosen. A search that is run again keeps every trial whose folder
already holds a finished model (``metrics.json``) trained with the same values, and reports it
from its ``metrics.json``; ``--force`` retrains them. A folder holding a model trained with other
values (learning rate, epochs, batch size, max length, truncation, seed, sample caps, validation
fraction, base model) stops the search before anything trains. The training data's name is not
compared: after changing ``--data``, pass ``--force`` or use another ``--output-dir``.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from sentiq.errors import ConfigurationError, SentiqError, exit_code_for, one_line
from sentiq.model_folder import has_model
from sentiq.settings import TrainSettings, load_settings
from training.output_folder import ExistingModel, should_train
from training.presets import apply_preset
from training.report import portable_source, read_metrics

log = logging.getLogger(__name__)

#: The train settings a search varies: each takes one or more values, and every combination is a trial.
GRID_FIELDS = ("learning_rate", "epochs", "truncation", "max_length")
SEARCH_JSON = "search.json"
SEARCH_MD = "search.md"
DEFAULT_SEARCH_DIR = Path("runs/search")
#: Why ``--test-data`` is refused.
TEST_DATA_REFUSED = (
    "a search tunes on the validation split only and never reads a test set: --test-data is not "
    "accepted (score the chosen trial's folder once afterwards: python -m training evaluate "
    "--model DIR --data TEST)"
)
#: The train settings recorded in ``metrics.json`` that a kept trial's model must match.
_RECORDED = (
    "learning_rate",
    "epochs",
    "batch_size",
    "validation_fraction",
    "max_train_samples",
    "max_eval_samples",
    "max_length",
    "truncation",
    "seed",
    "base_model",
)

Status = Literal["trained", "kept", "failed"]


@dataclass(frozen=True)
class Trial:
    """One combination of grid values: its number (from 1), folder name and full train settings."""

    number: int
    name: str
    settings: TrainSettings
    #: Its folder already holds a finished model trained with these settings, kept without ``--force``.
    keep: bool = False

    @property
    def folder(self) -> Path:
        """The trial's model folder."""
        return self.settings.output_dir

    @property
    def values(self) -> dict[str, Any]:
        """The trial's grid values, by train setting name."""
        return {name: getattr(self.settings, name) for name in GRID_FIELDS}


@dataclass(frozen=True)
class SearchPlan:
    """Every trial of a search, checked before the first one trains."""

    output_dir: Path
    trials: list[Trial]
    #: The settings all trials share (their grid values aside); never a test set.
    shared: TrainSettings
    grid: dict[str, tuple[Any, ...]]
    preset: str | None
    force: bool
    #: The command line that started the search, for ``search.md``.
    command: str


@dataclass(frozen=True)
class TrialResult:
    """What one trial gave: its best epoch's validation numbers, or the error that stopped it."""

    trial: Trial
    status: Status
    wall_s: float
    metrics: dict[str, Any] | None = None
    error: str | None = None
    #: For a failed trial: the exit status its error stands for (:func:`sentiq.errors.exit_code_for`).
    exit_status: int = 0

    @property
    def validation(self) -> dict[str, Any]:
        """The best epoch's validation metrics (``accuracy``, ``f1``, ``loss``, ...); empty if none."""
        return dict((self.metrics or {}).get("validation") or {})

    def record(self) -> dict[str, Any]:
        """The trial's entry in ``search.json``."""
        validation = self.validation
        metrics = self.metrics or {}
        return {
            "trial": self.trial.number,
            "name": self.trial.name,
            "folder": str(self.trial.folder),
            "status": self.status,
            "hyperparameters": self.trial.values,
            "best_epoch": metrics.get("best_epoch"),
            "validation": (
                {key: validation.get(key) for key in ("accuracy", "f1", "loss")} if validation else None
            ),
            "wall_s": self.wall_s,
            "model_id": metrics.get("model_id"),
            "precision": (metrics.get("runtime") or {}).get("precision"),
            "error": self.error,
        }


def plan_search(
    *,
    flags: dict[str, Any],
    grid: dict[str, Sequence[Any] | None],
    preset: str | None,
    output_dir: Path,
    force: bool = False,
    command: str = "",
) -> SearchPlan:
    """The trials of a search: the shared settings (environment < preset < ``flags``) with each
    combination of ``grid`` values, one folder each under ``output_dir``.

    ``flags`` are train setting overrides (``None``: not given) other than the grid's, the output
    folder and the test data; ``grid`` maps each of :data:`GRID_FIELDS` to its values (``None``:
    the shared value). Raises :class:`ConfigurationError` (or pydantic's ``ValidationError`` for a
    value out of range) before anything trains, also for a trial folder that holds something else.
    """
    for name in ("test_data", "output_dir", *GRID_FIELDS):
        if flags.get(name) is not None:
            raise ConfigurationError(f"{name} is not a shared setting of a search")
    overrides = apply_preset(preset, flags)
    shared = load_settings(train=overrides).train
    if shared.test_data:
        log.info("SENTIQ_TRAIN_TEST_DATA is ignored: a search reads no test set")
    shared = shared.model_copy(update={"test_data": None, "output_dir": output_dir})
    values = {name: _grid_values(name, grid.get(name), getattr(shared, name)) for name in GRID_FIELDS}
    _check_output_dir(output_dir)
    with_length = len(values["max_length"]) > 1
    trials: list[Trial] = []
    names: dict[str, dict[str, Any]] = {}
    for number, combination in enumerate(itertools.product(*values.values()), start=1):
        chosen = dict(zip(GRID_FIELDS, combination, strict=True))
        name = trial_name(chosen, with_length=with_length)
        if name in names:
            raise ConfigurationError(
                f"{_describe(names[name])} and {_describe(chosen)} both name trial {name}"
            )
        names[name] = chosen
        # load_settings validates each value as train's flags are (a bad one names its flag).
        settings = load_settings(train={**overrides, **chosen, "output_dir": output_dir / name}).train
        settings = settings.model_copy(update={"test_data": None})
        trials.append(Trial(number=number, name=name, settings=settings, keep=_keep(settings, force=force)))
    return SearchPlan(
        output_dir=output_dir,
        trials=trials,
        shared=shared,
        grid=values,
        preset=preset,
        force=force,
        command=command,
    )


def _grid_values(name: str, given: Sequence[Any] | None, shared: Any) -> tuple[Any, ...]:
    values = tuple(given) if given else (shared,)
    repeated = sorted({_show(name, value) for value in values if values.count(value) > 1})
    if repeated:
        raise ConfigurationError(f"{_flag(name)} lists {', '.join(repeated)} more than once")
    return values


def _check_output_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--output-dir {folder} is a file, not a folder")
    if has_model(folder):
        raise ConfigurationError(
            f"--output-dir {folder} holds a model; a search writes a folder per trial into it: choose another"
        )


def _keep(settings: TrainSettings, *, force: bool) -> bool:
    """Whether a trial's folder holds a finished model with its settings, kept without ``--force``.

    Raises for a folder that holds something else, so that the search stops before training.
    """
    folder = settings.output_dir
    if force or not has_model(folder):
        # Refuses a non-empty folder that holds no model (never replaced, even with --force).
        should_train(folder, ExistingModel.FORCE)
        return False
    metrics = read_metrics(folder)
    if metrics is None:
        raise ConfigurationError(
            f"{folder} holds a model without metrics.json (not a finished trial); "
            "pass --force to retrain it or choose another --output-dir"
        )
    differences = [
        f"{name} {recorded!r} (this search: {wanted!r})"
        for name, recorded, wanted in _recorded_settings(metrics, settings)
        if recorded != wanted
    ]
    if differences:
        raise ConfigurationError(
            f"{folder} holds a model trained with other settings: {'; '.join(differences)}; "
            "pass --force to retrain it or choose another --output-dir"
        )
    return True


def _recorded_settings(metrics: dict[str, Any], settings: TrainSettings) -> list[tuple[str, Any, Any]]:
    """``(setting, as metrics.json records it, as the search wants it)`` for each of :data:`_RECORDED`."""
    hyperparameters = metrics.get("hyperparameters") or {}
    recorded = {
        **{name: metrics.get(name) for name in ("max_length", "truncation", "seed")},
        "base_model": (metrics.get("base_model") or {}).get("spec"),
    }
    wanted = {name: getattr(settings, name) for name in _RECORDED}
    wanted["base_model"] = portable_source(settings.base_model)  # as metrics.json records it
    return [(name, recorded.get(name, hyperparameters.get(name)), wanted[name]) for name in _RECORDED]


def trial_name(values: dict[str, Any], *, with_length: bool = False) -> str:
    """A trial's folder name: ``lr1e-4-e1-head_tail``, with ``-len128`` when ``with_length``."""
    name = f"lr{format_rate(values['learning_rate'])}-e{values['epochs']:g}-{values['truncation']}"
    return f"{name}-len{values['max_length']}" if with_length else name


def format_rate(value: float) -> str:
    """A learning rate as written on a command line: ``1e-4``, ``5e-5``, ``2.5e-5``."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def run_search(plan: SearchPlan, *, echo: Callable[[str], None] = print) -> list[TrialResult]:
    """Run the plan's trials in order with :func:`training.fit.train`, one progress line each through
    ``echo``.

    ``search.json`` and ``search.md`` are rewritten after every trial, so an interrupted search
    leaves the record of its finished trials.
    """
    from training.fit import train  # torch and transformers load only once a search runs

    plan.output_dir.mkdir(parents=True, exist_ok=True)
    log.info("search: %d trials into %s", len(plan.trials), plan.output_dir)
    results: list[TrialResult] = []
    for trial in plan.trials:
        result = run_trial(trial, train, force=plan.force, preset=plan.preset)
        results.append(result)
        echo(progress_line(result, len(plan.trials)))
        write_reports(plan, results)
    return results


def run_trial(trial: Trial, train: Callable[..., Any], *, force: bool, preset: str | None) -> TrialResult:
    """Train one trial (or report its kept model); an exception becomes a failed result."""
    if trial.keep:
        metrics = read_metrics(trial.folder) or {}
        return TrialResult(trial, "kept", wall_s=float(metrics.get("wall_time_s") or 0.0), metrics=metrics)
    log.info("trial %d: %s", trial.number, _describe(trial.values))
    started = time.monotonic()
    try:
        outcome = train(
            trial.settings,
            existing=ExistingModel.FORCE if force else ExistingModel.REFUSE,
            precision=trial.settings.precision,
            preset=preset,
            int8_copy=False,
        )
    except Exception as error:  # any failure ends this trial only; the next one may well work
        # A traceback only for the unexpected: sentiq's own errors say all in one line.
        log.warning(
            "trial %d (%s) failed: %s",
            trial.number,
            trial.name,
            one_line(error),
            exc_info=not isinstance(error, SentiqError),
        )
        return TrialResult(
            trial,
            "failed",
            wall_s=round(time.monotonic() - started, 1),
            error=one_line(error),
            exit_status=exit_code_for(error),
        )
    finally:
        # A failed trial's traceback holds its model; free it before the next one is built.
        gc.collect()
    return TrialResult(trial, "trained", wall_s=round(time.monotonic() - started, 1), metrics=outcome.metrics)


def progress_line(result: TrialResult, total: int) -> str:
    """``trial 2/6 lr 1e-4, epochs 1, truncation head, max length 128: validation accuracy ... in 95.2 s``."""
    head = f"trial {result.trial.number}/{total} {_describe(result.trial.values)}"
    if result.status == "failed":
        return f"{head}: FAILED after {result.wall_s:.1f} s: {result.error}"
    validation = result.validation
    numbers = (
        f"validation accuracy {validation['accuracy']:.4f} (F1 {validation['f1']:.4f}, "
        f"loss {validation['loss']:.4f})"
        if validation
        else "no validation result"
    )
    if result.status == "kept":
        return f"{head}: {numbers}; already trained in {result.trial.folder}, kept (--force retrains)"
    return f"{head}: {numbers} in {result.wall_s:.1f} s"


def ranked(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Best first: validation accuracy, then F1, then lower loss; trials without a result last."""

    def key(result: TrialResult) -> tuple[int, float, float, float, int]:
        validation = result.validation
        if result.status == "failed" or not validation:
            return (1, 0.0, 0.0, 0.0, result.trial.number)
        return (0, -validation["accuracy"], -validation["f1"], validation["loss"], result.trial.number)

    return sorted(results, key=key)


def markdown_table(results: Sequence[TrialResult]) -> str:
    """The trials as a Markdown table, ranked by :func:`ranked`."""
    lines = [
        "| rank | trial | learning rate | epochs | truncation | max length | val accuracy | val F1 "
        "| val loss | best epoch | wall s | model id |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rank, result in enumerate(ranked(results), start=1):
        values, validation = result.trial.values, result.validation
        if result.status == "failed":
            numbers = ["failed", "", "", ""]
            model = (result.error or "").replace("|", "\\|")
        else:
            numbers = [
                *(f"{validation[key]:.4f}" if validation else "" for key in ("accuracy", "f1", "loss")),
                _show("epochs", (result.metrics or {}).get("best_epoch")),
            ]
            model = f"`{(result.metrics or {}).get('model_id')}`" + (
                " (kept)" if result.status == "kept" else ""
            )
        cells = [
            str(rank),
            result.trial.name,
            format_rate(values["learning_rate"]),
            f"{values['epochs']:g}",
            values["truncation"],
            str(values["max_length"]),
            *numbers,
            f"{result.wall_s:.1f}",
            model,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shared_settings(plan: SearchPlan) -> dict[str, Any]:
    """The settings every trial shares, as ``search.json`` records them (no test set, no grid values)."""
    shared = plan.shared.model_dump(mode="json", exclude={"test_data", "output_dir", *GRID_FIELDS})
    return {**shared, "preset": plan.preset}


def write_reports(plan: SearchPlan, results: Sequence[TrialResult]) -> None:
    """Write ``search.json`` and ``search.md`` into the plan's output folder."""
    best = next((result for result in ranked(results) if result.validation), None)
    summary = {
        "command": plan.command,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "selection": "validation split held out from the training data; no test set was read",
        "grid": {name: list(values) for name, values in plan.grid.items()},
        "shared": shared_settings(plan),
        "trials_planned": len(plan.trials),
        "best": best.trial.name if best else None,
        "trials": [result.record() for result in results],
    }
    (plan.output_dir / SEARCH_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (plan.output_dir / SEARCH_MD).write_text(markdown_report(plan, results), encoding="utf-8")


def markdown_report(plan: SearchPlan, results: Sequence[TrialResult]) -> str:
    """``search.md``: what was searched, how, and the ranked table."""
    done = len(results)
    failed = sum(result.status == "failed" for result in results)
    shared = shared_settings(plan)
    if not shared["data"]:
        shared["data"] = "the shipped IMDB sample"
    lines = [
        "# Hyperparameter search",
        "",
        f"{done} of {len(plan.trials)} trials run" + (f", {failed} failed" if failed else "") + ". "
        "Ranked by the validation accuracy of each trial's best epoch (then F1, then loss), best first. "
        "Tuned on the validation split held out from the training data only: no test set was read. "
        "Score the chosen folder once on a test set with "
        "`python -m training evaluate --model <folder> --data <test file>`.",
        "",
        "```",
        plan.command,
        "```",
        "",
        "Shared by all trials:",
        "",
        *(f"- {name.replace('_', ' ')}: `{_setting(value)}`" for name, value in shared.items()),
        "",
        markdown_table(results),
        "",
    ]
    return "\n".join(lines)


def command_line(argv: Sequence[str]) -> str:
    """The command line ``search.md`` shows for these ``python -m training`` arguments."""
    return shlex.join(["python", "-m", "training", *argv])


def _describe(values: dict[str, Any]) -> str:
    return (
        f"lr {format_rate(values['learning_rate'])}, epochs {values['epochs']:g}, "
        f"truncation {values['truncation']}, max length {values['max_length']}"
    )


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "not set" if value is None else str(value)


def _show(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name == "learning_rate":
        return format_rate(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
