"""`train`: fit the next-item model on the channels, evaluate it, write the model directory."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import textwrap
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .contract import (
    CHAMPION_CHANNEL,
    REQUIRED_CHANNELS,
    DEFAULT_ROOT,
    ROOT_ENV,
    Hyperparameters,
    Paths,
    TrainingError,
    configure_logging,
    load_hyperparameters,
    write_failure,
    write_json_atomic,
)

log = logging.getLogger("recsys_model.train")



def _defaults() -> str:
    """The optional hyperparameters with their defaults, from their declaration."""
    pairs = (
        f"{name}={field.default}" for name, field in Hyperparameters.model_fields.items() if not field.is_required()
    )
    return "defaults: " + " ".join(pairs)


def _indent(text: str) -> str:
    return textwrap.fill(text, width=82, initial_indent=" " * 6, subsequent_indent=" " * 6)


HELP = f"""\
Train the session-based next-item recommender under the SageMaker container contract.

Takes no arguments: everything is read from the root directory, which is
${ROOT_ENV} if set, else {DEFAULT_ROOT}.

Inputs
  ROOT/input/config/hyperparameters.json  JSON object; SageMaker passes every value
      as a string. model_version (required) travels with the model. Optional, with
{_indent(_defaults())}
      patience: epochs without validation MRR gain before stopping (0 = never).
      Unknown keys fail the job.
  ROOT/input/data/{{train,validation,test}}/*.parquet  sessions: session_id (string),
      session_date (string), items (list<string>, SKUs in time order, >= 2).
  ROOT/input/data/champion/  optional: model.tar.gz of an earlier run (or its
      extracted model directory), evaluated on the same test set.

Outputs
  ROOT/model/  model.keras, vocab.json, popularity.json, evaluation.json and,
      written last, metadata.json (a directory without it is not a model).
  ROOT/output/data/evaluation.json, test_predictions.parquet, history.json
  ROOT/output/failure  on any error: the reason; the exit status is then 1.
"""

# Popular items a model keeps: enough for the largest k the server accepts (and top_k allows).
POPULAR_ITEMS = 100

_OUTPUT_FILES = ("evaluation.json", "test_predictions.parquet", "history.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"recsys-model {__version__}")
    parser.parse_args(argv)
    configure_logging()

    paths = Paths.from_env()
    started = time.monotonic()
    try:
        _prepare(paths)
        run(paths)
    except Exception as exc:  # every failure must reach output/failure
        if isinstance(exc, TrainingError):
            reason = f"Training failed: {exc}"
        else:
            traceback.print_exc(file=sys.stdout)
            reason = f"Training failed with an unexpected {type(exc).__name__}: {exc}"
        _discard_results(paths)
        write_failure(paths, reason)
        print(reason, flush=True)
        return 1
    log.info("training finished in %.1fs", time.monotonic() - started)
    return 0


def _prepare(paths: Paths) -> None:
    """Forget what an earlier run in the same root left behind."""
    paths.failure.unlink(missing_ok=True)
    for name in _OUTPUT_FILES:
        (paths.output_data / name).unlink(missing_ok=True)


def _discard_results(paths: Paths) -> None:
    """After a failure nothing may look like a finished model or evaluation."""
    from .bundle import clear_dir

    try:
        if paths.model_dir.is_dir():
            clear_dir(paths.model_dir)
        (paths.output_data / "evaluation.json").unlink(missing_ok=True)
    except OSError:
        log.exception("could not clean up after the failure")


def run(paths: Paths) -> dict[str, Any]:
    from . import data
    from .bundle import clear_dir

    hp = load_hyperparameters(paths)
    log.info("model_version=%s root=%s", hp.model_version, paths.root)
    log.info("hyperparameters: %s", " ".join(f"{k}={v}" for k, v in hp.to_dict().items()))
    clear_dir(paths.model_dir)

    channels = {name: data.read_channel(paths.channel(name), name) for name in REQUIRED_CHANNELS}
    for name, sessions in channels.items():
        log.info(
            "channel %s: %d sessions, %d interactions, %d next-item examples",
            name, len(sessions), sessions.n_interactions, sessions.n_examples,
        )
    train, validation, test = (channels[name] for name in REQUIRED_CHANNELS)
    counts = data.item_counts(train)
    vocab = data.build_vocabulary(counts, hp.min_item_count)
    log.info(
        "vocabulary: %d items (of %d distinct in train, min_item_count=%d) + padding + unknown",
        len(vocab.items), len(counts), hp.min_item_count,
    )

    # TensorFlow is imported only now so argument and input errors fail fast.
    import keras

    from . import evaluate
    from .bundle import Popularity
    from .fit import fit
    from .model import Scorer, build_model, transition_table

    # Loaded before training so an unusable champion fails the job early.
    champion = _load_champion(paths)

    keras.utils.set_random_seed(hp.seed)
    sequences = data.training_sequences(vocab.encode(train.skus), train.offsets, hp.max_len)
    val_sequences = data.training_sequences(vocab.encode(validation.skus), validation.offsets, hp.max_len)
    train_ids = vocab.encode(train.skus)
    transitions = transition_table(train_ids, train.offsets, vocab.size, hp.successors)
    log.info("transition table: %d items followed by another, up to %d next items each",
             int((transitions[2] > 0).sum()), hp.successors)
    network = build_model(vocab.size, hp, transitions)
    scorer = Scorer(network)
    log.info("training on %d sequences of up to %d items", len(sequences[0]), sequences[0].shape[1])
    # What the model answers for a session without a known SKU; popularity.json.
    popularity = Popularity(items=counts[:POPULAR_ITEMS], total_interactions=train.n_interactions)
    report = fit(network, scorer, vocab, sequences, val_sequences, validation, popularity.skus, hp,
                 checkpoints=paths.checkpoints)

    k = hp.top_k
    val_ranks = evaluate.model_ranks(scorer, vocab, hp.max_len, validation, popularity.skus)
    ranks = {
        "challenger": evaluate.model_ranks(scorer, vocab, hp.max_len, test, popularity.skus),
        "baseline": evaluate.popularity_ranks([sku for sku, _ in counts], test, k),
        "champion": (
            evaluate.model_ranks(
                champion.scorer, champion.vocab, champion.max_len, test, champion.popularity.skus
            )
            if champion else None
        ),
    }
    evaluation = {
        "model_version": hp.model_version,
        "k": k,
        "n_test_examples": int(test.n_examples),
        "challenger": {
            **evaluate.metrics(val_ranks, k, "val_"),
            **evaluate.metrics(ranks["challenger"], k, "test_"),
        },
        "popularity_baseline": evaluate.metrics(ranks["baseline"], k, "test_"),
        "champion": (
            {"model_version": champion.model_version, **evaluate.metrics(ranks["champion"], k, "test_")}
            if champion else None
        ),
    }
    _log_final_metrics(evaluation)

    paths.output_data.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.output_data / "history.json", report.history())
    _write_predictions(paths.output_data / "test_predictions.parquet", test, k, ranks)

    metadata = {
        "model_version": hp.model_version,
        "format_version": 1,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hyperparameters": hp.to_dict(),
        "vocab_size": vocab.size,
        "n_items": len(vocab.items),
        "metrics": evaluation["challenger"],
        "popularity_baseline": evaluation["popularity_baseline"],
        "best_epoch": report.best_epoch,
        "data": {name: {"sessions": len(s), "examples": int(s.n_examples)} for name, s in channels.items()},
        "versions": {
            "recsys_model": __version__,
            "keras": keras.__version__,
            "tensorflow": _tensorflow_version(),
        },
    }
    _write_model_dir(paths.model_dir, network, vocab, popularity, evaluation, metadata)
    # Written last: its presence in output/data means the whole job succeeded.
    write_json_atomic(paths.output_data / "evaluation.json", evaluation)
    log.info("model %s written to %s", hp.model_version, paths.model_dir)
    return evaluation


def _load_champion(paths: Paths):
    from .bundle import load_model_dir, locate_champion

    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        champion_dir = locate_champion(paths.channel(CHAMPION_CHANNEL), Path(scratch))
        if champion_dir is None:
            log.info("no champion given: nothing to compare with")
            return None
        try:
            champion = load_model_dir(champion_dir)
        except ValueError as exc:
            raise TrainingError(f"Champion model cannot be loaded: {exc}.") from None
    log.info("champion %s loaded (%d items)", champion.model_version, len(champion.vocab.items))
    return champion


def _write_model_dir(model_dir, network, vocab, popularity, evaluation, metadata) -> None:
    """Stage every file, then move them in with metadata.json last (the completeness marker)."""
    from .bundle import (
        EVALUATION_FILE,
        MODEL_FILE,
        POPULARITY_FILE,
        VOCAB_FILE,
        publish,
        staging_dir,
    )

    staging = staging_dir(model_dir)
    network.save(staging / MODEL_FILE)
    write_json_atomic(staging / VOCAB_FILE, vocab.to_json())
    write_json_atomic(staging / POPULARITY_FILE, popularity.to_json())
    write_json_atomic(staging / EVALUATION_FILE, evaluation)
    publish(staging, model_dir, metadata)


def _tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _log_final_metrics(evaluation: dict[str, Any]) -> None:
    """One `name=value;` pair per line. Baseline and champion names carry a suffix so a
    metric regex such as `test_hr_at_20=([0-9.]+);` only ever matches the challenger."""
    lines = dict(evaluation["challenger"])
    for name, value in evaluation["popularity_baseline"].items():
        lines[f"{name}_baseline"] = value
    if evaluation["champion"]:
        for name, value in evaluation["champion"].items():
            if name != "model_version":
                lines[f"{name}_champion"] = value
    log.info("evaluated on %d test examples, k=%d", evaluation["n_test_examples"], evaluation["k"])
    for name, value in lines.items():
        log.info("metric %s=%.6f;", name, value)


def _write_predictions(path: Path, test, k: int, ranks: dict) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .evaluate import example_positions, target_indices, top_k_or_null

    n = test.n_examples
    session_ids = np.repeat(np.asarray(test.session_ids, dtype=object), test.lengths - 1)
    table = pa.table(
        {
            "session_id": pa.array(session_ids, type=pa.string()),
            "position": pa.array(example_positions(test), type=pa.int32()),
            "target": test.skus.take(pa.array(target_indices(test))),
            "challenger_rank": top_k_or_null(ranks["challenger"], k),
            "baseline_rank": top_k_or_null(ranks["baseline"], k),
            "champion_rank": (
                top_k_or_null(ranks["champion"], k) if ranks["champion"] is not None
                else pa.nulls(n, type=pa.int32())
            ),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
