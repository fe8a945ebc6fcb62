"""Which words pushed a prediction: integrated gradients over the word embeddings, with Captum.

``python -m training explain --model DIR "text"`` (see :mod:`training.cli`); the core is
:func:`explain`, which takes a loaded model and tokenizer so the worker can reuse it.

The review is prepared exactly as training and the worker prepare it (:mod:`sentiq.text`:
cleaned, tokenized without special tokens, cut to ``max_length`` head-only or head+tail, framed
by the tokenizer's special tokens). Captum's ``LayerIntegratedGradients`` then integrates the
gradient of the predicted label's log-odds along the straight path from a baseline, in which
every text token is replaced by ``[PAD]`` (or ``[MASK]``) and the special tokens are kept, to the
review, in word-embedding space. Each token's attribution is the sum over its embedding
dimensions; word pieces are summed into words. Attributions are in log-odds units of the
predicted label: positive values pushed towards it, negative ones away from it, and together
they add up to the log-odds gap between review and baseline, up to the reported convergence
delta (a large delta means more steps are needed).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sentiq.errors import ConfigurationError
from sentiq.text import clean_review, frame_token_ids, special_token_frame

#: Integration steps (Gauss-Legendre points). 50 keeps the convergence delta of a fine-tuned
#: MiniLM on a short review around 1e-2 of log-odds gaps of several units.
DEFAULT_STEPS = 50
#: What replaces the review's tokens in the baseline input.
BASELINES = ("pad", "mask")
_POSITIVE_LABEL = "positive"
_NEGATIVE_LABEL = "negative"


@dataclass(frozen=True)
class WordAttribution:
    """One word of the cleaned review (``text[start:end]``) and how much it pushed the prediction.

    ``attribution`` is None for a word that truncation cut: the model never saw it.
    """

    word: str
    start: int
    end: int
    attribution: float | None


@dataclass(frozen=True)
class Explanation:
    """A prediction and the integrated-gradients attribution of each word of the review."""

    #: The review as the model read it (after :func:`sentiq.text.clean_review`).
    text: str
    label: str
    score: float
    words: tuple[WordAttribution, ...]
    #: The model input, special tokens included, and each token's attribution (0 for special tokens).
    token_ids: tuple[int, ...]
    token_attributions: tuple[float, ...]
    convergence_delta: float
    n_steps: int
    baseline: str

    def top(self, count: int) -> list[WordAttribution]:
        """The ``count`` seen words with the largest attributions by magnitude (either sign)."""
        seen = [word for word in self.words if word.attribution is not None]
        return sorted(seen, key=lambda word: -abs(word.attribution or 0.0))[:count]

    def towards_positive(self, attribution: float) -> float:
        """An attribution as a push towards ``positive`` (for colours), whatever the predicted label."""
        return -attribution if self.label == _NEGATIVE_LABEL else attribution

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """JSON-ready: label, score, the top words (all seen words when ``top`` is None) and IG details."""
        chosen = self.top(top if top is not None else len(self.words))
        return {
            "label": self.label,
            "score": self.score,
            "text": self.text,
            "top_words": [asdict(word) for word in chosen],
            "unseen_words": sum(word.attribution is None for word in self.words),
            "convergence_delta": self.convergence_delta,
            "n_steps": self.n_steps,
            "baseline": self.baseline,
        }


def explain(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    max_length: int,
    truncation: str = "head",
    n_steps: int = DEFAULT_STEPS,
    baseline: str = "pad",
    internal_batch_size: int | None = None,
) -> Explanation:
    """Predict ``text`` and attribute the predicted label's log-odds to its words (see module docstring).

    ``model`` is a sequence classifier with ``config.id2label``, ``tokenizer`` its fast tokenizer,
    ``max_length`` and ``truncation`` the model folder's (``metrics.json``). Deterministic for a
    model in eval mode on CPU. Needs autograd: do not call it under ``torch.inference_mode``.
    ``internal_batch_size`` bounds how many of the ``n_steps`` inputs go through the model at once
    (default: all). Raises :class:`ConfigurationError` for empty text and unusable settings.
    """
    from captum.attr import LayerIntegratedGradients  # type: ignore[import-untyped]

    if n_steps < 1:
        raise ConfigurationError(f"--steps must be at least 1, got {n_steps}")
    if baseline not in BASELINES:
        raise ConfigurationError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}")
    cleaned = clean_review(text)
    if not cleaned:
        raise ConfigurationError("the text to explain is empty")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigurationError("explaining needs a fast tokenizer (tokenizer.json) for word offsets")
    baseline_id = tokenizer.pad_token_id if baseline == "pad" else tokenizer.mask_token_id
    if baseline_id is None:
        raise ConfigurationError(f"the tokenizer has no [{baseline.upper()}] token for the baseline")

    # Tokenized whole, then cut exactly as the worker cuts (sentiq.text); the same cut applied to
    # the token positions tells which tokens the model saw.
    encoding = tokenizer(
        cleaned, add_special_tokens=False, truncation=False, verbose=False, return_offsets_mapping=True
    )
    ids = list(encoding["input_ids"])
    frame = special_token_frame(tokenizer)
    try:
        framed = frame_token_ids(ids, frame, max_length, truncation)
        unframed = ([-1] * len(frame[0]), [-1] * len(frame[1]))
        positions = frame_token_ids(range(len(ids)), unframed, max_length, truncation)
    except ValueError as error:
        raise ConfigurationError(str(error)) from error

    device = next(model.parameters()).device
    input_ids = torch.tensor([framed], device=device)
    baseline_ids = torch.tensor(
        [[token if position < 0 else baseline_id for token, position in zip(framed, positions, strict=True)]],
        device=device,
    )
    attention_mask = torch.ones_like(input_ids)
    was_training = model.training
    model.eval()  # dropout would make attributions random
    try:
        with torch.no_grad():
            probabilities = torch.softmax(
                model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1
            )
        target = int(probabilities[0].argmax())
        score = float(probabilities[0, target])

        def log_odds(batch_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = model(input_ids=batch_ids, attention_mask=mask).logits.float()
            others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
            return logits[:, target] - torch.logsumexp(others, dim=1)

        integrated = LayerIntegratedGradients(log_odds, model.get_input_embeddings())
        with torch.enable_grad():
            attributions, delta = integrated.attribute(
                inputs=input_ids,
                baselines=baseline_ids,
                additional_forward_args=(attention_mask,),
                n_steps=n_steps,
                internal_batch_size=internal_batch_size or n_steps,
                return_convergence_delta=True,
            )
    finally:
        model.train(was_training)

    per_token = [float(value) for value in attributions.float().sum(dim=-1)[0].tolist()]
    seen = {position: per_token[index] for index, position in enumerate(positions) if position >= 0}
    return Explanation(
        text=cleaned,
        label=str(model.config.id2label[target]),
        score=score,
        words=_merge_words(cleaned, encoding, seen),
        token_ids=tuple(framed),
        token_attributions=tuple(per_token),
        convergence_delta=float(delta.float().abs().max()),
        n_steps=n_steps,
        baseline=baseline,
    )


def _merge_words(text: str, encoding: Any, seen: dict[int, float]) -> tuple[WordAttribution, ...]:
    """Word pieces summed into the tokenizer's pre-tokenized words (punctuation is a word of its own)."""
    offsets: Sequence[tuple[int, int]] = encoding["offset_mapping"]
    word_ids = encoding.word_ids()
    groups: list[list[int]] = []
    for index, word_id in enumerate(word_ids):
        if groups and word_id is not None and word_ids[groups[-1][0]] == word_id:
            groups[-1].append(index)
        else:
            groups.append([index])
    words = []
    for group in groups:
        start, end = offsets[group[0]][0], offsets[group[-1]][1]
        kept = [seen[index] for index in group if index in seen]
        words.append(WordAttribution(text[start:end], start, end, math.fsum(kept) if kept else None))
    return tuple(words)


