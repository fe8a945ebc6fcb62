"""Command line of ``python -m training`` (also installed as ``sentiq-train``): ``train``, ``evaluate``,
``explain``, ``distill`` and ``search``.

Heavy libraries (torch, transformers, datasets) are imported only once a command runs, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sentiq.errors import (
    EXIT_INTERRUPTED,
    EXIT_STATUS_SUMMARY,
    EXIT_USAGE,
    ConfigurationError,
    SentiqError,
    exit_code_for,
)
from sentiq.settings import (
    DEFAULT_BASE_MODEL,
    PRECISIONS,
    TrainSettings,
    describe_validation_error,
    load_settings,
)
from sentiq.text import TRUNCATION_MODES
from training.output_folder import ExistingModel, should_train
from training.presets import PRESETS, apply_preset
from training.report import read_metrics
from training.search import (
    DEFAULT_SEARCH_DIR,
    GRID_FIELDS,
    SEARCH_JSON,
    SEARCH_MD,
    TEST_DATA_REFUSED,
    command_line,
    markdown_table,
    plan_search,
    ranked,
    run_search,
)

log = logging.getLogger("training")

_DEFAULTS = TrainSettings()
_TRAIN_FLAGS = (
    "data",
    "test_data",
    "base_model",
    "output_dir",
    "epochs",
    "learning_rate",
    "batch_size",
    "max_length",
    "truncation",
    "validation_fraction",
    "max_train_samples",
    "max_eval_samples",
    "seed",
    "precision",
)

#: The train settings every trial of a search shares (the grid's, the output folder and test data aside).
_SEARCH_FLAGS = tuple(name for name in _TRAIN_FLAGS if name not in ("test_data", "output_dir", *GRID_FIELDS))

_DISTILL_FLAGS = (
    "data",
    "test_data",
    "output_dir",
    "epochs",
    "learning_rate",
    "batch_size",
    "max_length",
    "truncation",
    "max_train_samples",
    "seed",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training`` parser: ``train``, ``evaluate``, ``explain``, ``distill`` and ``search``."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune sentiq's sentiment model, score model folders and explain predictions.",
        epilog=(
            "examples:\n"
            "  python -m training train --base-model bundled --preset quick   # ~3.5 min on 2 CPU cores\n"
            "  python -m training train --data imdb_train.csv.gz --test-data imdb_test.csv.gz\n"
            "  python -m training evaluate --model models/sentiment --data reviews.csv --json\n"
            '  python -m training explain --model models/sentiment "A moving film." --html e.html\n'
            "  python -m training search --base-model bundled --learning-rate 1e-4 2e-4 --epochs 1 2\n\n"
            "Every train option can also be set in the environment (SENTIQ_TRAIN_EPOCHS=1, ...) or .env;\n"
            "flags win over the environment.\n\n"
            + EXIT_STATUS_SUMMARY
            + "\n2: a bad option or setting, a data file that is missing, empty or malformed, a base\n"
            "model that cannot be found (offline: --base-model bundled), a model folder that does not\n"
            "load, an existing model without --force or --if-missing."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,explain,distill,search}"
    )
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_explain_parser(commands)
    add_distill_parser(commands)
    add_search_parser(commands)
    return parser


def add_train_parser(commands: Any) -> None:
    """Options of ``train``: each defaults to the environment's ``SENTIQ_TRAIN_*`` value."""
    train = commands.add_parser(
        "train",
        help="fine-tune a base model on labelled reviews and write a model folder",
        description=(
            "Fine-tune a base model for positive/negative classification and write a model folder "
            "(weights, tokenizer, metrics.json, training_curves.png, README.md) that workers serve."
        ),
        epilog=(
            "Data files are CSV, JSONL or Parquet (.gz allowed) with columns review,sentiment "
            "(positive/negative) or sentence,label (1/0). Without --data, the shipped sample of 3,000 "
            "IMDB training reviews is used. A Hugging Face dataset name (e.g. imdb, or imdb:test) works "
            "where the hub is reachable."
        ),
    )
    add_training_options(train)
    existing = train.add_mutually_exclusive_group()
    existing.add_argument(
        "--force", action="store_true", help="retrain and replace a model already in --output-dir"
    )
    existing.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing (exit 0) when --output-dir already holds a model",
    )


