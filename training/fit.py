"""``python -m training train``: fine-tune a base model on labelled reviews and write a model folder.

The configuration follows the reference notebook (3 epochs, learning rate 2e-5, batch size 32,
evaluation and a checkpoint every epoch, the best epoch by validation accuracy kept), with
dynamic padding, length-grouped batches and mixed precision on GPUs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from sentiq.contract import CONTRACT_VERSION
from sentiq.errors import ConfigurationError
from sentiq.model_folder import id2label, label2id
from sentiq.settings import BUNDLED_BASE_MODEL, Precision, TrainSettings
from training.base_model import BaseModelSource, load_base_model, max_positions, resolve_base_model
from training.data import (
    DEFAULT_TRAIN_DATA,
    LoadedData,
    label_counts,
    load_sources,
    split_validation,
    subsample,
)
from training.encoding import encode_dataset, review_encoder
from training.history import LogAtEpochEnd, best_row, epoch_history, loss_log, strip_prefix
from training.output_folder import ExistingModel, derive_model_id, publish, scratch, should_train
from training.precision import Runtime, choose_runtime, git_commit, package_versions
from training.report import (
    base_model_record,
    describe_architecture,
    plot_curves,
    portable_source,
    read_metrics,
    write_metrics,
    write_model_card,
)
from training.scoring import trainer_metrics

log = logging.getLogger(__name__)

#: Training-loss log points per epoch, for the curves and the console.
LOGS_PER_EPOCH = 10


@dataclass(frozen=True)
class TrainOutcome:
    """Where the model is, whether this run trained it, and its ``metrics.json`` content."""

    output_dir: Path
    trained: bool
    metrics: dict[str, Any] | None


@dataclass(frozen=True)
class PreparedData:
    """Normalised splits before tokenization, with where they came from."""

    train: Dataset
    validation: Dataset
    test: Dataset | None
    train_sources: list[str]
    test_source: str | None


def train(
    settings: TrainSettings,
    *,
    existing: ExistingModel = ExistingModel.REFUSE,
    precision: Precision = "auto",
    preset: str | None = None,
    int8_copy: bool = True,
) -> TrainOutcome:
    """Train per ``settings`` into ``settings.output_dir``; see the module docstring.

    Everything that can fail cheaply (output folder, data, base model, max length) is checked
    before training starts. ``int8_copy=False`` leaves out the folder's CPU int8 copy
    (:func:`build_int8_copy`, 20-45 s on 2 CPU cores), for runs whose folders are compared rather
    than served, such as ``search`` trials; workers serve such a folder with torch until
    ``python -m worker.int8 --model DIR`` builds the copy.
    """
    started = time.monotonic()
    folder = settings.output_dir
    if not should_train(folder, existing):
        metrics = read_metrics(folder)
        log.info(
            "%s already holds a model (%s); --if-missing: not training",
            folder,
            (metrics or {}).get("model_id", "no metrics.json"),
        )
        return TrainOutcome(output_dir=folder, trained=False, metrics=metrics)

    data = prepare_data(settings)
    source = resolve_base_model(settings.base_model)
    runtime = choose_runtime(precision)
    log.info("base model: %s; running on %s", source.description, runtime.describe())
    set_seed(settings.seed)  # before the model is built: the new classification head is random
    tokenizer, model = load_base_model(source)
    limit = max_positions(model, tokenizer)
    if settings.max_length > limit:
        raise ConfigurationError(
            f"--max-length {settings.max_length} exceeds the base model's limit of {limit} tokens"
        )
    encoder = review_encoder(tokenizer, settings.max_length, settings.truncation)
    train_set = encode_dataset(encoder, data.train, "Tokenizing training reviews")
    validation_set = encode_dataset(encoder, data.validation, "Tokenizing validation reviews")
    test_set = (
        encode_dataset(encoder, data.test, "Tokenizing test reviews") if data.test is not None else None
    )

    with scratch(folder, "checkpoints") as checkpoints, scratch(folder, "staging") as staging:
        trainer = build_trainer(
            model=model,
            tokenizer=tokenizer,
            train_set=train_set,
            validation_set=validation_set,
            settings=settings,
            runtime=runtime,
            checkpoints=checkpoints,
        )
        summary = trainer.train().metrics
        test_metrics = None
        if test_set is not None:
            log.info("evaluating the best model on %d test reviews from %s", len(test_set), data.test_source)
            test_metrics = strip_prefix(trainer.evaluate(test_set, metric_key_prefix="test"), "test_")
        tokenizer.model_max_length = settings.max_length  # pipeline(..., truncation=True) then cuts alike
        best: Any = trainer.model  # the best epoch's weights (load_best_model_at_end)
        best.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        metrics = build_metrics(
            settings=settings,
            model=best,
            weights_folder=staging,
            source=source,
            runtime=runtime,
            preset=preset,
            data=data,
            log_history=trainer.state.log_history,
            summary=summary,
            test_metrics=test_metrics,
            wall_time_s=time.monotonic() - started,
        )
        write_metrics(staging, metrics)
        plot_curves(staging, metrics)
        write_model_card(staging, metrics)
        publish(staging, folder)
    log.info("model %s written to %s", metrics["model_id"], folder)
    if int8_copy:
        build_int8_copy(folder, data.validation)
    else:
        log.info("int8 copy left out (python -m worker.int8 --model %s builds it)", folder)
    return TrainOutcome(output_dir=folder, trained=True, metrics=metrics)


def build_int8_copy(folder: Path, validation: Dataset) -> None:
    """The folder's CPU int8 copy (:mod:`worker.int8`), checked on the validation reviews.

    Built here, once, so that no worker has to; skipped (with a note) without onnxruntime. A copy
    that fails its check is not kept, and workers serve the model with torch.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info(
            "onnxruntime is not installed: no int8 copy (python -m worker.int8 --model %s builds it)", folder
        )
        return
    from worker.int8 import build_int8

    labels = id2label()
    report = build_int8(
        folder, list(validation["text"]), [labels[int(label)] for label in validation["label"]]
    )
    if report.passed:
        log.info(
            "int8 copy written (agreement %.4f with fp32 labels on %d validation reviews)",
            report.agreement,
            report.reviews,
        )
    else:
        log.warning("int8 copy not kept: %s; workers will serve the model with torch", report.reason)


