"""Which words pushed a prediction: integrated gradients over the word embeddings, with Captum.

The one home of attributions: the worker calls :func:`explain_reviews` for the reviews of jobs
that ask for them (``explain`` in :class:`~sentiq.contract.JobPayload`), and
``python -m training explain`` (:mod:`training.explain`) prints and draws :func:`explain`'s result.

The model input is :meth:`SentimentModel.encode_all`'s, the exact ids the worker classifies
(cleaned, cut to ``max_length`` head-only or head+tail, framed by the special tokens); a second
tokenizer call over the same cleaned text only adds the character offsets that map tokens back to
words. Captum's ``LayerIntegratedGradients`` then integrates the gradient of the target label's
log-odds along the straight path from a baseline, in which every text token is replaced by
``[PAD]`` (or ``[MASK]``) and the special tokens are kept, to the review, in word-embedding
space. Each token's attribution is the sum over its embedding dimensions; word pieces are summed
into words. Attributions are in log-odds units of the target label (the predicted one unless
given): positive values pushed towards it, negative ones away from it, and together they add up
to the log-odds gap between review and baseline, up to the reported convergence delta (a large
delta means more steps are needed).

Each review is integrated alone (its steps batched), so its attributions do not depend on which
other reviews share its job: the same review and model give the same numbers every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sentiq.contract import Label
from sentiq.errors import ConfigurationError
from sentiq.text import clean_review, frame_token_ids, special_token_frame
from worker.model import RESOURCE_ERRORS, SentimentModel

#: Integration steps (Gauss-Legendre points) of ``python -m training explain``. 50 keeps the
#: convergence delta of a fine-tuned MiniLM on a short review around 1e-2 of log-odds gaps of
#: several units.
DEFAULT_STEPS = 50
#: Integration steps in the worker: each step is a forward and a backward pass over the review,
#: so this sets the cost of an explanation (README "Explanations"). Enough to rank the top words;
#: the exact values are coarser than the CLI's.
WORKER_STEPS = 16
#: What replaces the review's tokens in the baseline input.
BASELINES = ("pad", "mask")
#: The error result of every review of a job asking for explanations on a worker without Captum.
CAPTUM_MISSING = "explanations need captum: pip install 'sentiq[worker]'"
#: Longest word text put on the wire; a longer "word" (a URL, a run of letters) is cut, with "…".
MAX_WORD_CHARS = 40
#: Decimals of an attribution on the wire: far finer than the integration error, and compact JSON.
WIRE_DECIMALS = 4
_NEGATIVE_LABEL = "negative"


class CaptumMissingError(ConfigurationError):
    """Captum is not installed: explanations are unavailable, classification is not affected."""

    def __init__(self) -> None:
        super().__init__(CAPTUM_MISSING)


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
        """The ``count`` seen words with the largest attributions by magnitude (either sign).

        Ties keep the words' order in the text, so the choice is deterministic.
        """
        seen = [word for word in self.words if word.attribution is not None]
        return sorted(seen, key=lambda word: -abs(word.attribution or 0.0))[:count]

    def top_pairs(self, count: int) -> list[tuple[str, float]]:
        """:meth:`top` as the wire's ``[word, attribution]`` pairs: words cut to
        :data:`MAX_WORD_CHARS`, attributions rounded to :data:`WIRE_DECIMALS` decimals."""
        return [
            (_short(word.word), round(word.attribution or 0.0, WIRE_DECIMALS)) for word in self.top(count)
        ]

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


@dataclass(frozen=True)
class _Prepared:
    """One review made ready for integration: the model's input and the way back to words."""

    text: str
    token_ids: list[int]
    #: For each model input token, its index among the text's tokens; -1 for a special token.
    positions: list[int]
    offsets: Sequence[tuple[int, int]]
    word_ids: Sequence[int | None]


def explain(
    served: SentimentModel,
    text: str,
    *,
    label: Label | None = None,
    n_steps: int = DEFAULT_STEPS,
    baseline: str = "pad",
    internal_batch_size: int | None = None,
) -> Explanation:
    """Predict ``text`` and attribute the log-odds of ``label`` (default: the predicted one) to its words.

    Deterministic for a model in eval mode. Runs with autograd switched on, also when called
    under ``torch.inference_mode`` or ``torch.no_grad``. ``internal_batch_size`` bounds how many
    of the ``n_steps`` inputs go through the model at once (default: as many as the model's
    ``max_batch_tokens`` allows). Raises :class:`ConfigurationError` for empty text and unusable
    settings, :class:`CaptumMissingError` without Captum.
    """
    _baseline_id(served, baseline)  # a bad baseline is named before any tokenizing
    return _explain_prepared(
        served,
        _prepare(served, [text])[0],
        label=label,
        n_steps=n_steps,
        baseline=baseline,
        internal_batch_size=internal_batch_size,
    )


