"""`train` end to end: outputs, metrics, champion comparison and failures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import console_script, train_in_process
from image_synthetic import FAST_HYPERPARAMETERS, make_root, write_channel
from recsys_model.contract import ROOT_ENV

MODEL_FILES = {"model.keras", "vocab.json", "popularity.json", "metadata.json", "evaluation.json"}


def _json(path: Path):
    return json.loads(path.read_text())


def test_model_directory_holds_everything_needed_to_serve(first_run: Path):
    model_dir = first_run / "model"
    assert {p.name for p in model_dir.iterdir()} == MODEL_FILES
    metadata = _json(model_dir / "metadata.json")
    assert metadata["model_version"] == "v1"
    assert metadata["vocab_size"] == 102 and metadata["n_items"] == 100
    assert metadata["hyperparameters"]["epochs"] == 4 and metadata["hyperparameters"]["learning_rate"] == 0.02
    assert metadata["hyperparameters"]["patience"] == 2  # default filled in
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", metadata["trained_at"])
    assert metadata["metrics"]["test_hr_at_10"] > 0
    vocab = _json(model_dir / "vocab.json")
    assert len(vocab["items"]) == 100 and vocab["first_item_index"] == 2
    popularity = _json(model_dir / "popularity.json")
    assert len(popularity["items"]) == 100
    counts = [entry["count"] for entry in popularity["items"]]
    assert counts == sorted(counts, reverse=True)
    assert sum(entry["share"] for entry in popularity["items"]) == pytest.approx(1.0)
    assert _json(model_dir / "evaluation.json") == _json(first_run / "output" / "data" / "evaluation.json")
    assert not (first_run / "output" / "failure").exists()


def test_evaluation_beats_the_popularity_baseline_on_chain_data(first_run: Path):
    evaluation = _json(first_run / "output" / "data" / "evaluation.json")
    assert evaluation["model_version"] == "v1" and evaluation["k"] == 10
    assert set(evaluation["challenger"]) == {"val_hr_at_10", "val_mrr_at_10", "test_hr_at_10", "test_mrr_at_10"}
    assert set(evaluation["popularity_baseline"]) == {"test_hr_at_10", "test_mrr_at_10"}
    assert evaluation["champion"] is None
    challenger, baseline = evaluation["challenger"], evaluation["popularity_baseline"]
    # 90% of transitions follow a fixed chain: the model must find it, popularity cannot.
    assert challenger["test_hr_at_10"] > 0.8 and challenger["test_mrr_at_10"] > 0.7
    assert baseline["test_hr_at_10"] < 0.3
    assert challenger["test_hr_at_10"] > baseline["test_hr_at_10"] + 0.4


def test_predictions_file_has_one_row_per_test_example(first_run: Path):
    evaluation = _json(first_run / "output" / "data" / "evaluation.json")
    table = pq.read_table(first_run / "output" / "data" / "test_predictions.parquet")
    assert table.column_names == [
        "session_id", "position", "target", "challenger_rank", "baseline_rank", "champion_rank",
    ]
    assert table.num_rows == evaluation["n_test_examples"]
    rows = table.to_pylist()
    assert rows[0]["session_id"] == "test-0" and rows[0]["position"] == 1
    assert all(1 <= r["position"] for r in rows)
    ranks = [r["challenger_rank"] for r in rows]
    assert all(rank is None or 1 <= rank <= 10 for rank in ranks)
    hits = sum(rank is not None for rank in ranks)
    assert hits / len(rows) == pytest.approx(evaluation["challenger"]["test_hr_at_10"])
    mrr = sum(1 / rank for rank in ranks if rank) / len(rows)
    assert mrr == pytest.approx(evaluation["challenger"]["test_mrr_at_10"])
    assert table.column("champion_rank").null_count == table.num_rows


def test_history_has_one_entry_per_epoch(first_run: Path):
    history = _json(first_run / "output" / "data" / "history.json")
    assert history["monitor"] == "val_mrr_at_10"
    assert 1 <= len(history["epochs"]) <= 4
    assert 1 <= history["best_epoch"] <= len(history["epochs"])
    for number, epoch in enumerate(history["epochs"], start=1):
        assert epoch["epoch"] == number
        assert {"loss", "val_loss", "val_hr_at_10", "val_mrr_at_10", "seconds"} <= set(epoch)
    assert history["epochs"][-1]["loss"] < history["epochs"][0]["loss"]


def test_console_script_with_champion(first_run: Path, second_run):
    root, completed = second_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "channel train: 1500 sessions" in out
    assert "vocabulary: 100 items" in out
    assert re.search(r"epoch 1/4: loss=[0-9.]+; val_loss=[0-9.]+; val_hr_at_10=[0-9.]+; val_mrr_at_10=[0-9.]+;", out)
    # a SageMaker metric regex for the challenger matches exactly one line
    assert len(re.findall(r"test_hr_at_10=([0-9.]+);", out)) == 1
    assert re.search(r"test_hr_at_10_champion=[0-9.]+;", out)

    evaluation = _json(root / "output" / "data" / "evaluation.json")
    first = _json(first_run / "output" / "data" / "evaluation.json")
    assert evaluation["model_version"] == "v2"
    champion = evaluation["champion"]
    assert champion["model_version"] == "v1"
    # same test set, same model: the champion scores what it scored as a challenger
    assert champion["test_hr_at_10"] == pytest.approx(first["challenger"]["test_hr_at_10"])
    assert champion["test_mrr_at_10"] == pytest.approx(first["challenger"]["test_mrr_at_10"])
    assert evaluation["popularity_baseline"] == pytest.approx(first["popularity_baseline"])

    ours = pq.read_table(root / "output" / "data" / "test_predictions.parquet")
    theirs = pq.read_table(first_run / "output" / "data" / "test_predictions.parquet")
    assert ours.column("champion_rank").to_pylist() == theirs.column("challenger_rank").to_pylist()
    assert _json(root / "model" / "metadata.json")["model_version"] == "v2"


def test_help_explains_the_contract():
    completed = subprocess.run([console_script("train"), "--help"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    for phrase in ("RECSYS_ML_ROOT", "hyperparameters.json", "model_version", "champion", "output/failure"):
        assert phrase in completed.stdout


def _assert_failed(root: Path, rc: int, *named: str) -> str:
    assert rc == 1
    reason = (root / "output" / "failure").read_text()
    for word in named:
        assert word in reason
    model_dir = root / "model"
    assert not (model_dir / "metadata.json").exists()
    assert not model_dir.exists() or not any(model_dir.iterdir())
    assert not (root / "output" / "data" / "evaluation.json").exists()
    return reason


def test_bad_hyperparameter_fails_and_clears_an_old_model(tmp_path: Path, first_run: Path, capsys):
    root = make_root(tmp_path, {"model_version": "v3", "epochs": "five"}, n_train=50)
    shutil.copytree(first_run / "model", root / "model")  # left over from an earlier run
    shutil.copytree(first_run / "output" / "data", root / "output" / "data")
    reason = _assert_failed(root, train_in_process(root), "epochs", "five")
    assert reason in capsys.readouterr().out


def test_unknown_hyperparameter_fails(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3", "hidden_size": "8"}, n_train=50)
    _assert_failed(root, train_in_process(root), "hidden_size")


def test_missing_channel_fails(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3"}, n_train=50)
    shutil.rmtree(root / "input" / "data" / "validation")
    _assert_failed(root, train_in_process(root), "validation", "missing")


def test_schema_mismatch_fails(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3"}, n_train=50)
    shutil.rmtree(root / "input" / "data" / "test")
    (root / "input" / "data" / "test").mkdir()
    pq.write_table(
        pa.table({"session_id": ["s"], "session_date": ["2025-03-01"], "items": pa.array([[1, 2]])}),
        root / "input" / "data" / "test" / "part.parquet",
    )
    _assert_failed(root, train_in_process(root), "'test'", "items", "int64", "expected list<string>")


def test_unusable_champion_fails_the_job_without_leaving_a_model(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3", **FAST_HYPERPARAMETERS, "epochs": "1"}, n_train=100)
    champion = root / "input" / "data" / "champion"
    champion.mkdir()
    (champion / "model.tar.gz").write_bytes(b"not a tarball")
    _assert_failed(root, train_in_process(root), "Champion", "model.tar.gz")


def test_console_script_exits_non_zero_on_failure(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3", "top_k": "0"}, n_train=20)
    completed = subprocess.run(
        [console_script("train")], env={**os.environ, ROOT_ENV: str(root)},
        capture_output=True, text=True, timeout=120,
    )
    reason = _assert_failed(root, completed.returncode, "top_k")
    assert reason.strip() in completed.stdout


def test_empty_champion_channel_means_no_champion(tmp_path: Path):
    from recsys_model.bundle import locate_champion

    (tmp_path / "champion").mkdir()
    assert locate_champion(tmp_path / "champion", tmp_path / "scratch") is None
    assert locate_champion(tmp_path / "absent", tmp_path / "scratch") is None
    write_channel(tmp_path / "champion" / "junk", [])
    (tmp_path / "champion" / "notes.txt").write_text("x")
    from recsys_model.contract import TrainingError

    with pytest.raises(TrainingError, match="holds no model"):
        locate_champion(tmp_path / "champion", tmp_path / "scratch")


def test_mixed_precision_trains_to_the_same_quality_and_serves_from_its_model_file(tmp_path: Path, first_run: Path):
    """precision=mixed_float16 (for a GPU's tensor cores) trains here on CPU too: the same chains
    found as in float32, the loss finite, and the saved model loads with its precision."""
    root = make_root(tmp_path, {"model_version": "v-mixed", **FAST_HYPERPARAMETERS, "precision": "mixed_float16"})
    assert train_in_process(root) == 0, (root / "output" / "failure").read_text()
    mixed = _json(root / "output" / "data" / "evaluation.json")["challenger"]
    full = _json(first_run / "output" / "data" / "evaluation.json")["challenger"]
    assert mixed["test_hr_at_10"] > 0.8 and abs(mixed["test_mrr_at_10"] - full["test_mrr_at_10"]) < 0.05
    losses = [epoch["loss"] for epoch in _json(root / "output" / "data" / "history.json")["epochs"]]
    assert all(0 < loss < 100 for loss in losses) and losses[-1] < losses[0]

    import keras

    network = keras.saving.load_model(root / "model" / "model.keras", compile=False)
    assert network.precision == "mixed_float16" and network.get_layer("session_gru").compute_dtype == "float16"


def test_an_unknown_precision_fails_naming_it(tmp_path: Path):
    root = make_root(tmp_path, {"model_version": "v3", "precision": "float8"}, n_train=50)
    _assert_failed(root, train_in_process(root), "precision", "float8")

