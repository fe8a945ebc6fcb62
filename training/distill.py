"""``python -m training distill``: distil a fine-tuned teacher model folder into a smaller student.

The student is an ordinary model folder (the same weights, tokenizer, ``config.json`` labels,
``metrics.json``, curves and card as ``train`` writes), so workers serve it unchanged. Two kinds:

- ``layers``: the teacher with fewer layers (``--student-layers``, default 4). The kept layers are
  spread evenly over the teacher's depth, first and last included (:func:`spread_layers`: 6 -> 4
  keeps 0, 2, 3, 5; 12 -> 4 keeps 0, 4, 7, 11); embeddings, pooler and classification head are the
  teacher's. It starts close to the teacher, so it needs little training.
- ``tinybert``: a BERT of TinyBERT-4L-312D's shape (4 layers, hidden 312, feed-forward 1200, 12
  heads; ``--student-hidden`` etc. change it) on the teacher's tokenizer and vocabulary. Its
  transformer layers and head start random (BERT's initialisation); its word, position and
  token-type embeddings start as the teacher's, projected onto their top principal directions
  (the same projection for all three, since they are summed) when the student is narrower, else
  random. Without TinyBERT's general distillation on a large corpus it learns far less than the
  ``layers`` student from the same reviews.

The loss (Hinton et al., 2015) mixes soft and hard targets: ``alpha`` times the KL divergence
between the temperature-``T`` softmaxes of teacher and student logits, times ``T**2`` (which keeps
its gradients on the scale of the hard loss), plus ``1 - alpha`` times the cross-entropy with the
true labels. ``--hidden-loss-weight W`` adds W times the mean squared error between student layer
``i``'s hidden states and those of teacher layer ``spread_layers(...)[i]`` (padding excluded), through
a learned linear projection when the widths differ (TinyBERT's intermediate loss). Without it the
teacher's logits are computed once, before training, in one batched no-grad pass; with it the
teacher runs on every batch, since its hidden states are too large to keep.

Data, split and length default to the teacher's ``metrics.json`` (its data when it can be found
again, its validation fraction, sample caps, seed, max length and truncation), so the student
learns from the reviews the teacher learnt from and is validated on the reviews the teacher was.
Training is :func:`training.fit.build_trainer`'s Trainer, unchanged: the loss lives in
:class:`DistillationModel`, the module the Trainer trains; validation scores the student alone
with the plain cross-entropy, comparable with ``train``'s validation loss.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812  # torch's own spelling
from datasets import Dataset
from tqdm import tqdm
from transformers import set_seed
from transformers.modeling_outputs import SequenceClassifierOutput

from sentiq.errors import ConfigurationError
from sentiq.model_folder import id2label, label2id
from sentiq.settings import Precision, TrainSettings
from training.base_model import BaseModelSource, max_positions
from training.data import DEFAULT_TRAIN_DATA, builder_for, looks_like_hub_name
from training.encoding import encode_dataset, review_encoder
from training.fit import build_int8_copy, build_metrics, build_trainer, prepare_data
from training.history import strip_prefix
from training.output_folder import ExistingModel, derive_model_id, publish, scratch, should_train
from training.precision import Runtime, choose_runtime
from training.report import (
    CARD_FILE,
    describe_architecture,
    plot_curves,
    portable_source,
    read_metrics,
    write_metrics,
    write_model_card,
)
from worker.model import SentimentModel

log = logging.getLogger(__name__)

StudentKind = Literal["layers", "tinybert"]
STUDENT_KINDS: tuple[StudentKind, ...] = ("layers", "tinybert")
#: The dataset column holding the teacher's logits, and the :class:`DistillationModel` argument.
TEACHER_LOGITS = "teacher_logits"
#: Prefix of a distilled student's model id: ``distilled-minilm-l4-h384-imdb-20260101-1a2b3c4d``.
MODEL_ID_PREFIX = "distilled-"
#: Autocast dtypes of the mixed precisions (fp32 runs without autocast).
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StudentShape:
    """Depth of either student, and the widths of a ``tinybert`` one (TinyBERT-4L-312D's by default)."""

    layers: int = 4
    hidden: int = 312
    heads: int = 12
    intermediate: int = 1200


@dataclass(frozen=True)
class DistillOptions:
    """What only distillation has: the teacher, the student and the loss."""

    teacher: Path
    student: StudentKind
    shape: StudentShape = StudentShape()
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_loss_weight: float = 0.0

    def check(self) -> None:
        """Raise :class:`ConfigurationError` for values no student can be built or trained with."""
        if self.student not in STUDENT_KINDS:
            raise ConfigurationError(
                f"--student must be one of {', '.join(STUDENT_KINDS)}, got {self.student!r}"
            )
        shape = self.shape
        for name, value in (
            ("--student-layers", shape.layers),
            ("--student-hidden", shape.hidden),
            ("--student-heads", shape.heads),
            ("--student-intermediate", shape.intermediate),
        ):
            if value < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {value}")
        if shape.hidden % shape.heads:
            raise ConfigurationError(
                f"--student-hidden {shape.hidden} is not a multiple of --student-heads {shape.heads}: "
                "each attention head gets hidden/heads dimensions"
            )
        if self.student == "layers" and shape != StudentShape(layers=shape.layers):
            raise ConfigurationError(
                "--student-hidden, --student-heads and --student-intermediate apply to --student tinybert; "
                "a layers student keeps the teacher's widths"
            )
        if self.temperature <= 0:
            raise ConfigurationError(f"--temperature must be above 0, got {self.temperature:g}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigurationError(f"--alpha must be between 0 and 1, got {self.alpha:g}")
        if self.hidden_loss_weight < 0:
            raise ConfigurationError(
                f"--hidden-loss-weight must be 0 or more, got {self.hidden_loss_weight:g}"
            )


@dataclass(frozen=True)
class Student:
    """A freshly built student, how it was initialised, and which teacher layer each of its layers mirrors."""

    model: Any
    initialisation: str
    layer_map: list[tuple[int, int]]


def teacher_settings(teacher: Path, overrides: dict[str, Any]) -> TrainSettings:
    """The run's settings: each flag given (not None), else the teacher's ``metrics.json``, else train's.

    The teacher's data is reused when its recorded name can be found again (the shipped sample, a hub
    dataset); a local file is recorded by name only, so then ``--data`` is needed. No environment
    variables are read: a distillation is described by its flags and its teacher.
    """
    metrics = read_metrics(teacher) or {}
    hyper = metrics.get("hyperparameters") or {}
    recorded: dict[str, Any] = {
        "max_length": metrics.get("max_length"),
        "truncation": metrics.get("truncation"),
        "seed": metrics.get("seed"),
        **{
            key: hyper.get(key)
            for key in (
                "epochs",
                "learning_rate",
                "batch_size",
                "validation_fraction",
                "max_train_samples",
                "max_eval_samples",
            )
        },
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    values = {key: value for key, value in recorded.items() if value is not None} | given
    if not values.get("data"):
        values["data"] = teacher_data(metrics)
    values["base_model"] = str(teacher)
    return TrainSettings(**values)


def teacher_data(metrics: dict[str, Any]) -> list[str]:
    """The teacher's training data as sources to load; :class:`ConfigurationError` if ``--data`` is needed."""
    recorded = [str(name) for name in (metrics.get("data") or {}).get("train_sources") or []]
    if not recorded:
        return [str(DEFAULT_TRAIN_DATA)]
    sources = []
    for name in recorded:
        if name == DEFAULT_TRAIN_DATA.name:
            sources.append(str(DEFAULT_TRAIN_DATA))
        elif looks_like_hub_name(name) and builder_for(Path(name)) is None:
            sources.append(name)
        else:
            raise ConfigurationError(
                f"the teacher was trained on {', '.join(recorded)}, recorded by file name only; "
                "pass the file(s) with --data"
            )
    return sources


def spread_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """``student_layers`` teacher layer indices, evenly from the first to the last (6, 4 -> 0, 2, 3, 5)."""
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(index * step) for index in range(student_layers)]


def layers_student(teacher: Any, layers: int) -> Student:
    """The teacher with ``layers`` of its layers (:func:`spread_layers`), everything else copied."""
    depth = int(teacher.config.num_hidden_layers)
    if layers >= depth:
        raise ConfigurationError(
            f"the teacher has {depth} layers; a layers student keeps fewer (--student-layers {layers})"
        )
    kept = spread_layers(depth, layers)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = layers
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    pattern = re.compile(r"^(.*\.layer\.)(\d+)(\..*)$")
    state: dict[str, torch.Tensor] = {}
    for key, value in teacher.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match[2]) in kept:
            state[f"{match[1]}{kept.index(int(match[2]))}{match[3]}"] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigurationError(
            f"cannot take layers from a {config.model_type} teacher: its weights are not laid out as "
            f"'...layer.N...' ({len(missing)} missing, {len(unexpected)} unexpected); use --student tinybert"
        )
    return Student(
        model=student,
        initialisation=f"the teacher's layers {', '.join(map(str, kept))}, embeddings, pooler and head",
        layer_map=list(enumerate(kept)),
    )


def tinybert_student(teacher: Any, shape: StudentShape) -> Student:
    """A BERT of ``shape`` on the teacher's vocabulary, embeddings projected from the teacher's."""
    from transformers import BertConfig, BertForSequenceClassification

    source = teacher.config
    labels: dict[str, Any] = {"id2label": id2label(), "label2id": label2id()}
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=source.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=source.max_position_embeddings,
        type_vocab_size=getattr(source, "type_vocab_size", 2),
        pad_token_id=getattr(source, "pad_token_id", 0),
        num_labels=2,
        **labels,
    )
    student = BertForSequenceClassification(config)
    initialisation = "random (BERT initialisation)"
    if project_embeddings(teacher, student):
        initialisation += (
            f"; word, position and token-type embeddings: the teacher's, projected onto their top "
            f"{shape.hidden} principal directions"
        )
    depth = int(source.num_hidden_layers)
    return Student(
        model=student,
        initialisation=initialisation,
        layer_map=list(enumerate(spread_layers(depth, min(shape.layers, depth)))),
    )


