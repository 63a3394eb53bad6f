"""Endpoint backends: the training image's ``serve`` locally, or a SageMaker endpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from recsys.endpoint.smoke import DeployFailed
from recsys.settings import Settings


@dataclass(frozen=True)
class Deployment:
    """The endpoint now serving ``model_version``; ``previous`` is what it served before."""

    endpoint: str
    model_version: str
    previous: str | None

    def to_xcom(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    """A deploy under way: what finishing it needs (JSON-able, it travels through a deferral),
    and the trigger that waits until the endpoint has taken the new model up, or None where
    the backend has already finished."""

    state: dict
    trigger: Any = None


class EndpointBackend(Protocol):
    def deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int, *,
               tags: dict[str, str] | None = None) -> Deployment:
        """Serve the model, smoke-test it, and put the previous one back if it fails. ``tags``
        label what the deploy creates (the DAG run), where the backend creates anything."""

    def start_deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int,
                     *, tags: dict[str, str] | None = None) -> Rollout:
        """``deploy`` up to where it waits for the endpoint to take the model up."""

    def finish_deploy(self, state: dict, smoke_sessions: list[list[str]], k: int,
                      event: dict | None = None) -> Deployment:
        """The rest of ``deploy`` once the wait is over (``event``: what the trigger said)."""


def get_backend(settings: Settings) -> EndpointBackend:
    if settings.endpoint_backend == "sagemaker":
        from recsys.endpoint.sagemaker import SageMakerEndpoint

        return SageMakerEndpoint(settings)
    from recsys.endpoint.local import LocalEndpoint

    return LocalEndpoint(settings)


__all__ = ["DeployFailed", "Deployment", "EndpointBackend", "Rollout", "get_backend"]
