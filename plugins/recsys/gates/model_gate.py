"""Model gate: the challenger against the champion on the same holdout.

Both models were scored on this window's test day by the training job (see
test_predictions.parquet). The challenger must beat the most-popular baseline,
and may not fall more than ``max_regression`` (relative) below the champion on
HR@k and MRR@k. With no champion yet, the baseline is the bar.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.metrics import MeanValue
from evidently.tests import gt, gte

from recsys.gates.report import GateResult, run_report

MODELS = ("challenger", "baseline", "champion")


def per_example(predictions: pd.DataFrame) -> pd.DataFrame:
    """Hit and reciprocal rank per test example, for each model that was scored."""
    columns = {}
    for model in MODELS:
        rank = predictions[f"{model}_rank"].astype("Float64")
        if model == "champion" and rank.isna().all():
            continue
        columns[f"{model}_hit"] = rank.notna().astype(float)
        columns[f"{model}_rr"] = (1.0 / rank).fillna(0.0).astype(float)
    return pd.DataFrame(columns)


def evaluate(predictions: pd.DataFrame, *, k: int, max_regression: float, report_dir: Path) -> GateResult:
    table = per_example(predictions)
    means = table.mean().to_dict()
    checks = [
        MeanValue(column="challenger_hit", tests=[gt(means["baseline_hit"])]),
        MeanValue(column="challenger_rr", tests=[gt(means["baseline_rr"])]),
    ]
    has_champion = "champion_hit" in table
    if has_champion:
        floor = 1.0 - max_regression
        checks += [
            MeanValue(column="challenger_hit", tests=[gte(means["champion_hit"] * floor)]),
            MeanValue(column="challenger_rr", tests=[gte(means["champion_rr"] * floor)]),
        ]
    checks += [MeanValue(column=c) for c in table.columns if not c.startswith("challenger")]
    summary = {
        "k": k,
        "n_test_examples": len(table),
        "compared_against": "champion" if has_champion else "most-popular baseline",
        **{f"{name}_hr_at_{k}": means[f"{name}_hit"] for name in MODELS if f"{name}_hit" in means},
        **{f"{name}_mrr_at_{k}": means[f"{name}_rr"] for name in MODELS if f"{name}_rr" in means},
    }
    dataset = Dataset.from_pandas(table, data_definition=DataDefinition(numerical_columns=list(table.columns)))
    return run_report("model", checks, dataset, None, report_dir, summary)