def explain_reviews(
    served: SentimentModel,
    texts: Sequence[str],
    top_k: int | Sequence[int],
    *,
    labels: Sequence[Label] | None = None,
    n_steps: int = WORKER_STEPS,
    on_pass: Callable[[], None] | None = None,
) -> list[list[tuple[str, float]] | Exception]:
    """The top ``top_k`` words of each text as ``(word, attribution)``, largest magnitude first.

    For the worker, after classification: ``labels`` are the labels it reports (attributions are
    towards them, so a near-tie cannot make the explanation argue for the other label), ``top_k``
    one count for all texts or one per text. A text whose explanation fails gets its exception in
    place of its pairs and the others are still explained; without Captum every text gets a
    :class:`CaptumMissingError`. Memory errors are raised: they are the worker's, not a review's.
    Texts must be reviews the worker accepted (:func:`~sentiq.contract.review_problem`).
    ``on_pass`` is called after each review (the worker keeps its heartbeats there: explaining
    takes far longer than classifying).
    """
    counts = [top_k] * len(texts) if isinstance(top_k, int) else list(top_k)
    if len(counts) != len(texts) or (labels is not None and len(labels) != len(texts)):
        raise ValueError(f"got {len(texts)} texts, {len(counts)} top_k and {len(labels or texts)} labels")
    if not texts:
        return []
    try:
        _captum()
    except CaptumMissingError as missing:
        return [missing] * len(texts)
    # Integration runs many steps per review: never on the one thread a short pass left behind.
    served.use_all_threads()
    try:
        prepared: list[_Prepared | Exception] = list(_prepare(served, texts))
    except RESOURCE_ERRORS:
        raise
    except Exception:  # one text the tokenizer cannot take: prepare each alone to find it
        prepared = [_prepare_alone(served, text) for text in texts]
    results: list[list[tuple[str, float]] | Exception] = []
    for index, review in enumerate(prepared):
        if isinstance(review, Exception):
            results.append(review)
            continue
        try:
            label = labels[index] if labels is not None else None
            explanation = _explain_prepared(
                served, review, label=label, n_steps=n_steps, baseline="pad", internal_batch_size=None
            )
        except RESOURCE_ERRORS:
            raise
        except Exception as error:  # a review's failure is its own result; the rest are explained
            results.append(error)
        else:
            results.append(explanation.top_pairs(counts[index]))
        if on_pass is not None:
            on_pass()
    return results


def _captum() -> Any:
    """Captum's ``LayerIntegratedGradients`` class, or :class:`CaptumMissingError`."""
    try:
        from captum.attr import LayerIntegratedGradients  # type: ignore[import-untyped]
    except ImportError as error:
        raise CaptumMissingError() from error
    return LayerIntegratedGradients


def _baseline_id(served: SentimentModel, baseline: str) -> int:
    if baseline not in BASELINES:
        raise ConfigurationError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}")
    tokenizer = served.tokenizer
    token_id = tokenizer.pad_token_id if baseline == "pad" else tokenizer.mask_token_id
    if not isinstance(token_id, int):
        raise ConfigurationError(f"the tokenizer has no [{baseline.upper()}] token for the baseline")
    return token_id


def _prepare_alone(served: SentimentModel, text: str) -> _Prepared | Exception:
    try:
        return _prepare(served, [text])[0]
    except RESOURCE_ERRORS:
        raise
    except Exception as error:
        return error


