"""Quality gates: Evidently reports whose explicit tests decide whether a model ships."""

from recsys.gates.report import GateFailed, GateResult

__all__ = ["GateFailed", "GateResult"]
