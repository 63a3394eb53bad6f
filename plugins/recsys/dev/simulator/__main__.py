"""`python -m recsys.dev.simulator` runs the `recsys-sim` command line."""

from .cli import main

raise SystemExit(main())
