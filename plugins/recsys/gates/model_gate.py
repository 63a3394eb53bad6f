"""Model gate: the challenger against the strongest simple baseline and the champion,
on the same holdout day, with bootstrap intervals over sessions.

The training job ranked the holdout's next-item examples with the challenger (and the
champion, when it had one to compare with): test_predictions.parquet. Here the
baselines of ``recsys.evaluation`` are fitted on the same train split and rank the same
examples. The challenger must beat the strongest of them (paired MRR@k difference
above zero), and must not be significantly worse than the champion: the upper end of
the 95 % paired-bootstrap interval of its MRR@k difference must not fall below zero.

The Evidently report is built on the bootstrap replicates, so it shows every model's
interval and the paired differences the tests decide on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.metrics import MeanValue, QuantileValue
from evidently.tests import gt, gte

from recsys import evaluation
from recsys.gates.report import GateResult, run_report

BEATS_BASELINE = "challenger_minus_strongest_baseline_mrr"
VS_CHAMPION = "challenger_minus_champion_mrr"


class PredictionsMismatch(ValueError):
    """The training job's predictions do not cover this holdout's examples."""


def rank_examples(predictions: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, k: int):
    """Every model's ranks on the holdout's examples: challenger (and champion) from the job's
    predictions, the baselines fitted here on the train split."""
    examples = evaluation.examples(test)
    merged = examples.merge(
        predictions[["session_id", "position", "challenger_rank", "champion_rank"]].astype({"session_id": str}),
        on=["session_id", "position"], how="left", validate="one_to_one", indicator=True,
    )
    unmatched = int((merged["_merge"] != "both").sum())
    if unmatched:
        raise PredictionsMismatch(
            f"{unmatched} of {len(examples)} holdout examples have no prediction from the training job: "
            f"it did not score this run's test split"
        )
    ranks = {"challenger": evaluation.ranks_from_predictions(merged["challenger_rank"])}
    if merged["champion_rank"].notna().any():
        ranks["champion"] = evaluation.ranks_from_predictions(merged["champion_rank"])
    baselines = evaluation.fit_baselines(train)
    for baseline in baselines:
        ranks[baseline.name] = evaluation.ranks_of(
            evaluation.recommend_all(baseline, examples["prefix"], k), examples["target"]
        )
    return evaluation.Comparison.of(examples, ranks, k, train=train), [b.name for b in baselines]


def evaluate(predictions: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, *, k: int,
             report_dir: Path) -> GateResult:
    comparison, baselines = rank_examples(predictions, train, test, k)
    strongest = comparison.strongest(baselines)
    has_champion = "champion" in comparison.ranks

    replicates = {f"{model}_{name}": comparison.replicates(model, name)
                  for model in comparison.ranks for name in ("hr", "mrr")}
    replicates[BEATS_BASELINE] = comparison.replicates("challenger", "mrr", against=strongest)
    checks = [MeanValue(column=BEATS_BASELINE, tests=[gt(0)])]
    if has_champion:
        replicates[VS_CHAMPION] = comparison.replicates("challenger", "mrr", against="champion")
        checks.append(QuantileValue(column=VS_CHAMPION, quantile=0.975, tests=[gte(0)]))
    for column in replicates:  # every interval, for the report
        checks += [QuantileValue(column=column, quantile=0.025), QuantileValue(column=column, quantile=0.975)]
    table = pd.DataFrame(replicates)

    beat = comparison.summary("challenger", "mrr", against=strongest)
    summary = {
        "k": k,
        "n_test_examples": len(comparison.examples),
        "compared_against": "strongest baseline and champion" if has_champion else "strongest baseline",
        "strongest_baseline": strongest,
        f"challenger_minus_{strongest}_mrr_at_{k}": beat["mean"],
        f"challenger_minus_{strongest}_mrr_at_{k}_low": beat["low"],
        f"challenger_minus_{strongest}_mrr_at_{k}_high": beat["high"],
    }
    for model in comparison.ranks:
        for name in ("hr", "mrr"):
            s = comparison.summary(model, name)
            summary |= {f"{model}_{name}_at_{k}": s["mean"], f"{model}_{name}_at_{k}_low": s["low"],
                        f"{model}_{name}_at_{k}_high": s["high"]}
    if has_champion:
        versus = comparison.summary("challenger", "mrr", against="champion")
        summary |= {f"challenger_minus_champion_mrr_at_{k}": versus["mean"],
                    f"challenger_minus_champion_mrr_at_{k}_low": versus["low"],
                    f"challenger_minus_champion_mrr_at_{k}_high": versus["high"]}

    dataset = Dataset.from_pandas(table, data_definition=DataDefinition(numerical_columns=list(table.columns)))
    result = run_report("model", checks, dataset, None, report_dir, summary)
    result.failed_checks = [_plainly(line, summary, strongest, k) for line in result.failed_checks]
    return result


def _plainly(line: str, summary: dict, strongest: str, k: int) -> str:
    """A failed test, said as the operator needs to read it."""
    c = summary[f"challenger_mrr_at_{k}"]
    if BEATS_BASELINE in line:
        d = f"challenger_minus_{strongest}_mrr_at_{k}"
        return (f"the challenger (MRR@{k} {c:.4f}) does not beat the strongest baseline, {strongest} "
                f"(MRR@{k} {summary[f'{strongest}_mrr_at_{k}']:.4f}; paired difference {summary[d]:+.4f}, "
                f"95% CI [{summary[d + '_low']:+.4f}, {summary[d + '_high']:+.4f}])")
    if VS_CHAMPION in line:
        d = f"challenger_minus_champion_mrr_at_{k}"
        return (f"the challenger (MRR@{k} {c:.4f}) is significantly worse than the champion "
                f"(MRR@{k} {summary[f'champion_mrr_at_{k}']:.4f}; paired difference {summary[d]:+.4f}, "
                f"95% CI [{summary[d + '_low']:+.4f}, {summary[d + '_high']:+.4f}])")
    return line
