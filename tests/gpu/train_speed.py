"""Training speed of the model on this machine's accelerator: float32 against mixed_float16.

Trains the image's own ``train`` (in process) twice on the same synthetic sessions, with a
catalogue large enough for the softmax to matter, and prints one line per precision: the
device, examples per second per epoch (after the first, which includes tracing), and the
test MRR@k (mixed precision must not cost quality). Exits 1 if either run fails.

    python tests/gpu/train_speed.py [--items 20000] [--sessions 60000] [--epochs 3]

Run where TensorFlow sees the GPU: in the CUDA image (tests/gpu/check.sh), or in an
environment with tensorflow[and-cuda] and training_image installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "training_image"))  # when recsys_model is not installed

SCHEMA = pa.schema([("session_id", pa.string()), ("session_date", pa.string()), ("items", pa.list_(pa.string()))])


def sessions(n: int, items: int, seed: int) -> list[dict]:
    """Chains: each item is mostly followed by one fixed other item (learnable), else a random one."""
    rng = random.Random(seed)
    rows = []
    for s in range(n):
        current = rng.randrange(items)
        chain = [current]
        for _ in range(rng.randint(1, 12)):
            current = (current * 7 + 3) % items if rng.random() < 0.7 else rng.randrange(items)
            chain.append(current)
        rows.append({"session_id": f"s{seed}-{s}", "session_date": "2026-03-01", "items": [f"sku-{i}" for i in chain]})
    return rows


def lay_out(root: Path, args, precision: str) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({
        "model_version": f"speed-{precision}", "epochs": str(args.epochs), "patience": "0",
        "batch_size": str(args.batch_size), "precision": precision}))
    for channel, n, seed in (("train", args.sessions, 0), ("validation", args.sessions // 10, 1),
                             ("test", args.sessions // 10, 2)):
        (root / "input" / "data" / channel).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(sessions(n, args.items, seed), schema=SCHEMA),
                       root / "input" / "data" / channel / "sessions.parquet")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20000, help="catalogue size (default 20000)")
    parser.add_argument("--sessions", type=int, default=60000, help="training sessions (default 60000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--batch-size", type=int, default=512, help="sequences per step (default 512)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from recsys_model import train
    from recsys_model.contract import ROOT_ENV

    gpus = tf.config.list_physical_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU only"
    print(f"TensorFlow {tf.__version__}, device: {device}", flush=True)
    failed = False
    for precision in ("float32", "mixed_float16"):
        root = lay_out(Path(tempfile.mkdtemp(prefix=f"speed-{precision}-")), args, precision)
        os.environ[ROOT_ENV] = str(root)
        if train.main([]) != 0:
            print(f"{precision}: FAILED: {(root / 'output' / 'failure').read_text()}", flush=True)
            failed = True
            continue
        epochs = json.loads((root / "output" / "data" / "history.json").read_text())["epochs"]
        steady = [e["train_examples_per_s"] for e in epochs[1:]] or [epochs[0]["train_examples_per_s"]]
        k_metrics = json.loads((root / "output" / "data" / "evaluation.json").read_text())["challenger"]
        mrr = next(v for key, v in k_metrics.items() if key.startswith("test_mrr"))
        print(f"{precision:>14}: {statistics.median(steady):,.0f} examples/s (median of epochs 2..{len(epochs)}), "
              f"test MRR {mrr:.4f}, {args.items} items, {args.sessions} sessions", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