def prepare_data(settings: TrainSettings) -> PreparedData:
    """Load training (default: the shipped sample) and test data, hold out validation, apply caps."""
    if settings.data:
        loaded = load_sources(settings.data, split="train")
    else:
        log.info("no --data given: training on the shipped IMDB sample %s", DEFAULT_TRAIN_DATA)
        loaded = load_sources([str(DEFAULT_TRAIN_DATA)], split="train")
    test: LoadedData | None = None
    if settings.test_data:
        test = load_sources([settings.test_data], split="test")
    train_part, validation = split_validation(loaded.dataset, settings.validation_fraction, settings.seed)
    train_part = subsample(train_part, settings.max_train_samples, settings.seed)
    validation = subsample(validation, settings.max_eval_samples, settings.seed)
    log.info(
        "data: %d training reviews %s, %d validation reviews%s",
        len(train_part),
        label_counts(train_part),
        len(validation),
        f", {len(test.dataset)} test reviews" if test is not None else "",
    )
    return PreparedData(
        train=train_part,
        validation=validation,
        test=test.dataset if test is not None else None,
        train_sources=loaded.sources,
        test_source=settings.test_data,
    )


def build_trainer(
    *,
    model: Any,
    tokenizer: Any,
    train_set: Dataset,
    validation_set: Dataset,
    settings: TrainSettings,
    runtime: Runtime,
    checkpoints: Path,
) -> Trainer:
    """A ``Trainer`` with the reference notebook's configuration; checkpoints go to ``checkpoints``."""
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size)
    arguments = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        # Weights only: the best epoch is reloaded at the end, nothing resumes from these.
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // LOGS_PER_EPOCH),
        # Batches of similar lengths pad less: most IMDB reviews are shorter than 300 tokens.
        train_sampling_strategy="group_by_length",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=runtime.precision == "bf16",
        fp16=runtime.precision == "fp16",
        use_cpu=runtime.device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if runtime.device == "cuda" else None)
    return Trainer(
        model=model,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=trainer_metrics(),
        callbacks=[LogAtEpochEnd()],
    )


def build_metrics(
    *,
    settings: TrainSettings,
    model: Any,
    weights_folder: Path,
    source: BaseModelSource,
    runtime: Runtime,
    preset: str | None,
    data: PreparedData,
    log_history: list[dict[str, Any]],
    summary: dict[str, Any],
    test_metrics: dict[str, Any] | None,
    wall_time_s: float,
) -> dict[str, Any]:
    """The content of ``metrics.json``; workers read ``model_id``, ``max_length`` and ``truncation``.

    ``model`` is the model as saved in ``weights_folder`` (its weights' hash goes into the model id).
    Data sources and the base model are recorded by name: no path of the training machine.
    """
    finished = datetime.now(timezone.utc)
    history = epoch_history(log_history)
    best = best_row(history)
    validation = {"loss": best["validation_loss"], **best["validation"]} if best else None
    base_model = base_model_record(
        source.spec,
        source.location,
        source.description,
        is_local=source.is_local,
        bundled=source.spec == BUNDLED_BASE_MODEL,
    )
    architecture = describe_architecture(model)
    train_sources = [portable_source(name) for name in data.train_sources]
    model_id = derive_model_id(
        base_names=[base_model["spec"], base_model["hub_id"] or ""],
        architecture=architecture,
        data_names=train_sources,
        weights_folder=weights_folder,
        when=finished,
    )
    return {
        "model_id": model_id,
        "contract_version": CONTRACT_VERSION,
        "created_at": finished.isoformat(timespec="seconds"),
        "max_length": settings.max_length,
        "truncation": settings.truncation,
        "labels": label2id(),
        "base_model": base_model,
        "architecture": architecture,
        "preset": preset,
        "seed": settings.seed,
        "hyperparameters": {
            "epochs": settings.epochs,
            "learning_rate": settings.learning_rate,
            "batch_size": settings.batch_size,
            "validation_fraction": settings.validation_fraction,
            "max_train_samples": settings.max_train_samples,
            "max_eval_samples": settings.max_eval_samples,
            "train_sampling": "group_by_length",
        },
        "data": {
            "train_sources": train_sources,
            "test_source": portable_source(data.test_source) if data.test_source else None,
            "train_size": len(data.train),
            "validation_size": len(data.validation),
            "test_size": len(data.test) if data.test is not None else None,
            "train_label_counts": label_counts(data.train),
        },
        "best_epoch": best["epoch"] if best else None,
        "validation": validation,
        "test": test_metrics,
        "history": history,
        "train_loss_log": loss_log(log_history),
        "train_loss": summary.get("train_loss"),
        "train_runtime_s": summary.get("train_runtime"),
        "train_samples_per_second": summary.get("train_samples_per_second"),
        "wall_time_s": round(wall_time_s, 1),
        "runtime": {"device": runtime.device, "precision": runtime.precision, "threads": runtime.threads},
        "versions": package_versions(),
        **git_commit(),
    }
