"""Job heartbeats on a background thread, so that how long a forward pass takes never matters.

RQ takes a started job whose heartbeat expired for abandoned and runs it again. A worker that only
refreshed heartbeats between passes had its live jobs re-queued whenever one pass outlasted the
heartbeat TTL. The thread below refreshes them every third of the TTL for as long as a batch runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class HeartbeatThread:
    """Calls ``beat`` every ``interval_s`` seconds until the ``with`` block ends.

    A failing beat (Redis away, for instance) is logged and tried again at the next interval; the
    thread never ends the batch it keeps alive.
    """

    def __init__(self, beat: Callable[[], None], interval_s: float, name: str = "sentiq-heartbeat") -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._beat = beat
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.beats = 0

    def __enter__(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat()
                self.beats += 1
            except Exception as error:
                log.warning("job heartbeat failed (will try again in %.0fs): %s", self._interval_s, error)
