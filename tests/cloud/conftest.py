"""One emulated AWS for every test here: Airflow keeps the S3 filesystem of a connection
once made (and its endpoint with it), so the emulator's address must not change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud.aws_emulator import EmulatedAWS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def emulated_aws(tmp_path_factory):
    with EmulatedAWS(str(REPO / ".venv-train" / "bin" / "train"), tmp_path_factory.mktemp("aws"),
                     serve_command=str(REPO / ".venv-train" / "bin" / "serve")) as emulated:
        yield emulated
