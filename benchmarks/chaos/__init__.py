"""``make chaos`` (``python -m benchmarks.chaos``): reviews through workers while they and Redis are killed.

See :mod:`benchmarks.chaos.run` for what is killed when, and :mod:`benchmarks.chaos.report` for
the figures. The run writes ``bench-results/chaos/chaos.json``, ``chaos.md``, ``chaos.png`` and
every worker's log under ``logs/``; it exits 1 when a review was lost or answered twice.
"""
