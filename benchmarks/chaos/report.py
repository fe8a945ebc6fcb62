"""What a chaos run found, from what it recorded: the figures, the Markdown table and the timeline.

Pure functions over plain records (the events the harness caused or saw, and every entry of the
predictions stream), so the verdict can be tested without starting anything.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: A worker killed with SIGKILL by the harness.
SIGKILL = "worker-sigkill"
#: A worker sent SIGTERM by the harness (it should finish its batch, then exit 0).
SIGTERM = "worker-sigterm"
#: The worker that got SIGTERM has exited (``detail`` holds its exit code).
WORKER_EXIT = "worker-exit"
#: A worker exited although the harness sent it nothing: a bug, reported with its exit code.
WORKER_CRASH = "worker-crash"
#: A worker process started in place of one that was killed, stopped or crashed.
WORKER_RESTART = "worker-restart"
#: Redis killed with SIGKILL.
REDIS_KILL = "redis-sigkill"
#: Redis started again on the same port, from its append-only file.
REDIS_RESTART = "redis-restart"

#: The events whose in-flight jobs are followed until their reviews have results.
KILLS = (SIGKILL, SIGTERM, REDIS_KILL)


@dataclasses.dataclass(frozen=True)
class Event:
    """Something the harness did or saw, at ``at`` (Unix time)."""

    kind: str
    at: float
    target: str
    #: Jobs in flight at that moment (for kills) and the reviews they carry.
    jobs: tuple[str, ...] = ()
    reviews: tuple[str, ...] = ()
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ResultEntry:
    """One entry of the predictions stream: a review's result, written at ``at`` (Unix time)."""

    review_id: str
    at: float
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class KillFigure:
    """How the jobs in flight at one kill got their results."""

    kind: str
    target: str
    at_s: float
    jobs: int
    reviews: int
    #: Seconds from the kill until every review of those jobs had its final result (None: never,
    #: or nothing was in flight).
    results_after_s: float | None
    #: Seconds from the kill until the next result of any review.
    next_result_after_s: float | None
    note: str


@dataclasses.dataclass(frozen=True)
class Stall:
    """The longest time without any result, and what happened during it."""

    seconds: float
    from_s: float
    to_s: float
    events: list[str]


