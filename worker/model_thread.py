"""The thread a worker's forward passes run on while its main thread talks to Redis.

On a GPU the passes leave the CPU free, and a worker that waited for them before starting the
next batch, and published each batch before starting the passes of the next, kept the device
idle for as long as its queue path took (issue 9: C/B 0.46 on an H200). With the passes on this
thread, the worker starts the next batch and publishes the last one while the device works.

One thread at a time (a thread started after :meth:`ModelThread.stop` first waits for the stopped
one), so batches are classified one at a time and in the order they were started, exactly as
without it. It is a daemon thread: a cold shutdown does not wait for a batch in its passes (RQ's
abandoned-job recovery runs that batch again).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

_T = TypeVar("_T")
_Calls = queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]


class ModelThread:
    """Runs submitted calls one at a time, in order, on a single daemon thread."""

    def __init__(self, name: str = "sentiq-model") -> None:
        self._name = name
        self._calls: _Calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The thread stop() ended, still running the calls submitted before: the next one waits for it.
        self._stopped: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, call: Callable[[], _T]) -> Future[_T]:
        """Run ``call`` after every call submitted before it; its result or exception in the future."""
        future: Future[_T] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._calls, self._stopped), name=self._name, daemon=True
                )
                self._thread.start()
            self._calls.put((call, future))
        return future

    def stop(self) -> None:
        """End the thread once the calls already submitted have run, without waiting for them."""
        with self._lock:
            if self._thread is not None:
                self._calls.put(None)
                # A thread started later takes calls from its own queue, after this one has ended:
                # sharing this queue, it would run a call submitted before the stop while this
                # thread still runs an earlier one.
                self._stopped, self._thread = self._thread, None
                self._calls = queue.SimpleQueue()

    @staticmethod
    def _run(calls: _Calls, after: threading.Thread | None) -> None:
        if after is not None:
            after.join()
        while (item := calls.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as error:  # handed to the caller, whatever it is
                future.set_exception(error)
            else:
                future.set_result(result)
