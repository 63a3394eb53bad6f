"""Hyperparameter parsing and root layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys_model.contract import (
    Hyperparameters,
    Paths,
    TrainingError,
    load_hyperparameters,
    parse_hyperparameters,
)


def test_string_values_are_parsed_like_sagemaker_sends_them():
    hp = parse_hyperparameters(
        {
            "model_version": "job-2025-03-01",
            "epochs": "3",
            "batch_size": "128",
            "embedding_dim": "32",
            "hidden_units": "48",
            "learning_rate": "0.01",
            "max_len": "20",
            "top_k": "10",
            "seed": "42",
            "min_item_count": "2",
            "patience": "0",
        }
    )
    assert hp == Hyperparameters(
        model_version="job-2025-03-01", epochs=3, batch_size=128, embedding_dim=32, hidden_units=48,
        learning_rate=0.01, max_len=20, top_k=10, seed=42, min_item_count=2, patience=0,
    )
    assert isinstance(hp.epochs, int) and isinstance(hp.learning_rate, float)


def test_missing_keys_take_the_defaults():
    hp = parse_hyperparameters({"model_version": "v"})
    assert (hp.epochs, hp.batch_size, hp.embedding_dim, hp.hidden_units, hp.successors) == (20, 256, 64, 128, 64)
    assert (hp.learning_rate, hp.max_len, hp.top_k, hp.seed) == (0.002, 50, 20, 7)
    assert (hp.min_item_count, hp.patience) == (1, 2)


def test_plain_json_numbers_and_integral_floats_are_accepted():
    hp = parse_hyperparameters({"model_version": "v", "epochs": 2, "batch_size": "64.0", "learning_rate": 1})
    assert (hp.epochs, hp.batch_size, hp.learning_rate) == (2, 64, 1.0)


def test_platform_keys_are_ignored():
    hp = parse_hyperparameters({"model_version": "v", "sagemaker_region": '"eu-west-1"'})
    assert hp.model_version == "v"


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"model_version": "v", "epoch": "3"}, "epoch"),
        ({"model_version": "v", "epochs": "five"}, "epochs"),
        ({"model_version": "v", "epochs": "2.5"}, "epochs"),
        ({"model_version": "v", "epochs": "0"}, "epochs"),
        ({"model_version": "v", "learning_rate": "-1"}, "learning_rate"),
        ({"model_version": "v", "learning_rate": "nan"}, "learning_rate"),
        ({"model_version": "v", "top_k": True}, "top_k"),
        ({"model_version": ""}, "model_version"),
        ({"model_version": "a/b"}, "model_version"),
        ({"epochs": "3"}, "model_version"),
    ],
)
def test_bad_hyperparameters_name_the_problem(raw, named):
    with pytest.raises(TrainingError, match=named):
        parse_hyperparameters(raw)


def test_hyperparameters_file_must_exist_and_be_json(tmp_path: Path):
    paths = Paths(tmp_path)
    with pytest.raises(TrainingError, match="hyperparameters.json"):
        load_hyperparameters(paths)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text("{not json")
    with pytest.raises(TrainingError, match="not valid JSON"):
        load_hyperparameters(paths)
    paths.hyperparameters.write_text(json.dumps(["model_version"]))
    with pytest.raises(TrainingError, match="JSON object"):
        load_hyperparameters(paths)


def test_root_comes_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("RECSYS_ML_ROOT", str(tmp_path))
    paths = Paths.from_env()
    assert paths.channel("train") == tmp_path / "input" / "data" / "train"
    assert paths.model_dir == tmp_path / "model"
    assert paths.failure == tmp_path / "output" / "failure"
    monkeypatch.delenv("RECSYS_ML_ROOT")
    assert Paths.from_env().root == Path("/opt/ml")
