"""Synthetic browsing sessions with learnable structure, laid out as training channels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

N_ITEMS = 100


def sku(i: int) -> str:
    return f"sku-{i:03d}"


def successor(i: int) -> int:
    """Each product is almost always followed by one fixed other product."""
    return (i * 7 + 3) % N_ITEMS


def make_sessions(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    sessions = []
    for s in range(n):
        length = rng.randint(2, 9)
        current = rng.randrange(N_ITEMS)
        items = [current]
        for _ in range(length - 1):
            current = successor(current) if rng.random() < 0.9 else rng.randrange(N_ITEMS)
            items.append(current)
        sessions.append(
            {
                "session_id": f"{prefix}-{s}",
                "session_date": "2025-03-0%d" % (1 + s % 7),
                "items": [sku(i) for i in items],
            }
        )
    return sessions


def write_channel(directory: Path, sessions: list[dict], files: int = 1) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [("session_id", pa.string()), ("session_date", pa.string()), ("items", pa.list_(pa.string()))]
    )
    for part in range(files):
        rows = sessions[part::files]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / f"part-{part}.parquet")


def make_root(root: Path, hyperparameters: dict, n_train: int = 1500, seed: int = 0) -> Path:
    """A complete training root: hyperparameters plus train/validation/test channels."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    data = root / "input" / "data"
    write_channel(data / "train", make_sessions(n_train, seed, "train"), files=2)
    write_channel(data / "validation", make_sessions(200, seed + 1, "val"))
    write_channel(data / "test", make_sessions(200, seed + 2, "test"))
    return root


# Small and quick, still enough for the chains to be learnt.
FAST_HYPERPARAMETERS = {
    "epochs": "4",
    "batch_size": "64",
    "embedding_dim": "16",
    "hidden_units": "32",
    "learning_rate": "0.02",
    "max_len": "6",
    "top_k": "10",
}