@torch.no_grad()
def project_embeddings(teacher: Any, student: Any) -> bool:
    """Copy the teacher's embeddings into a narrower student through one PCA basis; False if it cannot.

    Word, position and token-type embeddings are summed before the embedding LayerNorm, so all three
    go through the basis of the word embeddings (their top right singular vectors): the sums are
    projected as a whole.
    """
    source = getattr(getattr(teacher, "base_model", None), "embeddings", None)
    target = student.base_model.embeddings
    width = int(student.config.hidden_size)
    names = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    if source is None or not all(hasattr(source, name) for name in names):
        log.info("the teacher has no BERT-style embeddings: the student's start random")
        return False
    words = source.word_embeddings.weight.float()
    if width > words.shape[1]:
        log.info(
            "the student is wider than the teacher (%d > %d): its embeddings start random",
            width,
            words.shape[1],
        )
        return False
    _, _, basis = torch.linalg.svd(words, full_matrices=False)  # rows of basis: directions, largest first
    projection = basis[:width].T
    for name in names:
        teacher_table = getattr(source, name).weight.float()
        student_table = getattr(target, name).weight
        rows = min(teacher_table.shape[0], student_table.shape[0])
        student_table[:rows] = (teacher_table[:rows] @ projection).to(student_table.dtype)
    return True


