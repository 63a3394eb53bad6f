"""Checks a freshly deployed model must pass before it counts as deployed."""

from __future__ import annotations


class DeployFailed(RuntimeError):
    """The new model is not serving; the previous one still is."""


def check_response(body: dict, model_version: str, n_sessions: int, k: int) -> None:
    """The endpoint's JSON must come from the new model and have k items per session."""
    if body.get("model_version") != model_version:
        raise DeployFailed(f"smoke test answered by model {body.get('model_version')!r}, expected {model_version!r}")
    recommendations = body.get("recommendations")
    if not isinstance(recommendations, list) or len(recommendations) != n_sessions:
        raise DeployFailed(f"smoke test: expected {n_sessions} recommendation lists, got {recommendations!r:.200}")
    for items in recommendations:
        if len(items) != k or not all({"sku", "score"} <= set(item) for item in items):
            raise DeployFailed(f"smoke test: expected {k} items with sku and score, got {items!r:.200}")
