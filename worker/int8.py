"""The CPU int8 engine: an ONNX Runtime copy of a model folder's classifier, quantized to int8.

Built once per model folder (``python -m worker.int8 --model DIR``, 20-45 s for MiniLM-L6 here),
never on a worker's start: the classifier is exported to ONNX, ONNX Runtime's BERT fusions are
applied, its weights are quantized to int8 per channel (dynamic quantization), and the result is
kept only if it answers like the original on labelled reviews: at least :data:`MIN_AGREEMENT` of
the fp32 labels, and accuracy within
:data:`MAX_ACCURACY_DROP`. The check is written next to it (``onnx/int8.json``), with the model
id it was built from, so a worker never serves an int8 copy of other weights.

A worker uses it with ``SENTIQ_WORKER_ENGINE=onnx-int8``, or with ``auto`` when the CPU pass
measured at start-up is faster with it than with torch. Tokenization, truncation, batching and
labels stay the worker's own; only the forward pass runs in ONNX Runtime. Torch remains the
reference path (explanations, GPUs, folders without an int8 copy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sentiq.errors import ConfigurationError, DataError, ModelLoadError, one_line

log = logging.getLogger(__name__)

#: Where the int8 copy and its check live inside a model folder.
INT8_DIR = "onnx"
INT8_MODEL = "model-int8.onnx"
INT8_REPORT = "int8.json"
#: The int8 copy must give the fp32 model's label on at least this share of the check reviews...
MIN_AGREEMENT = 0.985
#: ...and lose at most this much accuracy on them (0.3 points).
MAX_ACCURACY_DROP = 0.003
#: Reviews the check runs on by default: the shipped IMDB test sample (labelled, never trained on).
DEFAULT_CHECK_DATA = Path(__file__).resolve().parent.parent / "sentiq" / "data" / "imdb_test_sample.csv.gz"


@dataclass(frozen=True)
class Int8Report:
    """How the int8 copy answered next to the fp32 model on the check reviews."""

    model_id: str
    reviews: int
    agreement: float
    accuracy_fp32: float | None
    accuracy_int8: float | None
    passed: bool
    build_seconds: float
    onnxruntime: str

    @property
    def reason(self) -> str:
        """Why the copy was refused (empty when it passed)."""
        return check_problems(self.agreement, self.accuracy_fp32, self.accuracy_int8)


def check_problems(agreement: float, accuracy_fp32: float | None, accuracy_int8: float | None) -> str:
    """What keeps an int8 copy from being kept ("" when nothing does): the two bounds above."""
    problems = []
    if agreement < MIN_AGREEMENT:
        problems.append(f"agreement {agreement:.4f} < {MIN_AGREEMENT}")
    if (
        accuracy_fp32 is not None
        and accuracy_int8 is not None
        and accuracy_fp32 - accuracy_int8 > MAX_ACCURACY_DROP
    ):
        problems.append(f"accuracy {accuracy_int8:.4f} vs {accuracy_fp32:.4f} in fp32")
    return "; ".join(problems)


class OnnxClassifier:
    """The int8 classifier in an ONNX Runtime session: ``logits(input_ids, attention_mask)``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.version = str(onnxruntime.__version__)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's logits, as a float32 tensor, for one padded pass."""
        (output,) = self.session.run(
            ["logits"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )
        return torch.from_numpy(output)


def read_report(folder: Path) -> Int8Report | None:
    """The folder's int8 check, or None when there is none (or it cannot be read)."""
    path = Path(folder) / INT8_DIR / INT8_REPORT
    try:
        return Int8Report(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def load_int8(folder: Path, model_id: str) -> OnnxClassifier:
    """The folder's int8 copy; :class:`ModelLoadError` when it is missing, failed its check or is stale."""
    report = read_report(folder)
    path = Path(folder) / INT8_DIR / INT8_MODEL
    if report is None or not path.is_file():
        raise ModelLoadError(
            f"{folder}: no int8 copy of the model; build it with `python -m worker.int8 --model {folder}`"
        )
    if report.model_id != model_id:
        raise ModelLoadError(
            f"{folder}: the int8 copy was built from model {report.model_id}, not {model_id}; rebuild it "
            f"with `python -m worker.int8 --model {folder}`"
        )
    if not report.passed:
        raise ModelLoadError(f"{folder}: the int8 copy failed its check ({report.reason})")
    try:
        return OnnxClassifier(path)
    except ImportError as error:
        raise ModelLoadError(
            "the onnx-int8 engine needs onnxruntime: pip install 'sentiq[worker]'"
        ) from error


def has_usable_int8(folder: Path, model_id: str) -> bool:
    """Whether ``auto`` may consider the int8 engine for this folder."""
    report = read_report(folder)
    return (
        report is not None
        and report.passed
        and report.model_id == model_id
        and (Path(folder) / INT8_DIR / INT8_MODEL).is_file()
    )


def build_int8(folder: Path, texts: Sequence[str], labels: Sequence[str] | None = None) -> Int8Report:
    """Export, quantize and check the folder's classifier; the copy is kept only if it passes.

    The report is written either way, so a refused copy says why. Raises
    :class:`ConfigurationError` when onnx / onnxruntime are missing.
    """
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise ConfigurationError(
            "building the int8 copy needs onnx and onnxruntime: pip install 'sentiq[worker]'"
        ) from error
    from worker.model import SentimentModel

    started = time.perf_counter()
    served = SentimentModel.load(folder, precision="fp32")
    _progress(f"exporting {served.info.model_id} to ONNX and quantizing it to int8 ...")
    target = Path(folder) / INT8_DIR
    root_level = logging.getLogger().level
    with tempfile.TemporaryDirectory(prefix="sentiq-int8-") as scratch:
        exported, quantized = Path(scratch) / "model.onnx", Path(scratch) / INT8_MODEL
        _export(served, exported)
        graph = _fused(served, exported)
        logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer advises pre-processing on root
        try:
            quantize_dynamic(
                str(graph),
                str(quantized),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # The fused attention nodes come from another operator domain, without inferred types.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            logging.getLogger().setLevel(root_level)
        _progress(f"checking it against the fp32 model on {len(texts)} reviews ...")
        reference, _ = served.predict(texts)
        served.int8 = OnnxClassifier(quantized)
        candidate, _ = served.predict(texts)
        agreement = sum(a[0] == b[0] for a, b in zip(reference, candidate, strict=True)) / len(texts)
        accuracy_fp32 = accuracy_int8 = None
        if labels is not None:
            accuracy_fp32 = sum(p[0] == y for p, y in zip(reference, labels, strict=True)) / len(labels)
            accuracy_int8 = sum(p[0] == y for p, y in zip(candidate, labels, strict=True)) / len(labels)
        agreement = round(agreement, 6)
        accuracy_fp32 = None if accuracy_fp32 is None else round(accuracy_fp32, 6)
        accuracy_int8 = None if accuracy_int8 is None else round(accuracy_int8, 6)
        report = Int8Report(
            model_id=served.info.model_id,
            reviews=len(texts),
            agreement=agreement,
            accuracy_fp32=accuracy_fp32,
            accuracy_int8=accuracy_int8,
            passed=not check_problems(agreement, accuracy_fp32, accuracy_int8),
            build_seconds=round(time.perf_counter() - started, 2),
            onnxruntime=str(onnxruntime.__version__),
        )
        target.mkdir(exist_ok=True)
        (target / INT8_MODEL).unlink(missing_ok=True)
        if report.passed:
            shutil.move(str(quantized), target / INT8_MODEL)
        (target / INT8_REPORT).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fused(served: Any, exported: Path) -> Path:
    """The exported graph with ONNX Runtime's BERT fusions (attention, layer norm, GELU), if they apply.

    Quantizing the fused graph only touches the matrix products: on the quick model, 98.6% label
    agreement and accuracy 0.864 vs 0.862 in fp32 on the 500 shipped IMDB reviews, against 98.4% /
    0.862 for the plain graph (per-tensor scales: 97.2-97.4%, -0.4 to -0.6 points).
    """
    config = served.model.config
    if getattr(config, "model_type", None) != "bert":
        return exported
    from onnxruntime.transformers.optimizer import optimize_model

    fused = exported.with_name("model-fused.onnx")
    try:
        optimize_model(
            str(exported),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        ).save_model_to_file(str(fused))
    except Exception as error:  # the optimizer raises many types on graphs it does not know
        log.warning("BERT fusions not applied (%s); quantizing the plain graph", one_line(error))
        return exported
    return fused


def _export(served: Any, path: Path) -> None:
    """The classifier as ONNX with dynamic batch and length; inputs ``input_ids``, ``attention_mask``."""
    sample = torch.tensor([served.encode("A short review to trace the graph with.")])
    # The tracer warns about shape-dependent branches of the attention code; the graph is checked
    # against the fp32 model on real reviews right after, which is what counts.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            served.model,
            (sample, torch.ones_like(sample)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )


def read_check_reviews(path: Path, limit: int) -> tuple[list[str], list[str] | None]:
    """The first ``limit`` reviews of a labelled file and their labels (None unless every one has one).

    Read with the producer's reader (:func:`producer.reading.read_reviews`: CSV, JSON Lines or
    text, optionally gzipped; labels as positive/negative, pos/neg or 1/0).
    """
    from producer.reading import read_reviews

    reviews = read_reviews(path)[:limit]
    labels = [review.label for review in reviews]
    return [review.text for review in reviews], (
        None if any(label is None for label in labels) else [str(label) for label in labels]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.int8 --model DIR [--data CSV] [--max-samples N]``: build and check the copy."""
    parser = argparse.ArgumentParser(prog="python -m worker.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder written by training")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_CHECK_DATA, help="labelled CSV (review,sentiment) for the check"
    )
    parser.add_argument("--max-samples", type=int, default=500, help="check reviews (default 500)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    try:
        texts, labels = read_check_reviews(args.data, args.max_samples)
        report = build_int8(args.model, texts, labels)
    except (ConfigurationError, DataError, ModelLoadError, OSError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report)))
    if not report.passed:
        print(f"error: the int8 copy was refused: {report.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
