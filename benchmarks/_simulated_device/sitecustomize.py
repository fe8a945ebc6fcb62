"""Give a worker process the simulated accelerator of :mod:`benchmarks.simulated_device`.

Only that benchmark puts this folder (and the repository root) on a worker's ``PYTHONPATH``,
with ``SENTIQ_BENCH_SIMULATED_PASS_US`` set: the worker's own code stays untouched.
"""

import os

_pass_us = os.environ.get("SENTIQ_BENCH_SIMULATED_PASS_US")
if _pass_us:
    from benchmarks.simulated_device import simulate_device

    simulate_device(float(_pass_us))
