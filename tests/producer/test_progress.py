"""producer.progress: the dependency-free progress bar."""

from __future__ import annotations

import io

from producer.progress import Progress


def test_non_terminal_gets_only_the_final_line() -> None:
    stream = io.StringIO()
    with Progress(200, "enqueue", stream=stream) as progress:
        for done in range(0, 201, 20):
            progress.update(done)
    (line,) = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert line.startswith("enqueue [########################] 200/200 100.0%")


def test_terminal_redraws_in_place() -> None:
    stream = io.StringIO()
    progress = Progress(10, "results", stream=stream, live=True)
    progress.update(5)
    assert stream.getvalue().startswith("\rresults [############------------] 5/10  50.0%")
    progress.close()
    progress.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    assert "10/10" not in stream.getvalue() and "5/10" in stream.getvalue().splitlines()[-1]


def test_disabled_is_silent_and_counts_never_go_backwards() -> None:
    stream = io.StringIO()
    with Progress(10, "x", stream=stream, live=True, enabled=False) as progress:
        progress.update(7)
        progress.update(3)
        progress.update(99)
    assert stream.getvalue() == ""
    assert progress.done == 10


def test_unknown_total_shows_a_count() -> None:
    progress = Progress(0, "read", stream=io.StringIO())
    progress.update(1234)
    assert progress.render().startswith("read 1,234  ")