def add_training_options(parser: argparse.ArgumentParser, *, grid: bool = False) -> None:
    """The options ``train`` and ``search`` share; each defaults to the environment's ``SENTIQ_TRAIN_*``.

    With ``grid`` (``search``): learning rate, epochs, truncation and max length take one or more
    values, a trial per combination; ``--output-dir`` is the search's folder; ``--test-data`` is
    hidden and refused, as a search never reads a test set.
    """
    many: dict[str, Any] = {"nargs": "+"} if grid else {}
    each = "; several: a trial per value" if grid else ""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="training file, folder of files or hub dataset; repeatable (default: the shipped IMDB sample)",
    )
    data.add_argument(
        "--test-data",
        metavar="PATH",
        help=argparse.SUPPRESS if grid else "labelled file scored once after training",
    )
    data.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help=f"share of the data held out for per-epoch validation (default {_DEFAULTS.validation_fraction})",
    )
    data.add_argument(
        "--max-train-samples",
        type=int,
        metavar="N",
        help="use at most N training reviews (seeded random choice)",
    )
    data.add_argument("--max-eval-samples", type=int, metavar="N", help="use at most N validation reviews")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--base-model",
        metavar="ID|PATH|bundled",
        help=f"hub id, local model folder, or 'bundled' (offline MiniLM) (default {DEFAULT_BASE_MODEL})",
    )
    if grid:
        model.add_argument(
            "--output-dir",
            type=Path,
            default=DEFAULT_SEARCH_DIR,
            metavar="DIR",
            help=f"a model folder per trial, {SEARCH_JSON} and {SEARCH_MD} (default {DEFAULT_SEARCH_DIR})",
        )
    else:
        model.add_argument(
            "--output-dir",
            type=Path,
            metavar="DIR",
            help=f"model folder to write (default {_DEFAULTS.output_dir})",
        )
    model.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help=f"tokens per review (default {_DEFAULTS.max_length}){each}",
        **many,
    )
    model.add_argument(
        "--truncation",
        choices=TRUNCATION_MODES,
        help="head: a long review's first tokens; head_tail: its first quarter and last three quarters"
        + each,
        **many,
    )
    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--epochs", type=float, metavar="N", help=f"(default {_DEFAULTS.epochs:g}){each}", **many
    )
    fit.add_argument(
        "--learning-rate",
        type=float,
        metavar="LR",
        help=f"(default {_DEFAULTS.learning_rate:g}){each}",
        **many,
    )
    fit.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"train and eval batch size (default {_DEFAULTS.batch_size})",
    )
    fit.add_argument(
        "--seed",
        type=int,
        help=f"seed of the split, sampling, head initialisation and shuffling (default {_DEFAULTS.seed})",
    )
    fit.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 (else fp16) on a CUDA GPU, fp32 on CPU; bf16 on CPU uses autocast "
        f"(default {_DEFAULTS.precision})",
    )
    fit.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="quick: 2,700 reviews, 128 tokens, 1 epoch (~3.5 min on 2 CPU cores); full: 18,000 reviews, "
        "300 tokens, 1 epoch (about an hour; give --data); flags given override it",
    )


