"""Development tools, apart from the production package: the simulated feed
(`recsys.dev.simulator`), `make demo` (`recsys.dev.demo`) and `make bench`
(`recsys.dev.bench`). They import production modules; production imports nothing
from here except through `recsys.ingest.simulate_missing_days`, the local-feed hook.
"""
