"""The container contract: where things live under the root, the hyperparameters,
and how a failed job reports itself.

The layout is SageMaker's (`/opt/ml/...`); `RECSYS_ML_ROOT` moves the whole tree
so the same code runs as a plain local process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT_ENV = "RECSYS_ML_ROOT"
DEFAULT_ROOT = "/opt/ml"

REQUIRED_CHANNELS = ("train", "validation", "test")
CHAMPION_CHANNEL = "champion"


class TrainingError(Exception):
    """A problem with the job's inputs; its message is shown to the operator as is."""


def ml_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


@dataclasses.dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def from_env(cls) -> "Paths":
        return cls(ml_root())

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    model_version: str
    epochs: int = 5
    batch_size: int = 256
    embedding_dim: int = 64
    hidden_units: int = 128
    learning_rate: float = 0.002
    max_len: int = 50
    top_k: int = 20
    seed: int = 7
    min_item_count: int = 1
    patience: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Smallest accepted value of each numeric hyperparameter.
_MINIMUMS: dict[str, float] = {
    "epochs": 1,
    "batch_size": 1,
    "embedding_dim": 1,
    "hidden_units": 1,
    "max_len": 1,
    "top_k": 1,
    "min_item_count": 1,
    "patience": 0,
}

# Keys SageMaker itself may add to hyperparameters.json; they are not ours to judge.
_PLATFORM_PREFIX = "sagemaker_"


def parse_hyperparameters(raw: Any) -> Hyperparameters:
    """Turn the hyperparameters mapping into typed values.

    SageMaker delivers every value as a string, so strings are parsed; plain JSON
    numbers are accepted too for hand-written files.
    """
    if not isinstance(raw, dict):
        raise TrainingError(
            f"hyperparameters.json must hold a JSON object, got {type(raw).__name__}."
        )
    fields = {f.name: f for f in dataclasses.fields(Hyperparameters)}
    unknown = sorted(k for k in raw if k not in fields and not k.startswith(_PLATFORM_PREFIX))
    if unknown:
        raise TrainingError(
            f"Unknown hyperparameter(s): {', '.join(unknown)}. "
            f"Accepted hyperparameters: {', '.join(fields)}."
        )

    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in raw:
            continue
        value = raw[name]
        if name == "model_version":
            values[name] = _parse_model_version(value)
        elif isinstance(field.default, float):
            values[name] = _parse_number(name, value, float)
        else:
            values[name] = _parse_number(name, value, int)

    if "model_version" not in values:
        raise TrainingError(
            "Missing required hyperparameter model_version "
            "(the name that travels with the trained model, e.g. the training job name)."
        )
    learning_rate = values.get("learning_rate", 1.0)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise TrainingError(
            f"Hyperparameter learning_rate must be a positive number, got {raw['learning_rate']!r}."
        )
    for name, minimum in _MINIMUMS.items():
        if name in values and values[name] < minimum:
            raise TrainingError(
                f"Hyperparameter {name} must be >= {minimum:g}, got {values[name]}."
            )
    return Hyperparameters(**values)


def _parse_model_version(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TrainingError(
            f"Hyperparameter model_version must be a non-empty string, got {value!r}."
        )
    if len(value) > 256 or any(c in value for c in "/\\\n\r\t"):
        raise TrainingError(
            f"Hyperparameter model_version {value!r} must be at most 256 characters "
            "without slashes or control characters."
        )
    return value.strip()


def _parse_number(name: str, value: Any, kind: type) -> int | float:
    # bool is an int in Python but never a meaningful value here.
    if isinstance(value, bool):
        raise TrainingError(f"Hyperparameter {name} must be {_kind_word(kind)}, got {value!r}.")
    if isinstance(value, str):
        text = value.strip()
        try:
            return kind(text)
        except ValueError:
            # Allow "5.0" for integers: some tools serialise every number as a float.
            if kind is int:
                try:
                    as_float = float(text)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
            raise TrainingError(
                f"Hyperparameter {name} must be {_kind_word(kind)}, got {value!r}."
            ) from None
    if isinstance(value, (int, float)):
        if kind is int and not float(value).is_integer():
            raise TrainingError(f"Hyperparameter {name} must be an integer, got {value!r}.")
        return kind(value)
    raise TrainingError(f"Hyperparameter {name} must be {_kind_word(kind)}, got {value!r}.")


def _kind_word(kind: type) -> str:
    return "an integer" if kind is int else "a number"


def load_hyperparameters(paths: Paths) -> Hyperparameters:
    path = paths.hyperparameters
    if not path.is_file():
        raise TrainingError(
            f"Hyperparameters file {path} does not exist; it must hold at least "
            '{"model_version": "..."}.'
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"Hyperparameters file {path} is not valid JSON: {exc}.") from None
    return parse_hyperparameters(raw)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(paths: Paths, reason: str) -> None:
    """SageMaker shows the content of output/failure as the job's failure reason."""
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(reason.strip() + "\n", encoding="utf-8")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of each record."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Progress lines of this package go to stdout, where SageMaker collects them."""
    logger = logging.getLogger("recsys_model")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