@dataclasses.dataclass
class Figures:
    """The outcome of one chaos run; ``passed`` is False when a review was lost or duplicated."""

    reviews: int
    duration_s: float
    results_per_s: float
    kills: dict[str, int]
    restarts: dict[str, int]
    lost: int
    duplicates: int
    duplicate_entries: int
    error_results: int
    errors_by_reason: dict[str, int]
    crashes: list[dict[str, Any]]
    sigterm_exits: list[str]
    kill_recovery: list[KillFigure]
    longest_stall: Stall | None
    lost_ids: list[str]
    duplicate_ids: list[str]
    #: Kills planned, by kind (:data:`SIGKILL`, :data:`SIGTERM`, :data:`REDIS_KILL`).
    planned: dict[str, int]

    @property
    def passed(self) -> bool:
        """No review lost and none answered twice."""
        return self.lost == 0 and self.duplicates == 0

    @property
    def missing_kills(self) -> list[str]:
        """Planned kills the run did not get to, when that makes it prove less than it claims.

        Every Redis kill and SIGTERM must happen, and at least one SIGKILL: how many more fit in
        the stream depends on how fast a replacement worker loads.
        """
        done = {SIGKILL: self.kills["worker SIGKILL"], SIGTERM: self.kills["worker SIGTERM"]}
        done[REDIS_KILL] = self.kills["redis SIGKILL"]
        wanted = {kind: self.planned.get(kind, 0) for kind in KILLS}
        wanted[SIGKILL] = min(1, wanted[SIGKILL])
        return [f"{kind}: {done[kind]} of {count}" for kind, count in wanted.items() if done[kind] < count]

    @property
    def complete(self) -> bool:
        """Every kill that had to happen did."""
        return not self.missing_kills

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``passed``, ``complete`` and ``missing_kills``)."""
        data = dataclasses.asdict(self)
        data.update(passed=self.passed, complete=self.complete, missing_kills=self.missing_kills)
        return data


def summarize(
    submitted: Sequence[str],
    entries: Sequence[ResultEntry],
    *,
    stored: Iterable[str],
    events: Sequence[Event],
    started_at: float,
    finished_at: float,
    planned: dict[str, int] | None = None,
) -> Figures:
    """The figures of a run that submitted ``submitted`` between ``started_at`` and ``finished_at``.

    ``entries`` is every entry of the predictions stream, ``stored`` the ids whose result value
    was still readable at the end. A review is lost when it has neither, duplicated when the
    stream holds more than one result for it.
    """
    counts = collections.Counter(entry.review_id for entry in entries)
    have_result = set(counts) | set(stored)
    lost_ids = [review_id for review_id in submitted if review_id not in have_result]
    duplicate_ids = sorted(review_id for review_id, count in counts.items() if count > 1)
    # The last entry of a review is its final result, the one a reader of the value sees.
    final: dict[str, ResultEntry] = {}
    for entry in sorted(entries, key=lambda entry: entry.at):
        final[entry.review_id] = entry
    reasons = collections.Counter(entry.error for entry in final.values() if entry.error is not None)
    times = sorted(entry.at for entry in entries)
    kinds = collections.Counter(event.kind for event in events)
    duration = max(finished_at - started_at, 1e-9)
    return Figures(
        reviews=len(submitted),
        duration_s=round(duration, 2),
        results_per_s=round(len(final) / duration, 1),
        kills={
            "worker SIGKILL": kinds[SIGKILL],
            "worker SIGTERM": kinds[SIGTERM],
            "redis SIGKILL": kinds[REDIS_KILL],
        },
        restarts={"worker": kinds[WORKER_RESTART], "redis": kinds[REDIS_RESTART]},
        lost=len(lost_ids),
        duplicates=len(duplicate_ids),
        duplicate_entries=sum(counts[review_id] - 1 for review_id in duplicate_ids),
        error_results=sum(reasons.values()),
        errors_by_reason=dict(reasons.most_common()),
        crashes=[
            {"worker": event.target, "at_s": round(event.at - started_at, 2), "detail": event.detail}
            for event in events
            if event.kind == WORKER_CRASH
        ],
        sigterm_exits=[f"{event.target}: {event.detail}" for event in events if event.kind == WORKER_EXIT],
        kill_recovery=[
            _kill_figure(event, final, times, started_at) for event in events if event.kind in KILLS
        ],
        longest_stall=longest_stall(times, events, started_at),
        lost_ids=lost_ids,
        duplicate_ids=duplicate_ids,
        planned=dict(planned or {}),
    )


def _kill_figure(
    event: Event, final: dict[str, ResultEntry], times: Sequence[float], started_at: float
) -> KillFigure:
    later = [at for at in times if at >= event.at]
    next_result = round(later[0] - event.at, 2) if later else None
    arrivals = [final[review_id].at if review_id in final else None for review_id in event.reviews]
    if not arrivals:
        after, note = None, "no job in flight"
    elif any(at is None for at in arrivals):
        missing = sum(1 for at in arrivals if at is None)
        after, note = None, f"{missing} review(s) never answered"
    else:
        # A review answered before the kill (the worker published, then died) counts as 0 s.
        after, note = round(max(0.0, max(at for at in arrivals if at is not None) - event.at), 2), ""
    return KillFigure(
        kind=event.kind,
        target=event.target,
        at_s=round(event.at - started_at, 2),
        jobs=len(event.jobs),
        reviews=len(event.reviews),
        results_after_s=after,
        next_result_after_s=next_result,
        note=note,
    )


def longest_stall(times: Sequence[float], events: Sequence[Event], started_at: float) -> Stall | None:
    """The longest gap between two consecutive results (sorted ``times``), with the events inside it."""
    if len(times) < 2:
        return None
    gap, index = max((times[i + 1] - times[i], i) for i in range(len(times) - 1))
    start, end = times[index], times[index + 1]
    inside = [
        f"{event.kind} {event.target} at {event.at - started_at:.1f}s"
        for event in events
        if start <= event.at <= end
    ]
    return Stall(
        seconds=round(gap, 2),
        from_s=round(start - started_at, 2),
        to_s=round(end - started_at, 2),
        events=inside,
    )


def markdown(figures: Figures, command: str) -> str:
    """The figures as Markdown tables: the summary, then one row per kill."""
    stall = figures.longest_stall
    rows = [
        ("command", f"`{command}`"),
        ("verdict", _verdict(figures)),
        ("reviews", f"{figures.reviews:,}"),
        ("kills (planned)", _kills_line(figures)),
        ("restarts", ", ".join(f"{name}: {count}" for name, count in figures.restarts.items())),
        ("lost (no final result)", str(figures.lost)),
        (
            "duplicate final results",
            f"{figures.duplicates} review(s), {figures.duplicate_entries} extra entries",
        ),
        ("error results", _errors_line(figures)),
        ("worker crashes (exits nobody asked for)", _crashes_line(figures)),
        ("exits after SIGTERM", "; ".join(figures.sigterm_exits) or "-"),
        ("longest stall", f"{stall.seconds:.2f} s ({stall.from_s:.1f}-{stall.to_s:.1f} s)" if stall else "-"),
        ("duration, results/s", f"{figures.duration_s:.1f} s, {figures.results_per_s:.1f}/s"),
    ]
    lines = ["| figure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += [
        "",
        "| kill | target | at (s) | jobs in flight | reviews | their results after (s) "
        "| next result after (s) | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kill in figures.kill_recovery:
        lines.append(
            f"| {kill.kind} | {kill.target} | {kill.at_s:.1f} | {kill.jobs} | {kill.reviews} | "
            f"{_seconds(kill.results_after_s)} | {_seconds(kill.next_result_after_s)} | {kill.note} |"
        )
    if stall and stall.events:
        lines += ["", f"During the longest stall: {'; '.join(stall.events)}."]
    return "\n".join(lines) + "\n"


def _verdict(figures: Figures) -> str:
    if not figures.passed:
        return "FAIL (lost or duplicated reviews)"
    if not figures.complete:
        return f"INCOMPLETE (kills that did not happen: {', '.join(figures.missing_kills)})"
    return "PASS"


def _errors_line(figures: Figures) -> str:
    if not figures.error_results:
        return "0"
    reasons = "; ".join(f"{count} x {reason[:120]}" for reason, count in figures.errors_by_reason.items())
    return f"{figures.error_results} ({reasons})"


def _kills_line(figures: Figures) -> str:
    planned = [figures.planned.get(kind, 0) for kind in KILLS]
    return ", ".join(
        f"{name}: {count} ({wanted})"
        for (name, count), wanted in zip(figures.kills.items(), planned, strict=True)
    )


def _crashes_line(figures: Figures) -> str:
    if not figures.crashes:
        return "0"
    return f"{len(figures.crashes)}: " + "; ".join(
        f"{crash['worker']} at {crash['at_s']:.1f}s ({crash['detail']})" for crash in figures.crashes
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


_EVENT_STYLE = {
    SIGKILL: ("#c44e52", "-", "worker SIGKILL"),
    SIGTERM: ("#dd8452", "-", "worker SIGTERM"),
    WORKER_CRASH: ("#000000", "-", "worker crash"),
    WORKER_RESTART: ("#55a868", ":", "worker restart"),
    REDIS_KILL: ("#8172b3", "-", "Redis SIGKILL"),
    REDIS_RESTART: ("#8172b3", "--", "Redis restart"),
}


def write_timeline(
    entries: Sequence[ResultEntry], events: Sequence[Event], started_at: float, path: Path
) -> None:
    """A PNG of results per second over the run, with every kill and restart marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = [entry.at - started_at for entry in entries]
    end = max([*offsets, *(event.at - started_at for event in events), 1.0])
    bins = list(range(math.ceil(end) + 2))
    fig, ax = plt.subplots(figsize=(12, 5))
    ax.hist(offsets, bins=bins, color="#4c72b0", alpha=0.8, label="results per second")
    labelled: set[str] = set()
    for event in events:
        style = _EVENT_STYLE.get(event.kind)
        if style is None:
            continue
        color, line, label = style
        ax.axvline(
            event.at - started_at,
            color=color,
            linestyle=line,
            linewidth=1.4,
            label=None if label in labelled else label,
        )
        labelled.add(label)
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("results per second")
    ax.set_title("sentiq under chaos: results per second, with kills and restarts")
    ax.set_xlim(0, end + 1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(labelled) + 1, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
