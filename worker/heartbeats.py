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
    """Calls each running batch's ``beat`` every ``interval_s`` seconds while that batch runs.

    Several batches may run at once (one in the model's passes while the next is started, see
    :class:`worker.worker.SentiqWorker`); each is kept alive from :meth:`keep` to :meth:`release`.
    A failing beat (Redis away, for instance) is logged and tried again at the next interval; the
    thread never ends the batch it keeps alive. When :meth:`release` returns, no beat of that batch
    is running or will run, so a finished job is never marked alive again.
    """

    def __init__(self, interval_s: float, name: str = "sentiq-heartbeat") -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_s = interval_s
        self._name = name
        # Held while the beats run, and to add or remove a batch being kept alive.
        self._lock = threading.Lock()
        self._beats: dict[int, Callable[[], None]] = {}
        self._next_token = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def keep(self, beat: Callable[[], None]) -> int:
        """Call ``beat`` at least once an interval (the first within one) until :meth:`release`."""
        self._ensure_started()
        with self._lock:
            self._next_token += 1
            self._beats[self._next_token] = beat
            return self._next_token

    def release(self, token: int) -> None:
        """Stop beating the batch :meth:`keep` returned ``token`` for."""
        # Waits only for beats that are running right now, never for the thread to wake up.
        with self._lock:
            self._beats.pop(token, None)

    @contextlib.contextmanager
    def beating(self, beat: Callable[[], None]) -> Iterator[HeartbeatThread]:
        """:meth:`keep` ``beat`` until the ``with`` block ends."""
        token = self.keep(beat)
        try:
            yield self
        finally:
            self.release(token)

    def stop(self) -> None:
        """End the thread and forget every batch (the worker is shutting down)."""
        with self._lock:
            self._beats.clear()
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
                for beat in list(self._beats.values()):
                    try:
                        beat()
                        self.beats += 1
                    except Exception as error:
                        log.warning(
                            "job heartbeat failed (will try again in %.0fs): %s", self._interval_s, error
                        )
