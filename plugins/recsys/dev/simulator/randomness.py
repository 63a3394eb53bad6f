"""Deterministic randomness and 64-hex identifiers.

Two kinds of randomness are needed:
* per-day streams (`day_rng`), seeded from (seed, preset, day ordinal, stream), so a
  day never depends on which other days were generated;
* per-SKU attributes (`keyed_uniform`), a pure function of (seed, preset, SKU number),
  so the catalogue is the same whichever day it is looked at from.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

import numpy as np

_U64 = np.uint64


def name_key(name: str) -> int:
    """A stable small integer for a name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def day_rng(seed: int, preset: str, ordinal: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, name_key(preset), ordinal, stream]))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps around, which is what this mixer relies on.
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def keyed_uniform(keys: np.ndarray, *salts: int) -> np.ndarray:
    """Uniforms in (0, 1), one per key, fixed for given keys and salts."""
    x = np.asarray(keys, dtype=np.int64).view(np.uint64).copy()
    for salt in salts:
        x = _splitmix64(x ^ _U64(salt & 0xFFFFFFFFFFFFFFFF))
    return ((x >> _U64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def keyed_normal(keys: np.ndarray, *salts: int) -> np.ndarray:
    """Standard normals via Box-Muller on two keyed uniforms."""
    u1 = keyed_uniform(keys, *salts, 1)
    u2 = keyed_uniform(keys, *salts, 2)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def hex_ids(namespace: str, keys: Iterable[object]) -> np.ndarray:
    """64-hex-char identifiers (object array), like the hashed ids of the real feed."""
    return np.array(
        [hashlib.sha256(f"{namespace}:{k}".encode()).hexdigest() for k in keys], dtype=object
    )


# Independent per-day random streams.
STREAM_SESSIONS = 1  # session count, types, lengths, pages, timing
STREAM_ITEMS = 2  # which products, cart actions
STREAM_SCENARIO = 3  # scenario changes to the catalogue
STREAM_BROKEN = 4  # feed corruption
