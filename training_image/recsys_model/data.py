"""Reading session channels, the item vocabulary, and training sequences.

A channel is a folder of parquet files with one row per browsing session:
`session_id` (string), `session_date` (string, YYYY-MM-DD) and `items`
(list<string>: the SKUs the session interacted with, in time order; or a string
holding a JSON array of them, as Snowflake's COPY INTO unloads an ARRAY column).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import TrainingError

log = logging.getLogger(__name__)

PAD = 0  # padding index, masked everywhere
OOV = 1  # any SKU outside the vocabulary
FIRST_ITEM = 2  # index of the first real item

_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("session_date", pa.string()),
        ("items", pa.list_(pa.string())),
    ]
)
_EXPECTED = {"session_id": "string", "session_date": "string (YYYY-MM-DD)", "items": "list<string>"}


@dataclasses.dataclass(frozen=True)
class Sessions:
    """Sessions of one channel, kept columnar: SKUs flattened plus offsets."""

    session_ids: list[str]
    skus: pa.Array  # all SKUs of all sessions, concatenated (string)
    offsets: np.ndarray  # int64, len(sessions) + 1; session s is skus[offsets[s]:offsets[s+1]]

    def __len__(self) -> int:
        return len(self.session_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.skus)

    @property
    def n_examples(self) -> int:
        """Next-item examples: every position after the first in every session."""
        return self.n_interactions - len(self)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def read_channel(directory: Path, name: str) -> Sessions:
    if not directory.is_dir():
        raise TrainingError(f"Channel '{name}' is missing: directory {directory} does not exist.")
    files = sorted(p for p in directory.rglob("*.parquet") if p.is_file())
    if not files:
        raise TrainingError(f"Channel '{name}' is empty: no *.parquet files under {directory}.")

    table = pa.concat_tables([_read_file(path, name) for path in files])
    items = table.column("items").combine_chunks()
    # A usable session has at least two SKUs (one transition) and no null SKU.
    lengths = pc.fill_null(pc.list_value_length(items), 0)
    keep = pc.and_(pc.greater_equal(lengths, 2), pc.invert(_sessions_with_null_sku(items)))
    dropped = len(table) - pc.sum(keep).as_py() if len(table) else 0
    table = table.filter(keep)
    if dropped:
        log.warning("channel %s: dropped %d session(s) with fewer than 2 items or null SKUs", name, dropped)
    if len(table) == 0:
        raise TrainingError(
            f"Channel '{name}' has no usable sessions in {len(files)} file(s) under {directory} "
            "(every session needs at least 2 items)."
        )

    items = table.column("items").combine_chunks()
    offsets = np.asarray(items.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    return Sessions(
        session_ids=table.column("session_id").to_pylist(),
        skus=pc.list_flatten(items),
        offsets=offsets,
    )


def _sessions_with_null_sku(items: pa.ListArray) -> pa.Array:
    """Boolean per session: does its item list contain a null SKU?"""
    flat = pc.list_flatten(items)
    flags = np.zeros(len(items), dtype=bool)
    if flat.null_count:
        parents = np.asarray(pc.list_parent_indices(items))
        flags[parents[np.asarray(pc.is_null(flat))]] = True
    return pa.array(flags)


def _read_file(path: Path, name: str) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TrainingError(f"Channel '{name}': {path} is not a readable parquet file ({exc}).") from None
    missing = [f.name for f in _SCHEMA if f.name not in schema.names]
    if missing:
        raise TrainingError(
            f"Channel '{name}': {path} lacks column(s) {', '.join(missing)}; "
            f"expected session_id (string), session_date (string), items (list<string>), "
            f"found {', '.join(schema.names) or 'no columns'}."
        )
    json_items = _compatible(schema.field("items").type, pa.string())
    for field in _SCHEMA:
        actual = schema.field(field.name).type
        if not _compatible(actual, field.type) and not (field.name == "items" and json_items):
            raise TrainingError(
                f"Channel '{name}': column {field.name} in {path} has type {actual}, "
                f"expected {_EXPECTED[field.name]}."
            )
    table = pq.read_table(path, columns=_SCHEMA.names)
    if json_items:
        items = _items_from_json(table.column("items"), path, name)
        table = table.set_column(table.schema.get_field_index("items"), "items", items)
    return table.cast(_SCHEMA)


def _items_from_json(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    """Item lists written as JSON text (Snowflake unloads ARRAY columns so) as list<string>."""
    lists = []
    for text in column.to_pylist():
        try:
            items = None if text is None else json.loads(text)
        except ValueError:
            items = text
        if items is not None and not (isinstance(items, list) and all(i is None or isinstance(i, str) for i in items)):
            raise TrainingError(
                f"Channel '{name}': column items in {path} has type string, expected list<string> "
                f"or a JSON array of strings, found {str(text)[:80]!r}."
            )
        lists.append(items)
    return pa.array(lists, type=pa.list_(pa.string()))


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and _compatible(
            actual.value_type, expected.value_type
        )
    return pa.types.is_string(actual) or pa.types.is_large_string(actual)


class Vocabulary:
    """SKU <-> index. 0 is padding, 1 is out-of-vocabulary, items start at 2."""

    def __init__(self, items: list[str]):
        self.items = list(items)
        self.index = {sku: i + FIRST_ITEM for i, sku in enumerate(self.items)}
        self._value_set = pa.array(self.items, type=pa.string())

    @property
    def size(self) -> int:
        """Number of output classes, padding and out-of-vocabulary included."""
        return len(self.items) + FIRST_ITEM

    def sku(self, index: int) -> str:
        return self.items[index - FIRST_ITEM]

    def encode(self, skus: pa.Array) -> np.ndarray:
        """Index of every SKU, OOV for those outside the vocabulary (vectorised)."""
        positions = pc.index_in(skus, value_set=self._value_set)
        return np.asarray(pc.fill_null(pc.add(positions, FIRST_ITEM), OOV), dtype=np.int32)

    def encode_session(self, skus: list[str]) -> np.ndarray:
        """Index of every SKU of one short session, OOV for those outside the vocabulary."""
        index = self.index
        return np.fromiter((index.get(sku, OOV) for sku in skus), dtype=np.int32, count=len(skus))

    def to_json(self) -> dict:
        return {"pad_index": PAD, "oov_index": OOV, "first_item_index": FIRST_ITEM, "items": self.items}

    @classmethod
    def from_json(cls, payload: dict) -> "Vocabulary":
        if payload.get("first_item_index") != FIRST_ITEM or not isinstance(payload.get("items"), list):
            raise ValueError("vocab.json is not in the expected format")
        return cls(payload["items"])


def item_counts(sessions: Sessions) -> list[tuple[str, int]]:
    """(sku, count) pairs, most frequent first; ties broken by SKU for determinism."""
    counts = pc.value_counts(sessions.skus)
    pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))


def build_vocabulary(counts: list[tuple[str, int]], min_item_count: int) -> Vocabulary:
    items = [sku for sku, count in counts if count >= min_item_count]
    if not items:
        raise TrainingError(
            f"No item in the train channel occurs at least min_item_count={min_item_count} times; "
            "the vocabulary would be empty."
        )
    return Vocabulary(items)


def training_sequences(ids: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets, right-padded to a common length.

    Sessions longer than max_len + 1 are cut into consecutive windows so every
    transition is trained on exactly once. Targets outside the vocabulary become
    padding: the model should never learn to predict "unknown".
    """
    inputs: list[np.ndarray] = []
    for s in range(len(offsets) - 1):
        session = ids[offsets[s] : offsets[s + 1]]
        for start in range(0, len(session) - 1, max_len):
            inputs.append(session[start : start + max_len + 1])
    width = max(len(window) for window in inputs) - 1
    x = np.zeros((len(inputs), width), dtype=np.int32)
    y = np.zeros((len(inputs), width), dtype=np.int32)
    for row, window in enumerate(inputs):
        x[row, : len(window) - 1] = window[:-1]
        y[row, : len(window) - 1] = window[1:]
    y[y == OOV] = PAD
    return x, y


def known_items(ids: np.ndarray) -> np.ndarray:
    """The items of a session a model reads: SKUs outside its vocabulary are dropped."""
    return ids[ids >= FIRST_ITEM]


def model_input(ids: np.ndarray, max_len: int) -> np.ndarray:
    """What a model reads for a session (or a session prefix): its known items, the most
    recent max_len of them. Serving and evaluation both follow this rule; when it leaves
    nothing, the answer is the most popular items (see evaluate.model_ranks and serve)."""
    return known_items(ids)[-max_len:]


def pad_right(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length id sequences into a right-padded matrix plus their lengths."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    matrix = np.zeros((len(sequences), max(int(lengths.max(initial=0)), 1)), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        matrix[row, : len(sequence)] = sequence
    return matrix, lengths
