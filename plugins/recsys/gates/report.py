"""Run an Evidently report, save it as HTML and JSON, and read its verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException
from evidently import Dataset, Report


class GateFailed(AirflowFailException):
    """A gate's tests failed; the message names every failed check. Not retried:
    the same data gives the same verdict."""


@dataclass
class GateResult:
    gate: str
    failed_checks: list[str]
    passed_checks: list[str]
    report_dir: Path
    summary: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed_checks

    def message(self) -> str:
        if self.passed:
            return f"{self.gate} gate passed ({len(self.passed_checks)} checks)"
        return f"{self.gate} gate failed: " + "; ".join(self.failed_checks)


def run_report(
    gate: str,
    metrics: list,
    current: Dataset,
    reference: Dataset | None,
    report_dir: Path,
    summary: dict,
) -> GateResult:
    snapshot = Report(metrics, include_tests=True).run(current, reference)
    report_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report_dir / f"{gate}_report.html"))
    snapshot.save_json(str(report_dir / f"{gate}_report.json"))
    failed, passed = [], []
    for test in snapshot.dict()["tests"]:
        line = f"{test['name']} ({test['description']})"
        (passed if test["status"] == "SUCCESS" else failed).append(line)
    return GateResult(gate, failed, passed, report_dir, summary)
