"""Landing files: one CSV of raw browsing rows per UTC day.

The raw columns and the file names are production's (`recsys.ingest`): the simulator
writes what ingest reads.

Files are always written whole or not at all (a temporary file in the same folder,
then an atomic rename), so a reader never sees a half-written day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.ingest import RAW_COLUMNS, landing_day, landing_name

from .presets import DAY_MS
from .process import as_date, generate_day

_UNIX_EPOCH = dt.date(1970, 1, 1).toordinal()


def landing_path(root, day) -> Path:
    return Path(root) / landing_name(as_date(day))


def day_of_path(path) -> dt.date | None:
    """The day of a landing file name, or None if the name is not one."""
    return landing_day(Path(path).name)


def _temp_file(root: Path, final: Path):
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{final.name}.", suffix=".tmp")
    return os.fdopen(fd, "w", newline=""), Path(tmp)


def write_frame(frame: pd.DataFrame, path) -> Path:
    """Write rows to `path` atomically, with the raw header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = _temp_file(path.parent, path)
    try:
        with handle:
            frame.to_csv(handle, index=False, columns=list(RAW_COLUMNS))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def write_day(root, day, *, preset: str = "tiny", scenario: str = "steady", seed: int = 7) -> Path:
    """Generate one day and write it to its landing file (replacing any old one)."""
    frame = generate_day(as_date(day), preset=preset, scenario=scenario, seed=seed)
    return write_frame(frame, landing_path(root, day))


def ensure_days(root, days: Iterable, *, preset: str = "tiny", scenario: str = "steady",
                seed: int = 7) -> list[dt.date]:
    """Deliver the days whose landing file is missing, as an upstream feed would.

    Existing files are never touched. Returns the days that were generated.
    """
    written = []
    for day in days:
        day = as_date(day)
        if not landing_path(root, day).exists():
            write_day(root, day, preset=preset, scenario=scenario, seed=seed)
            written.append(day)
    return written


def read_day(path) -> pd.DataFrame:
    """Read a landing file back with the raw dtypes (nullable where the feed may be)."""
    frame = pd.read_csv(path, dtype={c: "string" for c in RAW_COLUMNS
                                     if c != "server_timestamp_epoch_ms"})
    frame["server_timestamp_epoch_ms"] = pd.to_numeric(
        frame["server_timestamp_epoch_ms"], errors="coerce").astype("Int64")
    return frame


def split_browsing_csv(csv_path, out_root, *, chunksize: int = 1_000_000,
                       progress=None) -> list[dt.date]:
    """Split a Coveo `browsing_train.csv` into one landing file per UTC day.

    Streams the file in chunks. Extra columns (such as a leading unnamed index)
    are dropped; rows without a usable timestamp cannot be placed in a day and
    are skipped. Every day file is written to a temporary file first and renamed
    into place once the whole input has been read. `progress`, if given, is called
    with (rows_read, days_seen) after each chunk. Returns the days written, sorted.
    """
    csv_path, out_root = Path(csv_path), Path(out_root)
    if not csv_path.is_file():
        raise FileNotFoundError(f"no such file: {csv_path}")
    header = pd.read_csv(csv_path, nrows=0).columns
    missing = [c for c in RAW_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path} lacks columns: {', '.join(missing)}")
    out_root.mkdir(parents=True, exist_ok=True)

    open_files: dict[dt.date, tuple] = {}
    rows_read = 0
    try:
        reader = pd.read_csv(csv_path, usecols=list(RAW_COLUMNS), chunksize=chunksize,
                             dtype={c: "string" for c in RAW_COLUMNS
                                    if c != "server_timestamp_epoch_ms"})
        for chunk in reader:
            rows_read += len(chunk)
            ts = pd.to_numeric(chunk["server_timestamp_epoch_ms"], errors="coerce")
            chunk = chunk.assign(server_timestamp_epoch_ms=ts.astype("Int64"))
            chunk = chunk[ts.notna().to_numpy()]
            day_number = (chunk["server_timestamp_epoch_ms"].to_numpy(np.int64) // DAY_MS)
            for number in np.unique(day_number):
                day = dt.date.fromordinal(_UNIX_EPOCH + int(number))
                if day not in open_files:
                    final = landing_path(out_root, day)
                    handle, tmp = _temp_file(out_root, final)
                    open_files[day] = (handle, tmp, final)
                    header_needed = True
                else:
                    header_needed = False
                chunk[day_number == number].to_csv(open_files[day][0], index=False,
                                                   header=header_needed,
                                                   columns=list(RAW_COLUMNS))
            if progress:
                progress(rows_read, len(open_files))
        for handle, tmp, final in open_files.values():
            handle.close()
            os.replace(tmp, final)
    except BaseException:
        for handle, tmp, _ in open_files.values():
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    return sorted(open_files)