def build_student(teacher: Any, options: DistillOptions) -> Student:
    """The student ``options`` asks for, built from the teacher (see the module docstring)."""
    options.check()
    if options.student == "layers":
        return layers_student(teacher, options.shape.layers)
    return tinybert_student(teacher, options.shape)


class DistillationModel(torch.nn.Module):
    """The student with the distillation loss, as the Trainer trains it.

    In training mode the loss is ``alpha * T**2 * KL(teacher_T || student_T) + (1 - alpha) * CE``
    plus the weighted hidden-state loss; in evaluation mode it is the plain cross-entropy of the
    student. Teacher logits come from the batch (``teacher_logits``, computed before training) or,
    when absent or when hidden states are needed, from the teacher run here without gradients.
    The teacher is not a submodule: it is neither trained nor saved in checkpoints.
    """

    def __init__(
        self,
        student: Any,
        teacher: Any,
        options: DistillOptions,
        layer_map: Sequence[tuple[int, int]],
    ) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher,)  # a tuple keeps it out of the module tree and the state dict
        self.temperature = options.temperature
        self.alpha = options.alpha
        self.hidden_loss_weight = options.hidden_loss_weight
        self.layer_map = list(layer_map)
        student_width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
        self.projection: torch.nn.Module = (
            torch.nn.Linear(student_width, teacher_width)
            if self.hidden_loss_weight > 0 and student_width != teacher_width
            else torch.nn.Identity()
        )

    @property
    def teacher(self) -> Any:
        """The frozen teacher model."""
        return self._teacher[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Student logits, and the loss when ``labels`` are given (see the class docstring)."""
        hidden = self.training and self.hidden_loss_weight > 0
        out = self.student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden)
        if labels is None:
            return SequenceClassifierOutput(logits=out.logits)
        hard = F.cross_entropy(out.logits.float(), labels)
        if not self.training:
            return SequenceClassifierOutput(loss=hard, logits=out.logits)
        teacher_out = None
        if teacher_logits is None or hidden:
            with torch.no_grad():
                teacher_out = self.teacher(
                    input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden
                )
            teacher_logits = teacher_out.logits
        assert teacher_logits is not None
        loss = (
            self.alpha * soft_target_loss(out.logits, teacher_logits, self.temperature)
            + (1 - self.alpha) * hard
        )
        if hidden and teacher_out is not None:
            loss = loss + self.hidden_loss_weight * self.hidden_loss(
                out.hidden_states, teacher_out.hidden_states, attention_mask
            )
        return SequenceClassifierOutput(loss=loss, logits=out.logits)

    def hidden_loss(
        self,
        student_states: Sequence[torch.Tensor],
        teacher_states: Sequence[torch.Tensor],
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean squared error between mapped layers' hidden states (0 is the embeddings), padding excluded."""
        first = student_states[0]
        mask = (
            attention_mask.unsqueeze(-1).float()
            if attention_mask is not None
            else torch.ones(*first.shape[:2], 1, device=first.device)
        )
        width = teacher_states[0].shape[-1]
        total = first.new_zeros((), dtype=torch.float32)
        for student_layer, teacher_layer in self.layer_map:
            difference = (
                self.projection(student_states[student_layer + 1]).float()
                - teacher_states[teacher_layer + 1].float()
            )
            total = total + (difference.pow(2) * mask).sum() / (mask.sum() * width)
        return total / max(1, len(self.layer_map))


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    student_log = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    divergence = F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
    return divergence * temperature**2


def compute_logits(
    served: SentimentModel, encoded: Dataset, runtime: Runtime, description: str
) -> list[list[float]]:
    """The model's logits for every row of ``encoded`` (``input_ids``), in one batched no-grad pass.

    Batches are planned as the worker plans them (longest first, padded per batch); bf16 or fp16
    autocast when the run uses it.
    """
    rows = encoded["input_ids"]
    logits: list[list[float]] = [[] for _ in rows]
    autocast = (
        torch.autocast(runtime.device, dtype=_AUTOCAST[runtime.precision])
        if runtime.precision in _AUTOCAST
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast, tqdm(total=len(rows), desc=description, unit="review") as progress:
        for batch_rows in served.plan_batches([len(row) for row in rows]):
            padded = served.tokenizer.pad(
                {"input_ids": [rows[index] for index in batch_rows]}, padding=True, return_tensors="pt"
            )
            batch = {name: tensor.to(served.device) for name, tensor in padded.items()}
            values = served.model(**batch).logits.float().tolist()
            for index, row in zip(batch_rows, values, strict=True):
                logits[index] = row
            progress.update(len(batch_rows))
    return logits


@dataclass(frozen=True)
class DistillOutcome:
    """Where the student is and its ``metrics.json`` content."""

    output_dir: Path
    metrics: dict[str, Any]


def distill(
    settings: TrainSettings,
    options: DistillOptions,
    *,
    existing: ExistingModel = ExistingModel.REFUSE,
) -> DistillOutcome:
    """Distil ``options.teacher`` into a new student written to ``settings.output_dir``.

    ``settings`` is usually :func:`teacher_settings`'s. Everything that can fail cheaply (options,
    output folder, teacher, data, max length, student shape) is checked before training starts.
    """
    started = time.monotonic()
    options.check()
    folder = settings.output_dir
    if folder.resolve() == options.teacher.resolve():
        raise ConfigurationError("--output-dir is the teacher's folder; write the student elsewhere")
    should_train(folder, existing)
    runtime = choose_runtime(settings.precision)
    teacher = SentimentModel.load(options.teacher, device=runtime.device, max_length=settings.max_length)
    teacher_metrics = read_metrics(options.teacher) or {}
    data = prepare_data(settings)
    limit = max_positions(teacher.model, teacher.tokenizer)
    if settings.max_length > limit:
        raise ConfigurationError(
            f"--max-length {settings.max_length} exceeds the teacher's limit of {limit} tokens"
        )
    set_seed(settings.seed)  # before the student is built: its new weights are random
    student = build_student(teacher.model, options)
    log.info(
        "teacher %s (%s parameters) -> %s student (%s parameters); running on %s",
        teacher.info.model_id,
        f"{_parameters(teacher.model):,}",
        options.student,
        f"{_parameters(student.model):,}",
        runtime.describe(),
    )
    encoder = review_encoder(teacher.tokenizer, settings.max_length, settings.truncation)
    train_set = encode_dataset(encoder, data.train, "Tokenizing training reviews")
    validation_set = encode_dataset(encoder, data.validation, "Tokenizing validation reviews")
    test_set = (
        encode_dataset(encoder, data.test, "Tokenizing test reviews") if data.test is not None else None
    )
    online = options.hidden_loss_weight > 0
    if not online:
        logits = compute_logits(teacher, train_set, runtime, "Teacher logits")
        train_set = train_set.add_column(TEACHER_LOGITS, logits)  # type: ignore[arg-type]
    model = DistillationModel(student.model, teacher.model, options, student.layer_map)

    with scratch(folder, "checkpoints") as checkpoints, scratch(folder, "staging") as staging:
        trainer = build_trainer(
            model=model,
            tokenizer=teacher.tokenizer,
            train_set=train_set,
            validation_set=validation_set,
            settings=settings,
            runtime=runtime,
            checkpoints=checkpoints,
        )
        summary = trainer.train().metrics
        test_metrics = None
        if test_set is not None:
            log.info(
                "evaluating the best student on %d test reviews from %s", len(test_set), data.test_source
            )
            test_metrics = strip_prefix(trainer.evaluate(test_set, metric_key_prefix="test"), "test_")
        best: Any = trainer.model  # the best epoch's weights (load_best_model_at_end)
        agreement = validation_agreement(best.student, teacher, validation_set, runtime)
        teacher.tokenizer.model_max_length = settings.max_length  # pipeline(..., truncation=True) cuts alike
        best.student.save_pretrained(staging)
        teacher.tokenizer.save_pretrained(staging)
        metrics = build_metrics(
            settings=settings,
            model=best.student,
            weights_folder=staging,
            source=BaseModelSource(
                spec=str(options.teacher),
                location=str(options.teacher),
                is_local=True,
                description=f"teacher {teacher.info.model_id}",
            ),
            runtime=runtime,
            preset=None,
            data=data,
            log_history=trainer.state.log_history,
            summary=summary,
            test_metrics=test_metrics,
            wall_time_s=time.monotonic() - started,
        )
        # The family comes from the teacher's id (minilm-l6-...), or is TinyBERT's for its shape.
        family = ["tinybert"] if options.student == "tinybert" else [teacher.info.model_id]
        metrics["model_id"] = MODEL_ID_PREFIX + derive_model_id(
            base_names=family,
            architecture=metrics["architecture"],
            data_names=metrics["data"]["train_sources"],
            weights_folder=staging,
            when=datetime.fromisoformat(metrics["created_at"]),
        )
        metrics["distillation"] = {
            "student": options.student,
            "teacher": {
                "model_id": teacher.info.model_id,
                "folder": portable_source(str(options.teacher)),
                "base_model": (teacher_metrics.get("base_model") or {}).get("hub_id"),
                **{
                    key: describe_architecture(teacher.model)[key]
                    for key in ("layers", "hidden_size", "parameters")
                },
                "validation_accuracy": (teacher_metrics.get("validation") or {}).get("accuracy"),
                "test_accuracy": (teacher_metrics.get("test") or {}).get("accuracy"),
            },
            "initialisation": student.initialisation,
            "layer_map": [list(pair) for pair in student.layer_map],
            "temperature": options.temperature,
            "alpha": options.alpha,
            "hidden_loss_weight": options.hidden_loss_weight,
            "teacher_logits": "online, every batch" if online else "computed once before training",
            "parameter_ratio": round(metrics["architecture"]["parameters"] / _parameters(teacher.model), 4),
            "validation_agreement": agreement,
        }
        metrics["wall_time_s"] = round(time.monotonic() - started, 1)
        write_metrics(staging, metrics)
        plot_curves(staging, metrics)
        write_model_card(staging, metrics)
        describe_distillation(staging / CARD_FILE, metrics)
        publish(staging, folder)
    log.info("student %s written to %s", metrics["model_id"], folder)
    build_int8_copy(folder, data.validation)
    return DistillOutcome(output_dir=folder, metrics=metrics)


def validation_agreement(
    student: Any, teacher: SentimentModel, validation_set: Dataset, runtime: Runtime
) -> float:
    """Share of validation reviews on which the trained student and the teacher predict the same label.

    Both run through the same batched pass (not ``Trainer.predict``, whose order need not be the
    dataset's).
    """
    served_student = SentimentModel(
        student.eval(),
        teacher.tokenizer,
        teacher.info,
        device=teacher.device,
        precision="fp32",
        max_batch_size=teacher.max_batch_size,
        max_batch_tokens=teacher.max_batch_tokens,
    )
    predicted = [
        compute_logits(model, validation_set, runtime, f"{name} on validation")
        for name, model in (("Student", served_student), ("Teacher", teacher))
    ]
    labels = [[max(range(len(row)), key=row.__getitem__) for row in logits] for logits in predicted]
    same = sum(int(a == b) for a, b in zip(*labels, strict=True))
    return round(same / max(1, len(labels[0])), 4)


def describe_distillation(card: Path, metrics: dict[str, Any]) -> None:
    """Turn ``train``'s model card into a distilled student's: what it was distilled from, and how."""
    info = metrics["distillation"]
    teacher = info["teacher"]
    text = card.read_text(encoding="utf-8")
    text = text.replace(
        "fine-tuned by `python -m training train` of sentiq",
        f"distilled from the teacher `{teacher['model_id']}` by `python -m training distill` of sentiq",
    )
    text = text.replace("- sentiq\n", "- sentiq\n- distillation\n", 1)  # the front matter's tags
    text = re.sub(
        r"^- Base model: .*$",
        f"- Distilled student ({info['student']}) of `{teacher['model_id']}`; initialisation: "
        f"{info['initialisation']}.",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    teacher_accuracy = ", ".join(
        f"{split} accuracy {teacher[key]:.4f}"
        for split, key in (("validation", "validation_accuracy"), ("test", "test_accuracy"))
        if isinstance(teacher.get(key), int | float)
    )
    section = [
        "## Distillation",
        "",
        f"- Teacher: `{teacher['model_id']}`"
        + (f" (from `{teacher['base_model']}`)" if teacher.get("base_model") else "")
        + f", {teacher['layers']} layers, hidden size {teacher['hidden_size']}, "
        f"{teacher['parameters']:,} parameters" + (f"; {teacher_accuracy}" if teacher_accuracy else "") + ".",
        f"- Student: `{info['student']}`, {metrics['architecture']['layers']} layers, hidden size "
        f"{metrics['architecture']['hidden_size']}, {metrics['architecture']['parameters']:,} parameters "
        f"({info['parameter_ratio']:.0%} of the teacher's).",
        f"- Loss: {info['alpha']:g} x soft targets (KL divergence at temperature {info['temperature']:g}, "
        f"times T^2) + {1 - info['alpha']:g} x cross-entropy with the labels"
        + (
            f" + {info['hidden_loss_weight']:g} x hidden-state MSE (student layer -> teacher layer "
            + ", ".join(f"{s}->{t}" for s, t in info["layer_map"])
            + ")"
            if info["hidden_loss_weight"]
            else ""
        )
        + f"; teacher logits {info['teacher_logits']}.",
        f"- Agreement with the teacher on the validation reviews: {info['validation_agreement']:.4f}.",
        "",
    ]
    text = text.replace("## Usage\n", "\n".join(section) + "\n## Usage\n", 1)
    card.write_text(text, encoding="utf-8")


def _parameters(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def default_precision() -> Precision:
    """bf16 autocast on CPUs with native bf16 (as the quick preset), else ``auto``."""
    from training.presets import bf16_on_fast_cpus

    return bf16_on_fast_cpus()
