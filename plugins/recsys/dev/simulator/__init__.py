"""Simulated e-commerce browsing feed in the Coveo SIGIR eCom 2021 raw schema.

A development tool: the raw schema and the landing file names are production's
(`recsys.ingest`); production reaches the simulator only through
`recsys.ingest.simulate_missing_days`, when the settings say the feed is simulated.

Writes one landing CSV per UTC day with the statistical shape of the reference data
set (see DATA.md), from a known generative process, so the exact next-item
distribution (the oracle) is available as a ceiling for every model.
"""

from .cli import main
from .landing import (day_of_path, ensure_days, landing_path, read_day, split_browsing_csv,
                      write_day)
from .oracle import oracle_metrics, oracle_next_item_probs
from .presets import EPOCH, PRESETS, SCENARIOS, Preset
from .process import generate_day
from .stats import StatsAccumulator, summary_stats

__all__ = [
    "EPOCH", "PRESETS", "SCENARIOS", "Preset", "StatsAccumulator",
    "day_of_path", "ensure_days", "generate_day", "landing_path", "main", "oracle_metrics",
    "oracle_next_item_probs", "read_day", "split_browsing_csv", "summary_stats", "write_day",
]
