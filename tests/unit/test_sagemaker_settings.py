"""The SageMaker backends' settings: defaults, and errors that name the variable."""

from __future__ import annotations

import re

import pytest

from recsys.settings import Settings, SettingsError

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:1.0.0"


def test_defaults():
    settings = Settings.from_env({})
    assert settings.sagemaker_volume_gb == 30
    assert settings.sagemaker_spot is False
    assert settings.sagemaker_max_wait_s == 0  # twice the max run time, see training_config
    assert settings.sagemaker_rollback_alarm_names == []
    assert settings.sagemaker_keep_versions == 3
    assert settings.sagemaker_serving_image == ""


def test_serving_image_defaults_to_the_training_image():
    assert Settings.from_env({"RECSYS_SAGEMAKER_IMAGE_URI": IMAGE}).sagemaker_serving_image == IMAGE
    settings = Settings.from_env({"RECSYS_SAGEMAKER_IMAGE_URI": IMAGE, "RECSYS_SAGEMAKER_SERVING_IMAGE_URI": f"{IMAGE}-cpu"})
    assert settings.sagemaker_serving_image == f"{IMAGE}-cpu"


def test_rollback_alarms_are_comma_separated():
    settings = Settings.from_env({"RECSYS_SAGEMAKER_ROLLBACK_ALARMS": " recsys-5xx ,recsys-latency,, "})
    assert settings.sagemaker_rollback_alarm_names == ["recsys-5xx", "recsys-latency"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RECSYS_SAGEMAKER_VOLUME_GB", "0", "RECSYS_SAGEMAKER_VOLUME_GB=0 is outside [1, 16384]"),
    ("RECSYS_SAGEMAKER_SPOT", "maybe", "RECSYS_SAGEMAKER_SPOT='maybe' is not a boolean"),
    ("RECSYS_SAGEMAKER_MAX_WAIT_S", "soon", "RECSYS_SAGEMAKER_MAX_WAIT_S='soon' is not a"),
    ("RECSYS_SAGEMAKER_KEEP_VERSIONS", "0", "RECSYS_SAGEMAKER_KEEP_VERSIONS=0 is outside [1, 100]"),
])
def test_a_wrong_value_names_its_variable(name, value, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({name: value})