def add_search_parser(commands: Any) -> None:
    """Options of ``search``: ``train``'s, with several values for the grid's four."""
    search = commands.add_parser(
        "search",
        help="train once per combination of learning rates, epochs, truncations and max lengths; "
        "rank the trials by validation accuracy",
        description=(
            "A grid search: one train run (a trial) per combination of the --learning-rate, --epochs, "
            "--truncation and --max-length values given, each into its own model folder under "
            "--output-dir (e.g. lr1e-4-e1-head_tail), without the int8 copy train builds. The other "
            "options are shared by all trials, resolved as train's (environment < --preset < flags). "
            "Trials are ranked by the validation accuracy of their best epoch, on the split held out "
            "from the training data: a search never reads a test set (no --test-data; "
            "SENTIQ_TRAIN_TEST_DATA is ignored)."
        ),
        epilog=(
            "example (6 trials):\n"
            "  python -m training search --base-model bundled --data train.csv.gz \\\n"
            "      --max-train-samples 2000 --max-length 128 --learning-rate 5e-5 1e-4 2e-4 \\\n"
            "      --epochs 1 2 --truncation head_tail   # --output-dir runs/search\n\n"
            "After each trial a progress line is printed; search.json and search.md (the trials ranked, "
            "best first, with the command line and the shared settings) are rewritten in --output-dir, "
            "and the table is printed at the end. A failing trial is recorded and the search goes on; "
            "the exit status is non-zero only when every trial failed. Run again, a search keeps the "
            "trials already trained with the same settings (--force retrains them). Score the chosen "
            "folder once on a test set with: python -m training evaluate --model DIR --data TEST"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_options(search, grid=True)
    search.add_argument(
        "--force",
        action="store_true",
        help="retrain trials whose folder already holds a model (default: keep and report them)",
    )


def add_evaluate_parser(commands: Any) -> None:
    """Options of ``evaluate``."""
    evaluate = commands.add_parser(
        "evaluate",
        help="score a model folder on a labelled file",
        description=(
            "Score a model folder on labelled data (IMDB style review,sentiment or SST-2 style "
            "sentence,label): accuracy, precision/recall/F1 of the positive class, confusion counts. "
            "The model is loaded and run by the worker's own code (its max_length and truncation "
            "from metrics.json, its batching and precision), so the accuracy is what a worker serves."
        ),
    )
    add_model_argument(evaluate)
    evaluate.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="labelled file, folder of files or hub dataset (test split)",
    )
    evaluate.add_argument(
        "--max-samples", type=int, metavar="N", help="score a seeded random subset of N reviews"
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"reviews per forward pass (default {_DEFAULTS.batch_size})",
    )
    evaluate.add_argument(
        "--seed", type=int, help=f"seed of the --max-samples subset (default {_DEFAULTS.seed})"
    )
    evaluate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the weights' precision, as a worker's --precision: auto (default) picks what a worker "
        "on this machine serves (bf16 on GPUs and on CPUs with native bf16, else fp32); the result "
        "reports it as weights_precision",
    )
    evaluate.add_argument(
        "--max-length",
        type=int,
        default=0,
        metavar="N",
        help="override the folder's recorded max length (needed for folders without metrics.json)",
    )
    evaluate.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON object on stdout (progress goes to stderr)",
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``: the model folder a command reads."""
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model folder (default: SENTIQ_MODEL_PATH or models/sentiment)",
    )


def add_explain_parser(commands: Any) -> None:
    """Options of ``explain``."""
    from training.explain import BASELINES, DEFAULT_STEPS

    explain = commands.add_parser(
        "explain",
        help="show which words pushed a model's prediction for a text",
        description=(
            "Predict one text and attribute the prediction to its words with integrated gradients "
            "(Captum, over the word embeddings). Prints the top words with signed attributions "
            "(log-odds of the predicted label: + pushed towards it, - away from it), the label and "
            "score, and the convergence delta; optionally writes the highlighted text as HTML and a "
            "bar chart as PNG. The text is prepared as the worker prepares it (the folder's "
            "metrics.json max_length and truncation)."
        ),
    )
    explain.add_argument("text", help="the text to explain; - reads it from standard input")
    add_model_argument(explain)
    explain.add_argument("--top", type=int, default=10, metavar="N", help="words to print (default 10)")
    explain.add_argument("--html", type=Path, metavar="FILE", help="write the highlighted text here")
    explain.add_argument("--png", type=Path, metavar="FILE", help="write a bar chart of the top words here")
    explain.add_argument(
        "--json", action="store_true", help="print exactly one JSON object on stdout instead"
    )
    explain.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"integration steps (default {DEFAULT_STEPS}); more steps, smaller convergence delta",
    )
    explain.add_argument(
        "--baseline",
        choices=BASELINES,
        default="pad",
        help="token that replaces the text in the baseline input (default pad)",
    )
    explain.add_argument(
        "--max-length",
        type=int,
        default=0,
        metavar="N",
        help="override the folder's recorded max length (needed for folders without metrics.json)",
    )


def add_distill_parser(commands: Any) -> None:
    """Options of ``distill``: data, length and training options default to the teacher's ``metrics.json``."""
    distill = commands.add_parser(
        "distill",
        help="distil a fine-tuned model folder into a smaller student model folder",
        description=(
            "Distil a fine-tuned teacher model folder into a smaller student and write it as a model "
            "folder that workers serve. Loss: alpha x KL(teacher || student) at temperature T (times T^2) "
            "+ (1 - alpha) x cross-entropy with the labels [+ W x hidden-state MSE]. Data, split, max "
            "length, truncation, epochs, learning rate, batch size and seed default to the teacher's "
            "metrics.json, else to train's defaults."
        ),
    )
    models = distill.add_argument_group("teacher and student")
    models.add_argument("--teacher", type=Path, required=True, metavar="DIR", help="fine-tuned model folder")
    models.add_argument(
        "--student",
        choices=("layers", "tinybert"),
        required=True,
        help="layers: the teacher with --student-layers of its layers (spread evenly, first and last kept); "
        "tinybert: a TinyBERT-shaped BERT on the teacher's vocabulary (embeddings projected from its)",
    )
    models.add_argument(
        "--output-dir", type=Path, required=True, metavar="DIR", help="student model folder to write"
    )
    models.add_argument("--student-layers", type=int, default=4, metavar="N", help="(default 4)")
    models.add_argument(
        "--student-hidden", type=int, default=312, metavar="N", help="tinybert only (default 312)"
    )
    models.add_argument(
        "--student-heads", type=int, default=12, metavar="N", help="tinybert only (default 12)"
    )
    models.add_argument(
        "--student-intermediate", type=int, default=1200, metavar="N", help="tinybert only (default 1200)"
    )
    data = distill.add_argument_group("data (default: the teacher's)")
    data.add_argument(
        "--data", action="append", metavar="PATH", help="training file, folder or hub dataset; repeatable"
    )
    data.add_argument("--test-data", metavar="PATH", help="labelled file scored once after distillation")
    data.add_argument("--max-train-samples", type=int, metavar="N", help="use at most N training reviews")
    data.add_argument("--max-length", type=int, metavar="N", help="tokens per review")
    data.add_argument("--truncation", choices=TRUNCATION_MODES)
    loss = distill.add_argument_group("training and loss")
    loss.add_argument("--epochs", type=float, metavar="N")
    loss.add_argument("--learning-rate", type=float, metavar="LR")
    loss.add_argument("--batch-size", type=int, metavar="N")
    loss.add_argument("--temperature", type=float, default=2.0, metavar="T", help="(default 2)")
    loss.add_argument(
        "--alpha", type=float, default=0.5, metavar="A", help="weight of the soft targets, 0-1 (default 0.5)"
    )
    loss.add_argument(
        "--hidden-loss-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of the hidden-state MSE on mapped layers; above 0 the teacher runs on every batch "
        "(default 0)",
    )
    loss.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="as train's; default bf16 autocast on CPUs with native bf16, else auto",
    )
    loss.add_argument("--seed", type=int)
    distill.add_argument("--force", action="store_true", help="replace a model already in --output-dir")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m training``; returns the exit status (see :data:`sentiq.errors.EXIT_STATUS_SUMMARY`)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "explain":
            return run_explain(args)
        if args.command == "distill":
            return run_distill(args)
        if args.command == "search":
            return run_search_command(args, arguments)
        return run_evaluate(args)
    except SentiqError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except ValidationError as error:
        print(f"error: {describe_validation_error(error, as_flags=True)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_train(args: argparse.Namespace) -> int:
    """``train``: build the settings once (environment < preset < flags) and train."""
    flags = {name: getattr(args, name) for name in _TRAIN_FLAGS}
    settings = load_settings(train=apply_preset(args.preset, flags))
    if args.force:
        existing = ExistingModel.FORCE
    elif args.if_missing:
        existing = ExistingModel.IF_MISSING
    else:
        existing = ExistingModel.REFUSE
    folder = settings.train.output_dir
    # Checked before torch and transformers load, so --if-missing on an existing model answers at once.
    if not should_train(folder, existing):
        model_id = (read_metrics(folder) or {}).get("model_id", "no metrics.json")
        print(f"model already exists at {folder} ({model_id}); not training")
        return 0
    from training.fit import train

    outcome = train(settings.train, existing=existing, precision=settings.train.precision, preset=args.preset)
    metrics = outcome.metrics or {}
    parts = [f"model {metrics['model_id']} written to {outcome.output_dir}"]
    for split in ("validation", "test"):
        if metrics.get(split):
            parts.append(f"{split} accuracy {metrics[split]['accuracy']:.4f}")
    parts.append(f"{metrics['wall_time_s'] / 60:.1f} min")
    print("; ".join(parts))
    return 0


def run_search_command(args: argparse.Namespace, arguments: Sequence[str]) -> int:
    """``search``: plan every trial (all checks before the first trains), run them, print the table.

    Exits non-zero only when every trial failed: with the status of the first trial's error.
    """
    if args.test_data is not None:
        raise ConfigurationError(TEST_DATA_REFUSED)
    plan = plan_search(
        flags={name: getattr(args, name) for name in _SEARCH_FLAGS},
        grid={name: getattr(args, name) for name in GRID_FIELDS},
        preset=args.preset,
        output_dir=args.output_dir,
        force=args.force,
        command=command_line(arguments),
    )
    results = run_search(plan)
    print(markdown_table(results))
    failed = [result for result in results if result.status == "failed"]
    if len(failed) == len(results):
        print(f"error: all {len(results)} trials failed; the first: {failed[0].error}", file=sys.stderr)
        return failed[0].exit_status
    best = ranked(results)[0]
    print(
        f"best: {best.trial.name} (validation accuracy {best.validation.get('accuracy', float('nan')):.4f}) "
        f"in {best.trial.folder}; {len(failed)} of {len(results)} trials failed; "
        f"{SEARCH_JSON} and {SEARCH_MD} written to {plan.output_dir}"
    )
    return 0


def run_distill(args: argparse.Namespace) -> int:
    """``distill``: resolve the settings against the teacher, then distil and print a summary."""
    from sentiq.model_folder import check_config

    check_config(args.teacher)  # one clear line for a missing teacher, before torch loads
    from training.distill import DistillOptions, StudentShape, default_precision, distill, teacher_settings

    options = DistillOptions(
        teacher=args.teacher,
        student=args.student,
        shape=StudentShape(
            layers=args.student_layers,
            hidden=args.student_hidden,
            heads=args.student_heads,
            intermediate=args.student_intermediate,
        ),
        temperature=args.temperature,
        alpha=args.alpha,
        hidden_loss_weight=args.hidden_loss_weight,
    )
    options.check()
    flags = {name: getattr(args, name) for name in _DISTILL_FLAGS}
    flags["precision"] = args.precision or default_precision()
    settings = teacher_settings(args.teacher, flags)
    outcome = distill(settings, options, existing=ExistingModel.FORCE if args.force else ExistingModel.REFUSE)
    metrics = outcome.metrics
    info = metrics["distillation"]
    parts = [
        f"student {metrics['model_id']} written to {outcome.output_dir}",
        f"{metrics['architecture']['parameters']:,} parameters "
        f"({info['parameter_ratio']:.0%} of the teacher's)",
    ]
    for split in ("validation", "test"):
        if metrics.get(split):
            parts.append(f"{split} accuracy {metrics[split]['accuracy']:.4f}")
    parts.append(f"agreement with the teacher {info['validation_agreement']:.4f}")
    parts.append(f"{metrics['wall_time_s'] / 60:.1f} min")
    print("; ".join(parts))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: score a model folder and print a summary or one JSON object."""
    from training.evaluation import evaluate_model

    settings = load_settings(train={"batch_size": args.batch_size, "seed": args.seed})
    result = evaluate_model(
        args.model or settings.model.path,
        args.data,
        max_samples=args.max_samples,
        batch_size=settings.train.batch_size,
        seed=settings.train.seed,
        precision=args.precision,
        max_length=args.max_length,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(format_result(result))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """``explain``: load the folder as the worker does, explain the text, print and write the pictures."""
    import time

    from training.explain import write_html, write_png
    from worker.attributions import explain
    from worker.model import SentimentModel

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise ConfigurationError("the text to explain is empty")
    if args.top < 1:
        raise ConfigurationError(f"--top must be at least 1, got {args.top}")
    for output in (args.html, args.png):
        if output is not None and not output.parent.is_dir():
            raise ConfigurationError(f"cannot write {output}: no folder {output.parent}")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one answer, no bars
    folder = args.model or load_settings().model.path
    served = SentimentModel.load(folder, max_length=args.max_length)
    started = time.perf_counter()
    explanation = explain(served, text, n_steps=args.steps, baseline=args.baseline)
    seconds = time.perf_counter() - started
    if args.html:
        write_html(explanation, args.html, title=served.info.model_id)
    if args.png:
        write_png(explanation, args.png, top=args.top)
    if args.json:
        result = {
            "model_id": served.info.model_id,
            **explanation.to_dict(args.top),
            "seconds": round(seconds, 3),
        }
        print(json.dumps(result))
        return 0
    top = explanation.top(args.top)
    unseen = sum(word.attribution is None for word in explanation.words)
    lines = [
        f"label      {explanation.label} ({explanation.score:.4f})",
        f"model      {served.info.model_id} (max_length {served.info.max_length}, "
        f"{served.info.truncation} truncation)",
        f"top words  attribution towards {explanation.label!r} in log-odds (+ towards, - away)",
        *(f"  {word.attribution or 0.0:+9.4f}  {word.word}" for word in top),
    ]
    if unseen:
        lines.append(f"unseen     {unseen} words cut by truncation")
    lines.append(
        f"method     integrated gradients, {explanation.n_steps} steps, [{explanation.baseline.upper()}] "
        f"baseline, convergence delta {explanation.convergence_delta:.4f}"
    )
    lines.append(f"time       {seconds:.2f} s")
    lines += [f"wrote      {path}" for path in (args.html, args.png) if path]
    print("\n".join(lines))
    return 0


def format_result(result: dict[str, Any]) -> str:
    """Human-readable lines for an :func:`training.evaluation.evaluate_model` result."""
    r = result
    return "\n".join(
        [
            f"model      {r['model_id']} ({r['model']})",
            f"data       {r['data']}: {r['samples']} reviews",
            f"input      max_length {r['max_length']}, {r['truncation']} truncation",
            f"accuracy   {r['accuracy']:.4f}",
            f"positive   precision {r['precision']:.4f}  recall {r['recall']:.4f}  F1 {r['f1']:.4f}",
            f"confusion  TP {r['true_positives']}  FP {r['false_positives']}  "
            f"TN {r['true_negatives']}  FN {r['false_negatives']}",
            f"speed      {r['reviews_per_second']} reviews/s on {r['device']} "
            f"({r['weights_precision']} weights)",
        ]
    )