def explanation_html(explanation: Explanation, *, title: str = "") -> str:
    """A standalone HTML page: the review with each word's background green (pushed towards
    ``positive``) or red (towards ``negative``), stronger for larger attributions; the exact value
    is each word's tooltip. Words cut by truncation are grey."""
    strongest = max((abs(word.attribution or 0.0) for word in explanation.words), default=0.0) or 1.0
    parts = []
    cursor = 0
    for word in explanation.words:
        parts.append(html.escape(explanation.text[cursor : word.start]))
        cursor = word.end
        shown = html.escape(word.word)
        if word.attribution is None:
            parts.append(f'<span class="unseen" title="cut by truncation: not seen">{shown}</span>')
            continue
        push = explanation.towards_positive(word.attribution)
        alpha = 0.85 * abs(push) / strongest
        colour = f"rgba(22, 163, 74, {alpha:.3f})" if push >= 0 else f"rgba(220, 38, 38, {alpha:.3f})"
        parts.append(f'<span style="background: {colour}" title="{word.attribution:+.4f}">{shown}</span>')
    parts.append(html.escape(explanation.text[cursor:]))
    heading = f"{explanation.label} ({explanation.score:.4f})"
    rows = "".join(
        f"<tr><td>{html.escape(word.word)}</td><td>{word.attribution:+.4f}</td></tr>"
        for word in explanation.top(10)
        if word.attribution is not None
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title or heading)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; line-height: 1.9; }}
.text span {{ border-radius: 0.25rem; padding: 0.1rem 0.05rem; }}
.unseen {{ color: #999; }}
.legend, table {{ font-size: 0.9rem; color: #444; }}
td {{ padding: 0 1rem 0 0; font-variant-numeric: tabular-nums; }}
</style>
</head>
<body>
<h1>{html.escape(heading)}</h1>
<p class="text">{"".join(parts)}</p>
<p class="legend">Green: pushed towards <b>positive</b>; red: towards <b>negative</b>;
grey: cut by truncation. Integrated gradients, {explanation.n_steps} steps,
[{explanation.baseline.upper()}] baseline, convergence delta {explanation.convergence_delta:.4f};
values are log-odds of <b>{html.escape(explanation.label)}</b>.</p>
<table><tr><th align="left">word</th><th align="left">attribution</th></tr>{rows}</table>
</body>
</html>
"""


def write_html(explanation: Explanation, path: Path, *, title: str = "") -> Path:
    """Write :func:`explanation_html` to ``path``."""
    return _write(path, lambda target: target.write_text(explanation_html(explanation, title=title), "utf-8"))


def write_png(explanation: Explanation, path: Path, *, top: int = 10, title: str = "") -> Path:
    """A bar chart of the ``top`` words' attributions, green towards positive, red towards negative."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    words = explanation.top(top)[::-1]  # barh draws bottom-up: the strongest word on top
    values = [word.attribution or 0.0 for word in words]
    colours = ["tab:green" if explanation.towards_positive(value) >= 0 else "tab:red" for value in values]
    figure, axes = plt.subplots(figsize=(7, 1.2 + 0.4 * max(1, len(words))))
    axes.barh(range(len(words)), values, color=colours)
    axes.set_yticks(range(len(words)), [word.word for word in words])
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel(f"attribution towards {explanation.label!r} (log-odds)")
    excerpt = explanation.text if len(explanation.text) <= 60 else explanation.text[:57] + "..."
    axes.set_title(title or f"{explanation.label} ({explanation.score:.3f}): {excerpt}", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()

    def save(target: Path) -> None:
        figure.savefig(target, dpi=100)

    try:
        return _write(path, save)
    finally:
        plt.close(figure)


def _write(path: Path, writer: Any) -> Path:
    try:
        writer(path)
    except OSError as error:
        raise ConfigurationError(f"cannot write {path}: {error.strerror or error}") from error
    return path
