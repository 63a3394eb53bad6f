"""Endpoint backends: the training image's ``serve`` locally, or a SageMaker endpoint."""

from __future__ import annotations

from recsys.endpoint.smoke import DeployFailed
from recsys.settings import Settings


def get_backend(settings: Settings):
    if settings.endpoint_backend == "sagemaker":
        from recsys.endpoint.sagemaker import SageMakerEndpoint

        return SageMakerEndpoint(settings)
    from recsys.endpoint.local import LocalEndpoint

    return LocalEndpoint(settings)


__all__ = ["DeployFailed", "get_backend"]
