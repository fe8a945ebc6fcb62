"""A tiny dependency-free progress bar for standard error.

The producer depends only on redis, rq and pydantic, so it carries its own: on a terminal the bar
redraws in place at most ten times a second; elsewhere (logs, CI, pipes) only the final line is
written, so logs are not flooded with carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from producer.closing import Closing

_BAR_WIDTH = 24
_REDRAW_INTERVAL_S = 0.1


class Progress(Closing):
    """Progress of ``total`` items: call :meth:`update` with the count done, then :meth:`close`."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        enabled: bool = True,
    ) -> None:
        """``live`` redraws in place (default: when ``stream`` is a terminal); ``enabled=False`` is silent."""
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._live = _is_terminal(self._stream) if live is None else live
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._closed = False

    def update(self, done: int) -> None:
        """Record that ``done`` items (a running total) are finished."""
        self.done = min(max(done, self.done), self.total) if self.total else max(done, self.done)
        now = time.monotonic()
        if self._enabled and self._live and now - self._last_draw >= _REDRAW_INTERVAL_S:
            self._last_draw = now
            self._stream.write("\r" + self.render(now))
            self._stream.flush()

    def render(self, now: float | None = None) -> str:
        """The progress line, e.g. ``enqueue [#####-----] 250/500  50.0%  1,234/s  0.2s``."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            filled = round(_BAR_WIDTH * self.done / self.total)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            counts = f"[{bar}] {self.done:,}/{self.total:,} {100 * self.done / self.total:5.1f}%"
        else:
            counts = f"{self.done:,}"
        return f"{self.label} {counts}  {rate:,.0f}/s  {elapsed:.1f}s"

    def close(self) -> None:
        """Write the final line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._enabled:
            prefix = "\r" if self._live else ""
            self._stream.write(prefix + self.render() + "\n")
            self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
