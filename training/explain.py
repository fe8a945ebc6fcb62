"""``python -m training explain``: the words that pushed a prediction, printed and drawn.

The attributions themselves (integrated gradients over the word embeddings, with Captum, on
exactly the input the worker classifies) live in :mod:`worker.attributions`, which the worker
uses too; this module turns an :class:`Explanation` into an HTML page and a bar chart. See
:mod:`training.cli` for the command line.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sentiq.errors import ConfigurationError
from worker.attributions import BASELINES, DEFAULT_STEPS, Explanation, WordAttribution

__all__ = [
    "BASELINES",
    "DEFAULT_STEPS",
    "Explanation",
    "WordAttribution",
    "explanation_html",
    "write_html",
    "write_png",
]


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
