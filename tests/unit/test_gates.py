"""Gates: Evidently reports whose explicit tests block bad data and worse models."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from recsys import evaluation
from recsys.dev import simulator
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


def test_a_day_with_a_tenth_of_the_usual_traffic_fails_the_volume_check(tmp_path, reference):
    """Shares can look normal on a partial day: the volume against the champion's days says it is not."""
    last = _sessions(DAYS[4])
    partial = last.sample(frac=0.1, random_state=0)
    result = data_gate.evaluate(_window(partial), reference, DAYS[3], max_drift=1.0, max_new_sku_share=1.0,
                                report_dir=tmp_path)
    assert not result.passed
    assert "Row count" in result.message() or "RowCount" in result.message(), result.message()
    assert result.summary["volume_ratio"] < 0.2
    normal = data_gate.evaluate(_window(last), reference, DAYS[3], max_drift=1.0, max_new_sku_share=1.0,
                                report_dir=tmp_path)
    assert normal.passed, normal.message()
    assert 0.5 < normal.summary["volume_ratio"] < 2.0


def _chain_sessions(n: int, seed: int, day: str) -> pd.DataFrame:
    """Sessions over 50 items that mostly step along a chain i -> i+1: a last-item
    transition table predicts them well, popularity does not."""
    rng = np.random.default_rng(seed)
    sessions = []
    for number in range(n):
        item, items = int(rng.integers(50)), []
        for _ in range(int(rng.integers(2, 7))):
            items.append(f"i{item:02d}")
            item = (item + 1) % 50 if rng.random() < 0.8 else int(rng.integers(50))
        sessions.append((f"{day}-{number}", day, items))
    return pd.DataFrame(sessions, columns=["session_id", "session_date", "items"])


@pytest.fixture(scope="module")
def holdout():
    train = pd.concat([_chain_sessions(300, seed, f"2026-03-0{seed}") for seed in (1, 2, 3)], ignore_index=True)
    return train, _chain_sessions(300, 9, "2026-03-05")


def _predictions(test: pd.DataFrame, challenger, champion=None) -> pd.DataFrame:
    """The training job's predictions file for ranks given per example (0 = a miss)."""
    examples = evaluation.examples(test)
    as_column = lambda ranks: pd.array([r if r else None for r in ranks], dtype="Int32")  # noqa: E731
    return pd.DataFrame({
        "session_id": examples["session_id"], "position": examples["position"], "target": examples["target"],
        "challenger_rank": as_column(challenger),
        "baseline_rank": pd.array([None] * len(examples), dtype="Int32"),
        "champion_rank": as_column(champion if champion is not None else [0] * len(examples)),
    })


def _n(test: pd.DataFrame) -> int:
    return len(evaluation.examples(test))


def test_model_gate_finds_the_strongest_baseline_and_passes_a_better_challenger(tmp_path, holdout):
    train, test = holdout
    result = model_gate.evaluate(_predictions(test, [1] * _n(test)), train, test, k=20, report_dir=tmp_path)
    assert result.passed, result.message()
    assert result.summary["strongest_baseline"] == "transitions"
    assert result.summary["compared_against"] == "strongest baseline"
    # the chain makes the transition table strong and popularity weak
    assert result.summary["transitions_mrr_at_20"] > 0.6 > 0.2 > result.summary["most_popular_mrr_at_20"]
    low, high = result.summary["transitions_mrr_at_20_low"], result.summary["transitions_mrr_at_20_high"]
    assert low < result.summary["transitions_mrr_at_20"] < high
    assert (tmp_path / "model_report.html").stat().st_size > 0


def test_model_gate_blocks_a_challenger_that_loses_to_a_count_table(tmp_path, holdout):
    train, test = holdout
    baseline = evaluation.Transitions.fit(train)
    examples = evaluation.examples(test)
    as_good_as_the_table = evaluation.ranks_of(evaluation.recommend_all(baseline, examples["prefix"], 20),
                                               examples["target"])
    result = model_gate.evaluate(_predictions(test, as_good_as_the_table), train, test, k=20, report_dir=tmp_path)
    assert not result.passed
    assert "does not beat the strongest baseline, transitions" in result.message()


def test_model_gate_blocks_a_challenger_significantly_worse_than_the_champion(tmp_path, holdout):
    train, test = holdout
    n = _n(test)
    result = model_gate.evaluate(_predictions(test, [1, 2] * (n // 2) + [1] * (n % 2), [1] * n), train, test, k=20,
                                 report_dir=tmp_path)
    assert not result.passed
    assert result.summary["compared_against"] == "strongest baseline and champion"
    assert "significantly worse than the champion" in result.message()
    assert result.summary["challenger_minus_champion_mrr_at_20_high"] < 0


def test_model_gate_tolerates_a_difference_within_the_noise(tmp_path, holdout):
    train, test = holdout
    n = _n(test)
    result = model_gate.evaluate(_predictions(test, [0] + [1] * (n - 1), [1] * n), train, test, k=20,
                                 report_dir=tmp_path)
    assert result.passed, result.message()
    assert result.summary["challenger_minus_champion_mrr_at_20"] < 0 <= result.summary["challenger_minus_champion_mrr_at_20_high"]


def test_model_gate_refuses_predictions_of_another_holdout(tmp_path, holdout):
    train, test = holdout
    predictions = _predictions(test, [1] * _n(test)).iloc[5:]
    with pytest.raises(model_gate.PredictionsMismatch, match="5 of .* holdout examples have no prediction"):
        model_gate.evaluate(predictions, train, test, k=20, report_dir=tmp_path)
