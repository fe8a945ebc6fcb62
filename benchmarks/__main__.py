"""``python -m benchmarks`` (``make bench``): the throughput benchmark, see :mod:`benchmarks.suite`."""

import sys

from benchmarks.suite import main

sys.exit(main())
