"""``python -m benchmarks`` (``make bench``): run the throughput benchmark."""

import sys

from benchmarks.throughput import main

sys.exit(main())
