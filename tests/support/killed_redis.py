"""A test's own append-only Redis, SIGKILLed once at a chosen moment and restarted with its data.

Shared by the adversarial tests of the batched dequeue, start and finish
(``tests/worker/test_rq_internals_adversarial.py``, ``tests/worker/test_dequeue_adversarial.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from stack.embedded_redis import EmbeddedRedis

#: How long the test's Redis stays dead once killed.
OUTAGE_S = 1.5


class Outage:
    """The test's own append-only Redis: killed once at a chosen moment, back ``OUTAGE_S`` later."""

    def __init__(self) -> None:
        self.server = EmbeddedRedis(appendonly=True).start()
        self.kills = 0
        self.restarted = threading.Event()
        self._restarts: list[threading.Thread] = []

    def kill_once(self) -> None:
        if self.kills:
            return
        self.kills += 1
        self.server.kill()
        restart = threading.Thread(target=self._restart, daemon=True)
        restart.start()
        self._restarts.append(restart)

    def _restart(self) -> None:
        time.sleep(OUTAGE_S)
        self.server.start()
        self.restarted.set()

    def close(self) -> None:
        for restart in self._restarts:
            restart.join(timeout=30)
        self.server.stop()


@pytest.fixture
def outage() -> Iterator[Outage]:
    dying = Outage()
    try:
        yield dying
    finally:
        dying.close()
