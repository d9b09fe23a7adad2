"""``python -m bench.anonymize``: see :mod:`bench.anonymize.run`."""

from bench.anonymize.run import main

raise SystemExit(main())
