"""Profile a Python process's main thread with cProfile from SIGUSR2 on, when asked to.

When ``SENTIQ_BENCH_PROFILE`` names an output file, SIGUSR2 starts the profiler (so start-up,
model loading and warm-up stay out of it) and the profile is written when the process exits
normally (a worker does on SIGTERM, after its warm shutdown). Only
:mod:`benchmarks.profile_queue` puts this folder on a worker's ``PYTHONPATH``: the worker's own
code stays untouched.
"""

import os

_output = os.environ.get("SENTIQ_BENCH_PROFILE")
if _output:
    import atexit
    import cProfile
    import signal

    _profile = cProfile.Profile()

    def _start(_signum: int, _frame: object) -> None:
        # Signal handlers run in the main thread, which is the one cProfile then follows.
        _profile.enable()

    def _dump() -> None:
        _profile.disable()
        _profile.dump_stats(str(_output))

    signal.signal(signal.SIGUSR2, _start)
    atexit.register(_dump)
