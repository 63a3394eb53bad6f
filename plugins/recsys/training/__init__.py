"""Training backends: the training image run locally, or as a SageMaker training job."""

from __future__ import annotations

from recsys.settings import Settings
from recsys.training.job import Started, TrainingBackend, TrainingFailed, TrainingJob, TrainingResult


def get_backend(settings: Settings) -> TrainingBackend:
    if settings.training_backend == "sagemaker":
        from recsys.training.sagemaker import SageMakerTraining

        return SageMakerTraining(settings)
    from recsys.training.local import LocalTraining

    return LocalTraining(settings)


__all__ = ["Started", "TrainingBackend", "TrainingFailed", "TrainingJob", "TrainingResult", "get_backend"]
