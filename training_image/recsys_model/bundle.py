"""The model directory: everything needed to serve or re-evaluate a trained model.

    model.keras       the network
    vocab.json        SKU <-> output index
    popularity.json   most popular train items, the fallback for cold sessions
    evaluation.json   the metrics of the run that produced it
    metadata.json     model_version, hyperparameters, trained_at, vocab size, metrics

metadata.json is always written last, so a directory without it is never taken
for a model (a crashed or still-running job leaves no valid-looking model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from .contract import TrainingError, write_json_atomic
from .data import Vocabulary

MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.json"
POPULARITY_FILE = "popularity.json"
EVALUATION_FILE = "evaluation.json"
METADATA_FILE = "metadata.json"
ARTIFACT_FILE = "model.tar.gz"

STAGING_DIR = ".incomplete"


@dataclasses.dataclass(frozen=True)
class Popularity:
    """Most popular train items with their counts; share = count / all train interactions."""

    items: list[tuple[str, int]]
    total_interactions: int

    @property
    def skus(self) -> list[str]:
        """The popularity ranking: what a model answers for a session without a known SKU."""
        return [sku for sku, _ in self.items]

    def share(self, count: int) -> float:
        return count / self.total_interactions if self.total_interactions else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total_interactions": self.total_interactions,
            "items": [
                {"sku": sku, "count": count, "share": self.share(count)} for sku, count in self.items
            ],
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "Popularity":
        items = [(entry["sku"], int(entry["count"])) for entry in payload["items"]]
        return cls(items=items, total_interactions=int(payload["total_interactions"]))


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    directory: Path
    vocab: Vocabulary
    popularity: Popularity
    metadata: dict[str, Any]
    scorer: Any  # model.Scorer; typed loosely so this module stays importable without TensorFlow

    @property
    def model_version(self) -> str:
        return self.metadata["model_version"]

    @property
    def max_len(self) -> int:
        return int(self.metadata["hyperparameters"]["max_len"])


def is_model_dir(path: Path) -> bool:
    return (path / METADATA_FILE).is_file()


def load_model_dir(path: Path) -> ModelBundle:
    """Load a complete model directory; raises ValueError naming what is wrong."""
    import keras  # deferred: TensorFlow start-up is slow and not needed to inspect a directory

    from .model import Scorer

    path = Path(path)
    if not is_model_dir(path):
        raise ValueError(f"{path} is not a model directory (no {METADATA_FILE})")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        vocab = Vocabulary.from_json(json.loads((path / VOCAB_FILE).read_text(encoding="utf-8")))
        popularity = Popularity.from_json(
            json.loads((path / POPULARITY_FILE).read_text(encoding="utf-8"))
        )
        network = keras.saving.load_model(path / MODEL_FILE, compile=False)
    except Exception as exc:  # a corrupt zip, bad JSON, a foreign Keras file...
        raise ValueError(f"model directory {path} is unreadable: {type(exc).__name__}: {exc}") from exc
    if "model_version" not in metadata or "hyperparameters" not in metadata:
        raise ValueError(f"{path / METADATA_FILE} lacks model_version or hyperparameters")
    scorer = Scorer(network)
    if scorer.vocab_size != vocab.size:
        raise ValueError(
            f"model directory {path}: network has {scorer.vocab_size} outputs "
            f"but vocab.json describes {vocab.size}"
        )
    return ModelBundle(path, vocab, popularity, metadata, scorer)


def clear_dir(path: Path) -> None:
    """Empty a directory in place (it may be a mount point, so it is not removed itself)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def staging_dir(model_dir: Path) -> Path:
    staging = model_dir / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, model_dir: Path, metadata: dict[str, Any]) -> None:
    """Move the staged files into the model directory, then write metadata.json last."""
    for child in sorted(staging.iterdir()):
        os.replace(child, model_dir / child.name)
    staging.rmdir()
    write_json_atomic(model_dir / METADATA_FILE, metadata)


def pack(model_dir: Path, artifact: Path) -> Path:
    """Tar the contents of a model directory the way SageMaker packs model.tar.gz."""
    # metadata.json goes last so whoever extracts in place sees the marker last too.
    children = sorted(
        (c for c in model_dir.iterdir() if c.name != STAGING_DIR),
        key=lambda c: (c.name == METADATA_FILE, c.name),
    )
    with tarfile.open(artifact, "w:gz") as tar:
        for child in children:
            tar.add(child, arcname=child.name)
    return artifact


def locate_champion(channel: Path, scratch: Path) -> Path | None:
    """The champion's model directory from its channel, extracting model.tar.gz if needed.

    Returns None when the channel is absent or empty (no champion to compare with).
    """
    if not channel.is_dir() or not any(channel.iterdir()):
        return None
    archives = sorted(channel.glob("*.tar.gz"))
    if archives:
        if len(archives) > 1 and not (channel / ARTIFACT_FILE).is_file():
            raise TrainingError(
                f"Champion channel {channel} holds several archives "
                f"({', '.join(a.name for a in archives)}); expected one {ARTIFACT_FILE}."
            )
        archive = channel / ARTIFACT_FILE if (channel / ARTIFACT_FILE).is_file() else archives[0]
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise TrainingError(f"Champion archive {archive} cannot be extracted: {exc}.") from None
        root = scratch
    else:
        root = channel
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if is_model_dir(candidate):
            return candidate
    raise TrainingError(
        f"Champion channel {channel} holds no model: expected {ARTIFACT_FILE} "
        f"or a model directory with {METADATA_FILE}."
    )
