"""The chaos harness: its verdict (pure, fast) and its quick variant end to end (slow, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmarks.chaos import report
from benchmarks.chaos.run import Options, parse_options
from tests.conftest import REPO_ROOT

T0 = 1_000.0


def entry(review_id: str, at: float, error: str | None = None) -> report.ResultEntry:
    return report.ResultEntry(review_id, T0 + at, error)


def summarize(
    submitted: list[str], entries: list[report.ResultEntry], events: Sequence[report.Event] = ()
) -> report.Figures:
    return report.summarize(
        submitted, entries, stored=set(), events=events, started_at=T0, finished_at=T0 + 10
    )


def test_a_review_without_any_result_is_lost_and_fails_the_run() -> None:
    figures = summarize(["a", "b", "c"], [entry("a", 1), entry("c", 2)])
    assert (figures.lost, figures.lost_ids, figures.passed) == (1, ["b"], False)


def test_a_stored_result_missing_from_the_stream_is_not_lost() -> None:
    figures = report.summarize(
        ["a", "b"], [entry("a", 1)], stored={"b"}, events=[], started_at=T0, finished_at=T0 + 5
    )
    assert figures.lost == 0 and figures.passed


def test_two_stream_entries_for_one_review_are_a_duplicate() -> None:
    figures = summarize(["a", "b"], [entry("a", 1), entry("b", 2), entry("a", 7)])
    assert (figures.duplicates, figures.duplicate_entries, figures.duplicate_ids) == (1, 1, ["a"])
    assert not figures.passed


def test_error_results_are_counted_by_their_final_reason() -> None:
    figures = summarize(
        ["a", "b", "c"],
        [entry("a", 1, "worker error: boom"), entry("b", 2, "worker error: boom"), entry("c", 3)],
    )
    assert figures.error_results == 2
    assert figures.errors_by_reason == {"worker error: boom": 2}
    assert figures.passed, "error results are answers, not losses"


def test_kill_recovery_is_the_time_until_the_last_held_review_is_answered() -> None:
    kill = report.Event(report.SIGKILL, T0 + 2, "w0-0", jobs=("j1",), reviews=("a", "b"))
    idle = report.Event(report.SIGKILL, T0 + 4, "w0-1")
    unanswered = report.Event(report.SIGTERM, T0 + 5, "w1-0", jobs=("j2",), reviews=("z",))
    figures = summarize(["a", "b", "z"], [entry("a", 3), entry("b", 8.5)], [kill, idle, unanswered])
    by_target = {figure.target: figure for figure in figures.kill_recovery}
    assert by_target["w0-0"].results_after_s == 6.5
    assert by_target["w0-0"].next_result_after_s == 1.0
    assert by_target["w0-1"].results_after_s is None and by_target["w0-1"].note == "no job in flight"
    assert (
        by_target["w1-0"].results_after_s is None and "1 review(s) never answered" in by_target["w1-0"].note
    )


def test_longest_stall_names_the_events_inside_it() -> None:
    redis_kill = report.Event(report.REDIS_KILL, T0 + 3, "redis")
    figures = summarize(["a", "b", "c"], [entry("a", 1), entry("b", 2), entry("c", 9)], [redis_kill])
    assert figures.longest_stall == report.Stall(
        seconds=7.0, from_s=2.0, to_s=9.0, events=["redis-sigkill redis at 3.0s"]
    )


def test_markdown_states_the_verdict_and_one_row_per_kill() -> None:
    kill = report.Event(report.SIGKILL, T0 + 2, "w0-0", jobs=("j1",), reviews=("a",))
    exit_ = report.Event(report.WORKER_EXIT, T0 + 4, "w1-0", detail="exit code 0, 1.2s after SIGTERM")
    text = report.markdown(summarize(["a"], [entry("a", 3)], [kill, exit_]), "python -m benchmarks.chaos")
    assert "| verdict | PASS |" in text
    assert "| worker-sigkill | w0-0 | 2.0 | 1 | 1 | 1.00 | 1.00 |  |" in text
    assert "| exits after SIGTERM | w1-0: exit code 0, 1.2s after SIGTERM |" in text


def test_a_planned_redis_kill_that_never_happened_makes_the_run_incomplete() -> None:
    kill = report.Event(report.SIGKILL, T0 + 2, "w0-0")
    planned = {report.SIGKILL: 5, report.SIGTERM: 0, report.REDIS_KILL: 1}
    figures = report.summarize(
        ["a"],
        [entry("a", 1)],
        stored=set(),
        events=[kill],
        started_at=T0,
        finished_at=T0 + 5,
        planned=planned,
    )
    assert figures.passed and not figures.complete
    assert figures.missing_kills == [f"{report.REDIS_KILL}: 0 of 1"], "one SIGKILL of five is enough"
    assert "| verdict | INCOMPLETE (kills that did not happen: redis-sigkill: 0 of 1) |" in report.markdown(
        figures, "chaos"
    )


def test_quick_preset_and_plan() -> None:
    options = parse_options(["--quick"])
    assert (options.reviews, options.sigkills, options.sigterms, options.redis_restarts) == (600, 1, 1, 1)
    assert [kind for _, kind in options.plan()] == [report.SIGKILL, report.SIGTERM, report.REDIS_KILL]
    # By default SIGKILLs repeat every few seconds over the whole stream.
    default_kills = [at for at, kind in Options().plan() if kind == report.SIGKILL]
    assert len(default_kills) >= 5 and default_kills[1] - default_kills[0] == Options().sigkill_every_s


def test_bad_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["--workers", "1"])
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_chaos_loses_and_duplicates_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Workers SIGKILLed and SIGTERMed and Redis SIGKILLed mid-stream: every review answered once."""
    result = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.chaos", "--quick",
            "--model", str(tiny_model_dir),
            "--output", str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )  # fmt: skip
    assert (tmp_path / "chaos.json").is_file(), result.stderr[-4000:]
    data = json.loads((tmp_path / "chaos.json").read_text())
    figures = data["figures"]
    evidence = json.dumps({k: data[k] for k in ("lost_evidence", "duplicate_evidence")}, indent=1)[:4000]
    assert figures["reviews"] == 600
    assert figures["kills"] == {"worker SIGKILL": 1, "worker SIGTERM": 1, "redis SIGKILL": 1}
    assert figures["complete"], data["plan_skipped"]
    assert figures["lost"] == 0, evidence
    assert figures["duplicates"] == 0, evidence
    assert result.returncode == 0, result.stdout[-4000:]
    assert (tmp_path / "chaos.png").stat().st_size > 0
    assert "| lost (no final result) | 0 |" in (tmp_path / "chaos.md").read_text()
