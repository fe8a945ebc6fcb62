"""``python -m benchmarks.chaos`` (``make chaos``)."""

import sys

from benchmarks.chaos.run import main

sys.exit(main())