def _prepare(served: SentimentModel, texts: Sequence[str]) -> list[_Prepared]:
    """The worker's input ids for ``texts`` and, per token, which word of the cleaned text it is."""
    tokenizer = served.tokenizer
    if not tokenizer.is_fast:
        raise ConfigurationError("explaining needs a fast tokenizer (tokenizer.json) for word offsets")
    cleaned = [clean_review(text) for text in texts]
    if not all(cleaned):
        raise ConfigurationError("the text to explain is empty")
    inputs = served.encode_all(texts)
    # Offsets only: the ids are the ones above. Cutting the token positions the way encode_all
    # cuts the ids tells which tokens the model saw.
    encoding = tokenizer(
        cleaned, add_special_tokens=False, truncation=False, verbose=False, return_offsets_mapping=True
    )
    frame = special_token_frame(tokenizer)
    unframed = ([-1] * len(frame[0]), [-1] * len(frame[1]))
    prepared = []
    for index, text in enumerate(cleaned):
        ids = encoding["input_ids"][index]
        try:
            positions = frame_token_ids(
                range(len(ids)), unframed, served.info.max_length, served.info.truncation
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from error
        seen = [ids[position] for position in positions if position >= 0]
        if seen != [token for token, position in zip(inputs[index], positions, strict=True) if position >= 0]:
            raise RuntimeError("the offsets tokenization disagrees with the model's input ids")
        prepared.append(
            _Prepared(
                text, inputs[index], positions, encoding["offset_mapping"][index], encoding.word_ids(index)
            )
        )
    return prepared


def _explain_prepared(
    served: SentimentModel,
    review: _Prepared,
    *,
    label: Label | None,
    n_steps: int,
    baseline: str,
    internal_batch_size: int | None,
) -> Explanation:
    """Integrated gradients of one prepared review (see the module docstring)."""
    if n_steps < 1:
        raise ConfigurationError(f"--steps must be at least 1, got {n_steps}")
    baseline_id = _baseline_id(served, baseline)
    integrated_gradients = _captum()
    model: Any = served.model  # a transformers classifier: get_input_embeddings, .logits
    input_ids = torch.tensor([review.token_ids], device=served.device)
    baseline_ids = torch.tensor(
        [[t if p < 0 else baseline_id for t, p in zip(review.token_ids, review.positions, strict=True)]],
        device=served.device,
    )
    attention_mask = torch.ones_like(input_ids)
    # Each step is one row of the review's length: as many rows per pass as the worker's token
    # budget allows, so a long review cannot take more memory than a classification pass.
    rows = internal_batch_size or max(1, min(n_steps, served.max_batch_tokens // len(review.token_ids)))
    was_training = model.training
    model.eval()  # dropout would make attributions random
    # Autograd even inside the worker's inference mode: inference tensors cannot be differentiated.
    with torch.inference_mode(False), torch.enable_grad():
        try:
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            probabilities = torch.softmax(logits, -1)[0]
            target = int(probabilities.argmax()) if label is None else _label_index(served, label)
            score = float(probabilities[target])

            def log_odds(batch_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = model(input_ids=batch_ids, attention_mask=mask).logits.float()
                others = torch.cat([out[:, :target], out[:, target + 1 :]], dim=1)
                return out[:, target] - torch.logsumexp(others, dim=1)

            attributions, delta = integrated_gradients(log_odds, model.get_input_embeddings()).attribute(
                inputs=input_ids,
                baselines=baseline_ids,
                additional_forward_args=(attention_mask,),
                n_steps=n_steps,
                internal_batch_size=rows,
                return_convergence_delta=True,
            )
        finally:
            model.train(was_training)
    per_token = [float(value) for value in attributions.float().sum(dim=-1)[0].tolist()]
    seen = {position: per_token[index] for index, position in enumerate(review.positions) if position >= 0}
    return Explanation(
        text=review.text,
        label=served.id2label[target],
        score=score,
        words=_merge_words(review, seen),
        token_ids=tuple(review.token_ids),
        token_attributions=tuple(per_token),
        convergence_delta=float(delta.float().abs().max()),
        n_steps=n_steps,
        baseline=baseline,
    )


def _label_index(served: SentimentModel, label: Label) -> int:
    for index, name in served.id2label.items():
        if name == label:
            return index
    raise ValueError(f"the model has no label {label!r}")


def _merge_words(review: _Prepared, seen: dict[int, float]) -> tuple[WordAttribution, ...]:
    """Word pieces summed into the tokenizer's pre-tokenized words (punctuation is a word of its own)."""
    word_ids = review.word_ids
    groups: list[list[int]] = []
    for index, word_id in enumerate(word_ids):
        if groups and word_id is not None and word_ids[groups[-1][0]] == word_id:
            groups[-1].append(index)
        else:
            groups.append([index])
    words = []
    for group in groups:
        start, end = review.offsets[group[0]][0], review.offsets[group[-1]][1]
        kept = [seen[index] for index in group if index in seen]
        words.append(WordAttribution(review.text[start:end], start, end, math.fsum(kept) if kept else None))
    return tuple(words)


def _short(word: str) -> str:
    return word if len(word) <= MAX_WORD_CHARS else word[: MAX_WORD_CHARS - 1] + "…"
