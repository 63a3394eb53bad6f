"""Gates: Evidently reports whose explicit tests block bad data and worse models."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from recsys import simulator
from recsys.gates import data_gate, model_gate

DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(5)]


def _sessions(day: dt.date, scenario: str = "steady") -> pd.DataFrame:
    """Product-interaction sessions of one simulated day, as the export writes them."""
    raw = simulator.generate_day(day, preset="tiny", scenario=scenario)
    product = raw[(raw.event_type == "event_product") & raw.product_action.isin(["detail", "add", "purchase"])]
    items = product.sort_values("server_timestamp_epoch_ms").groupby("session_id_hash")["product_sku_hash"].agg(list)
    items = items[items.map(len) >= 2]
    return pd.DataFrame({"session_id": items.index, "session_date": day.isoformat(), "items": items.values})


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.concat([_sessions(day) for day in DAYS[:4]], ignore_index=True)


def _window(last_day: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([_sessions(day) for day in DAYS[1:4]] + [last_day], ignore_index=True)


def test_first_run_checks_quality_only(tmp_path, reference):
    result = data_gate.evaluate(reference, None, None, max_drift=0.2, max_new_sku_share=0.3, report_dir=tmp_path)
    assert result.passed, result.message()
    assert not any("Drift" in check for check in result.passed_checks)
    assert (tmp_path / "data_report.html").stat().st_size > 0 and (tmp_path / "data_report.json").exists()


def test_a_steady_day_passes_the_drift_gate(tmp_path, reference):
    current = _window(_sessions(DAYS[4]))
    result = data_gate.evaluate(current, reference, DAYS[3], max_drift=0.2, max_new_sku_share=0.3, report_dir=tmp_path)
    assert result.passed, result.message()
    assert result.summary["compared_days"] == [DAYS[4].isoformat()]


@pytest.mark.parametrize(("scenario", "failed"), [("popularity_shift", "Value Drift"), ("catalog_churn", "is_new_sku")])
def test_a_shifted_day_fails_the_gate_naming_the_check(tmp_path, reference, scenario, failed):
    current = _window(_sessions(DAYS[4], scenario))
    result = data_gate.evaluate(current, reference, DAYS[3], max_drift=0.2, max_new_sku_share=0.3, report_dir=tmp_path)
    assert not result.passed
    assert failed in result.message()


def _predictions(challenger_hits: float, champion_hits: float | None, n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)

    def ranks(rate):
        return pd.array(np.where(rng.random(n) < rate, rng.integers(1, 21, n), np.nan), dtype="Float64")

    return pd.DataFrame({
        "session_id": [f"s{i}" for i in range(n)], "position": 1, "target": "x",
        "challenger_rank": ranks(challenger_hits), "baseline_rank": ranks(0.2),
        "champion_rank": ranks(champion_hits) if champion_hits is not None else pd.array([None] * n, dtype="Float64"),
    })


def test_model_gate_without_champion_compares_with_the_baseline(tmp_path):
    assert model_gate.evaluate(_predictions(0.5, None), k=20, max_regression=0.05, report_dir=tmp_path).passed
    failed = model_gate.evaluate(_predictions(0.1, None), k=20, max_regression=0.05, report_dir=tmp_path)
    assert not failed.passed and "challenger_hit" in failed.message()


def test_model_gate_blocks_a_challenger_worse_than_the_champion(tmp_path):
    result = model_gate.evaluate(_predictions(0.4, 0.6), k=20, max_regression=0.05, report_dir=tmp_path)
    assert not result.passed
    assert result.summary["compared_against"] == "champion"
    assert (tmp_path / "model_report.html").exists()


def test_model_gate_tolerates_a_small_regression(tmp_path):
    result = model_gate.evaluate(_predictions(0.59, 0.6), k=20, max_regression=0.10, report_dir=tmp_path)
    assert result.passed, result.message()
