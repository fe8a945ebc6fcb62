"""The benchmark report: the printed summary, ``bench.md``, ``bench.json`` and ``bench.png``.

Pure functions over the results dictionary that :mod:`benchmarks.suite` builds, so the layout
can be tested without running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.latency import paced_p50_ms
from benchmarks.machine import flags_line


def _rate(entry: dict[str, Any]) -> str:
    return f"{entry['reviews_per_second']:,.1f}"


def _mib(values: Any) -> str:
    if not values:
        return "n/a"
    if isinstance(values, list):
        return " / ".join(f"{value:,.0f}" for value in values)
    return f"{values:,.0f}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _client_cpu(many: dict[str, Any]) -> str:
    """``; clients' CPU 0.40 s, one client's 0.20 s`` when the delivery run measured it."""
    if "clients_cpu_seconds" not in many:
        return ""
    clients, one = many["clients_cpu_seconds"], many["one_client_cpu_seconds"]
    return f"; clients' CPU {clients:.2f} s, one client's {one:.2f} s"


def _rounds(entry: dict[str, Any]) -> str:
    """``, best of 3 rounds (150.1 / 148.2 / 151.0)`` for a head-to-head entry, else nothing."""
    rounds = entry.get("rounds")
    if not rounds:
        return ""
    return (
        f", best of {len(rounds)} round{'s' if len(rounds) > 1 else ''} ("
        + " / ".join(f"{rate:,.1f}" for rate in rounds)
        + ")"
    )


def markdown(results: dict[str, Any]) -> str:
    """Markdown tables: throughput (ceiling, A/B/C per model with ratios), latency, memory."""
    lines = [
        f"### sentiq benchmark ({results['device']}; {results['date']})",
        "",
        f"Machine: {flags_line(results['machine'])}.  ",
        f"Command: `{results['command']}`",
        "",
        "| what | model | way | reviews | seconds | reviews/s | ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    ceiling = results.get("queue_ceiling")
    if ceiling:
        lines.append(
            f"| queue ceiling | near-zero (1 layer, hidden 16, {ceiling.get('max_length', '?')} tokens) "
            f"| C, 1 worker | {ceiling['reviews']} | "
            f"{ceiling['seconds']:.2f} | **{_rate(ceiling)}** | {ceiling['ms_per_review']:.3f} ms/review |"
        )
        many = ceiling.get("concurrent_clients")
        if many:
            lines.append(
                _row(
                    "result delivery",
                    "near-zero",
                    f"C, 1 worker, {many['clients']} concurrent clients",
                    many["reviews"],
                    f"{many['seconds']:.2f}",
                    _rate(many),
                    f"{many['vs_one_client']:.2f}x one client" + _client_cpu(many),
                )
            )
    for model in results.get("models", []):
        name = model["model"]
        if "A" in model:
            a = model["A"]
            lines.append(
                f"| A | {name} | {a['way'][2:]} | {a['reviews']} | {a['seconds']:.2f} | {_rate(a)} | |"
            )
        for b in model["B_variants"]:
            best = " (best)" if b["way"] == model["B"]["way"] else ""
            way = f"in-process {b['way'][2:]}{best}"
            lines.append(_row("B", name, way, b["reviews"], f"{b['seconds']:.2f}", _rate(b), ""))
        b = model["B"]
        if "rounds" in b:
            way = f"in-process {b['way'][2:]}, head to head with C{_rounds(b)}"
            lines.append(_row("B", name, way, b["reviews"], f"{b['seconds']:.2f}", f"**{_rate(b)}**", ""))
        check = model.get("int8_check")
        if check:
            verdict = "kept" if check["passed"] else "refused"
            accuracy = (
                f", accuracy {check['accuracy_int8']:.3f} vs {check['accuracy_fp32']:.3f} fp32"
                if check.get("accuracy_fp32") is not None
                else ""
            )
            lines.append(
                _row(
                    "int8 copy",
                    name,
                    f"agreement with fp32 labels {check['agreement']:.3f}{accuracy}: {verdict}",
                    check["reviews"],
                    f"{check['build_seconds']:.1f} (build)",
                    "",
                    "",
                )
            )
        c = model["C"]
        ratios = f"C/B {model['C/B']:.2f}"
        if "C/B_rounds" in model:
            ratios += (
                f" (median of {len(model['C/B_rounds'])} rounds' own; best rounds "
                f"{model['C/B_best_rounds']:.2f})"
            )
        ratios += f", C/A {model['C/A']:.2f}" if "C/A" in model else ""
        gpu = c.get("gpu")
        if gpu and gpu.get("samples"):
            ratios += (
                f"; GPU busy {gpu['utilisation_mean_pct']:.0f} % mean, "
                f"{gpu['utilisation_max_pct']:.0f} % max, {gpu['memory_used_max_mib']:,.0f} MiB"
            )
        lines.append(
            _row(
                "C",
                name,
                c["way"][2:] + _rounds(c),
                c["reviews"],
                f"{c['seconds']:.2f}",
                f"**{_rate(c)}**",
                ratios,
            )
        )
    latency = results.get("latency", [])
    if latency:
        lines += [
            "",
            "| latency | model | load | reviews | sent/s | p50 ms | p99 ms | max ms "
            "| one review in-process p50 ms: back to back / at this rate | p50 gap ms: to back to back / "
            "to at this rate |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for entry in latency:
            in_process = entry["in_process"]["p50_ms"]
            paced = paced_p50_ms(entry["in_process"], entry["target_rate"])
            paced_text = f"{paced:.1f}" if paced is not None else "n/a"
            paced_gap = f"{entry['p50_ms'] - paced:.1f}" if paced is not None else "n/a"
            lines.append(
                f"| submit to result | {entry['model']} | {entry['load']} | {entry['reviews']} | "
                f"{entry['sent_rate']:.1f} | {entry['p50_ms']:.1f} | {entry['p99_ms']:.1f} | "
                f"{entry['max_ms']:.1f} | {in_process:.1f} / {paced_text} | "
                f"{entry['p50_ms'] - in_process:.1f} / {paced_gap} |"
            )
    lines += ["", "| peak memory (RSS, MiB) | worker process | benchmark process |", "| --- | ---: | ---: |"]
    for name, entry in results.get("memory", {}).items():
        lines.append(f"| {name} | {_mib(entry.get('worker'))} | {_mib(entry.get('benchmark'))} |")
    return "\n".join(lines) + "\n"


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Reviews per second per way and model (log scale), and latency p50/p99, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    rates: list[float] = []
    colors: list[str] = []
    palette = {"A": "#999999", "B": "#4c72b0", "C": "#dd8452", "ceiling": "#55a868"}
    ceiling = results.get("queue_ceiling")
    if ceiling:
        names.append("queue ceiling (near-zero model), C")
        rates.append(ceiling["reviews_per_second"])
        colors.append(palette["ceiling"])
    for model in results.get("models", []):
        for key in ("A", "B", "C"):
            if key in model:
                names.append(f"{model['model']}: {model[key]['way']}")
                rates.append(model[key]["reviews_per_second"])
                colors.append(palette[key])
    latency = results.get("latency", [])
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(13 if latency else 8, 0.45 * len(names) + 1.8))
    ax = axes[0] if latency else axes
    bars = ax.barh(names, rates, color=colors)
    ax.bar_label(bars, labels=[f"{rate:,.0f}/s" for rate in rates], padding=3, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("reviews per second (log scale, higher is better)")
    ax.set_title(f"throughput on {results['device']}", fontsize=10)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    if latency:
        labels = [f"{entry['model']}, {entry['load']}" for entry in latency]
        positions = range(len(labels))
        lat_ax = axes[1]
        lat_ax.barh([p - 0.2 for p in positions], [e["p50_ms"] for e in latency], 0.4, label="p50")
        lat_ax.barh([p + 0.2 for p in positions], [e["p99_ms"] for e in latency], 0.4, label="p99")
        lat_ax.scatter(
            [e["in_process"]["p50_ms"] for e in latency], list(positions), color="black", marker="|", s=200,
            label="one review in-process, back to back", zorder=3,
        )  # fmt: skip
        paced = [
            (p, paced_p50_ms(e["in_process"], e["target_rate"]))
            for p, e in zip(positions, latency, strict=True)
        ]
        lat_ax.scatter(
            [ms for _, ms in paced if ms is not None], [p for p, ms in paced if ms is not None],
            color="black", marker="x", s=40, label="... at the same rate", zorder=3,
        )  # fmt: skip
        lat_ax.set_yticks(list(positions), labels, fontsize=8)
        # Log scale: a queue that backs up (seconds) must not flatten the idle runs (milliseconds).
        lat_ax.set_xscale("log")
        lat_ax.set_xlabel("ms from submit to result (log scale, lower is better)")
        lat_ax.set_title("latency, single reviews at a steady rate", fontsize=10)
        lat_ax.invert_yaxis()
        lat_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(results: dict[str, Any], folder: Path, stem: str = "bench") -> list[Path]:
    """Write ``stem``.json, .md and .png into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.json", folder / f"{stem}.md", folder / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=2), encoding="utf-8")
    paths[1].write_text(markdown(results), encoding="utf-8")
    write_chart(results, paths[2])
    return paths
