"""The container contract: where things live under the root, the hyperparameters,
and how a failed job reports itself.

The layout is SageMaker's (`/opt/ml/...`); `RECSYS_ML_ROOT` moves the whole tree
so the same code runs as a plain local process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

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

    @property
    def checkpoints(self) -> Path:
        """The last finished epoch, for a restarted job to resume from (SageMaker syncs this
        folder with the job's CheckpointConfig; the local backend keeps it across retries)."""
        return self.root / "checkpoints"


# Keys SageMaker itself may add to hyperparameters.json; they are not ours to judge.
_PLATFORM_PREFIX = "sagemaker_"


class Hyperparameters(BaseModel):
    """The job's hyperparameters, declared once: types, defaults, bounds and meaning.

    SageMaker delivers every value as a string, so numeric strings are coerced
    ("5", " 5 ", "5.0" for an integer); plain JSON numbers are accepted too for
    hand-written files. Booleans are never numbers here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model_version: str = Field(
        min_length=1,
        max_length=256,
        description="name that travels with the model, e.g. the training job name",
    )
    epochs: int = Field(20, ge=1, description="maximum training epochs (early stopping usually ends sooner)")
    batch_size: int = Field(256, ge=1, description="sequences per gradient step")
    embedding_dim: int = Field(64, ge=1, description="item embedding size")
    hidden_units: int = Field(128, ge=1, description="GRU state size")
    successors: int = Field(64, ge=1, le=1000, description="next items kept per item in the transition table")
    learning_rate: float = Field(0.002, gt=0, description="Adam learning rate")
    max_len: int = Field(50, ge=1, description="most recent items the model reads")
    top_k: int = Field(20, ge=1, le=100, description="k of HR@k / MRR@k")
    seed: int = Field(7, ge=0, le=2**32 - 1, description="seeds initialisation and shuffling")
    min_item_count: int = Field(1, ge=1, description="train occurrences an item needs to enter the vocabulary")
    patience: int = Field(
        2, ge=0, description="epochs without validation MRR@k gain before stopping; 0 never stops early"
    )
    precision: Literal["float32", "mixed_float16"] = Field(
        "float32",
        description="mixed_float16: the embedding, GRU and catalogue softmax compute in float16 (tensor cores "
        "on a GPU), the mixture and the loss in float32, with loss scaling",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _strings_and_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # bool is an int in Python but never a meaningful value here.
        if isinstance(value, bool):
            raise PydanticCustomError("bool_not_accepted", "booleans are not accepted")
        if not isinstance(value, str):
            return value
        value = value.strip()
        if cls.model_fields[info.field_name].annotation is int:
            # Some tools serialise every number as a float: "5.0" and "1e3" are integers too.
            try:
                return int(value)
            except ValueError:
                pass
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
        return value

    @field_validator("model_version")
    @classmethod
    def _model_version(cls, value: str) -> str:
        if any(c in value for c in "/\\\n\r\t"):
            raise PydanticCustomError("model_version_characters", "slashes or control characters")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def parse_hyperparameters(raw: Any) -> Hyperparameters:
    """Validate the hyperparameters mapping into typed values.

    Raises TrainingError with one sentence per problem, each naming its hyperparameter.
    """
    if not isinstance(raw, dict):
        raise TrainingError(
            f"hyperparameters.json must hold a JSON object, got {type(raw).__name__}."
        )
    ours = {key: value for key, value in raw.items() if not str(key).startswith(_PLATFORM_PREFIX)}
    try:
        return Hyperparameters.model_validate(ours)
    except ValidationError as exc:
        raise TrainingError(_describe(exc.errors(), ours)) from None


def _describe(errors: list[Any], raw: dict[str, Any]) -> str:
    """Pydantic's errors as sentences an operator can act on, unknown keys first."""
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    sentences = []
    if unknown:
        sentences.append(
            f"Unknown hyperparameter(s): {', '.join(unknown)}. "
            f"Accepted hyperparameters: {', '.join(Hyperparameters.model_fields)}."
        )
    for error in errors:
        if error["type"] != "extra_forbidden":
            name = str(error["loc"][0])
            sentences.append(_sentence(name, error["type"], error.get("ctx") or {}, raw.get(name)))
    return " ".join(dict.fromkeys(sentences))


def _sentence(name: str, kind: str, ctx: dict[str, Any], value: Any) -> str:
    if name == "model_version":
        if kind == "missing":
            return (
                "Missing required hyperparameter model_version "
                "(the name that travels with the trained model, e.g. the training job name)."
            )
        if isinstance(value, str) and value.strip():
            return (
                f"Hyperparameter model_version {value!r} must be at most 256 characters "
                "without slashes or control characters."
            )
        return f"Hyperparameter model_version must be a non-empty string, got {value!r}."
    if name == "learning_rate":
        return f"Hyperparameter learning_rate must be a positive number, got {value!r}."
    if kind == "greater_than_equal":
        return f"Hyperparameter {name} must be >= {ctx['ge']}, got {value!r}."
    if kind == "less_than_equal":
        return f"Hyperparameter {name} must be <= {ctx['le']}, got {value!r}."
    word = "an integer" if Hyperparameters.model_fields[name].annotation is int else "a number"
    return f"Hyperparameter {name} must be {word}, got {value!r}."


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
