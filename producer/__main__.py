"""``python -m producer``: see :mod:`producer.cli`."""

from producer.cli import main

raise SystemExit(main())
