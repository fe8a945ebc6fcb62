"""Job heartbeats on a background thread, so that how long a forward pass takes never matters.

RQ takes a started job whose heartbeat expired for abandoned and runs it again. A worker that only
refreshed heartbeats between passes had its live jobs re-queued whenever one pass outlasted the
heartbeat TTL. The thread below refreshes them every third of the TTL for as long as a batch runs.

One thread serves the worker's whole life: starting and joining a thread per batch cost ~57 ms a
batch on a busy machine (issue 9's profile), since the join waits for the thread to be scheduled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class HeartbeatThread:
    """Calls the current batch's ``beat`` every ``interval_s`` seconds while a batch is running.

    A failing beat (Redis away, for instance) is logged and tried again at the next interval; the
    thread never ends the batch it keeps alive. When :meth:`beating` returns, no beat of that batch
    is running or will run, so a finished job is never marked alive again.
    """

    def __init__(self, interval_s: float, name: str = "sentiq-heartbeat") -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_s = interval_s
        self._name = name
        # Held while a beat runs, and to swap the batch being kept alive.
        self._lock = threading.Lock()
        self._beat: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    @contextlib.contextmanager
    def beating(self, beat: Callable[[], None]) -> Iterator[HeartbeatThread]:
        """Call ``beat`` at least once an interval (the first within one) until the ``with`` block ends."""
        self._ensure_started()
        with self._lock:
            self._beat = beat
        try:
            yield self
        finally:
            # Waits only for a beat that is running right now, never for the thread to wake up.
            with self._lock:
                self._beat = None

    def stop(self) -> None:
        """End the thread (the worker is shutting down)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                if self._beat is None:
                    continue
                try:
                    self._beat()
                    self.beats += 1
                except Exception as error:
                    log.warning("job heartbeat failed (will try again in %.0fs): %s", self._interval_s, error)
