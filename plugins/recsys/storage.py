"""The object store: ``file://`` locally, ``s3://`` in production.

Airflow's ObjectStoragePath gives one pathlib-like API for both; S3 access goes
through the ``aws_default`` connection (RECSYS_AWS_CONN_ID).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
from airflow.sdk import ObjectStoragePath

from recsys.settings import Settings


def _path(url: str, settings: Settings) -> ObjectStoragePath:
    conn_id = settings.aws_conn_id if url.startswith("s3://") else None
    return ObjectStoragePath(url, conn_id=conn_id)


def landing_path(settings: Settings, name: str) -> ObjectStoragePath:
    return _path(f"{settings.landing_url}/{name}", settings)


def path_from_uri(settings: Settings, uri: str) -> ObjectStoragePath:
    """A store URI (as ``recsys.run.RunLayout`` names them) as a path to read or write."""
    return _path(uri, settings)


def write_bytes(path: ObjectStoragePath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside, then rename, so a reader never sees half a file. Object stores
    # have atomic puts already; the rename is what makes it atomic on disk.
    if path.protocol == "file":
        tmp = Path(path.path + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path.path)
    else:
        with path.open("wb") as handle:
            handle.write(data)


def write_json(path: ObjectStoragePath, payload: dict) -> None:
    write_bytes(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def read_json(path: ObjectStoragePath) -> dict:
    with path.open("rb") as handle:
        return json.load(handle)


def write_parquet(path: ObjectStoragePath, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(path, buffer.getvalue())


def read_parquet(path: ObjectStoragePath) -> pd.DataFrame:
    with path.open("rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def download(path: ObjectStoragePath, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def upload(source: Path, path: ObjectStoragePath) -> ObjectStoragePath:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src:
        write_bytes(path, src.read())
    return path


# SageMaker's archives: model.tar.gz (the model folder's contents at the archive root) and
# output.tar.gz (/opt/ml/output/data). One packer and one unpacker for both.
MODEL_METADATA = "metadata.json"


def pack(source_dir: Path, target: Path) -> Path:
    """Tar and gzip a folder's contents at the archive root. ``metadata.json`` goes in last:
    a model folder without it is never taken for a model, so a reader streaming a cut
    archive never sees a complete-looking one."""
    items = sorted(source_dir.iterdir(), key=lambda item: (item.name == MODEL_METADATA, item.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    with tarfile.open(partial, "w:gz") as tar:
        for item in items:
            tar.add(item, arcname=item.name)
    partial.replace(target)
    return target


def unpack(archive: Path, target: Path) -> Path:
    """Extract an archive made by ``pack`` (or by SageMaker); refuses unsafe members."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
