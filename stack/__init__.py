"""The local stack: everything that runs sentiq on one machine without containers.

A private ``redis-server`` (:mod:`stack.embedded_redis`), real ``python -m worker`` subprocesses
(:mod:`stack.worker_processes`), the clean-up of one queue's keys (:mod:`stack.namespace`) and
the demo that strings them together (``python -m stack.demo``, ``make demo``). The demo, the
tests, the benchmarks and the chaos run all start their processes through here. Torch-free: it
only starts processes.
"""
