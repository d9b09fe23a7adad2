"""``python -m bench.serve``: the serving benchmark."""

from bench.serve.report import main

raise SystemExit(main())
