"""Shared fixtures: two real training runs on synthetic chain data.

`first_run` trains in-process; `second_run` runs the `train` console script as
a subprocess on the same data with the first model as its champion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import recsys_model  # noqa: F401  (installed: pip install -e training_image[cpu,test])
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "training_image"))

from image_synthetic import FAST_HYPERPARAMETERS, make_root  # noqa: E402

from recsys_model import train  # noqa: E402
from recsys_model.bundle import pack  # noqa: E402
from recsys_model.contract import ROOT_ENV  # noqa: E402


def console_script(name: str) -> str:
    """The installed console script, next to this interpreter or on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"console script {name!r} is not installed: pip install -e training_image[cpu,test]")
    return found


def train_in_process(root: Path) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ROOT_ENV, str(root))
        return train.main([])


@pytest.fixture(scope="session")
def first_run(tmp_path_factory) -> Path:
    root = make_root(tmp_path_factory.mktemp("first"), {"model_version": "v1", **FAST_HYPERPARAMETERS})
    assert train_in_process(root) == 0, (root / "output" / "failure").read_text()
    return root


@pytest.fixture(scope="session")
def second_run(first_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    hyperparameters = {"model_version": "v2", **FAST_HYPERPARAMETERS, "seed": "11"}
    root = make_root(tmp_path_factory.mktemp("second"), hyperparameters)
    champion = root / "input" / "data" / "champion"
    champion.mkdir(parents=True)
    pack(first_run / "model", champion / "model.tar.gz")
    completed = subprocess.run(
        [console_script("train")],
        env={**os.environ, ROOT_ENV: str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return root, completed
