"""Channel reading, vocabulary, training sequences and the evaluation protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from image_synthetic import make_sessions, write_channel
from recsys_model.contract import Hyperparameters, TrainingError
from recsys_model.data import (
    OOV,
    PAD,
    Vocabulary,
    build_vocabulary,
    item_counts,
    model_input,
    read_channel,
    training_sequences,
)


def _write(directory: Path, table: pa.Table, name: str = "part.parquet") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / name)


def _rows(*sessions: list[str]) -> list[dict]:
    return [
        {"session_id": f"s{i}", "session_date": "2025-03-01", "items": items}
        for i, items in enumerate(sessions)
    ]


def test_reads_all_parquet_files_and_drops_unusable_sessions(tmp_path: Path):
    write_channel(tmp_path / "train", _rows(["a", "b"], ["c"], ["a", "b", "c"], [], ["d", "e"]), files=2)
    sessions = read_channel(tmp_path / "train", "train")
    assert sorted(sessions.session_ids) == ["s0", "s2", "s4"]
    assert sessions.n_interactions == 7
    assert sessions.n_examples == 4
    by_id = {
        sid: sessions.skus[sessions.offsets[i] : sessions.offsets[i + 1]].to_pylist()
        for i, sid in enumerate(sessions.session_ids)
    }
    assert by_id == {"s0": ["a", "b"], "s2": ["a", "b", "c"], "s4": ["d", "e"]}


def test_sessions_with_null_skus_are_dropped(tmp_path: Path):
    write_channel(tmp_path / "c", _rows(["a", None, "b"], ["a", "b"]))
    assert read_channel(tmp_path / "c", "c").session_ids == ["s1"]


def test_large_string_types_are_accepted(tmp_path: Path):
    table = pa.table(
        {
            "session_id": pa.array(["s0"], pa.large_string()),
            "session_date": pa.array(["2025-03-01"], pa.large_string()),
            "items": pa.array([["a", "b"]], pa.large_list(pa.large_string())),
        }
    )
    _write(tmp_path / "c", table)
    assert read_channel(tmp_path / "c", "c").skus.to_pylist() == ["a", "b"]


def test_missing_and_empty_channels_fail_by_name(tmp_path: Path):
    with pytest.raises(TrainingError, match="Channel 'validation' is missing"):
        read_channel(tmp_path / "validation", "validation")
    (tmp_path / "test").mkdir()
    with pytest.raises(TrainingError, match="Channel 'test' is empty"):
        read_channel(tmp_path / "test", "test")
    write_channel(tmp_path / "short", _rows(["a"], ["b"]))
    with pytest.raises(TrainingError, match="no usable sessions"):
        read_channel(tmp_path / "short", "short")


def test_items_unloaded_by_snowflake_as_json_text_are_read_as_lists(tmp_path: Path):
    """Snowflake's COPY INTO ... parquet writes an ARRAY column as JSON text."""
    table = pa.table({
        "session_id": ["s0", "s1", "s2", "s3"],
        "session_date": ["2025-03-01"] * 4,
        "items": ['[\n  "a",\n  "b",\n  "c"\n]', '["d"]', '["a", null, "b"]', '["e","a"]'],
    })
    _write(tmp_path / "unloaded", table)
    sessions = read_channel(tmp_path / "unloaded", "train")
    # the same rules as for lists: one item or a null SKU drops the session
    assert sessions.session_ids == ["s0", "s3"]
    assert sessions.skus.to_pylist() == ["a", "b", "c", "e", "a"]
    assert sessions.offsets.tolist() == [0, 3, 5]
    _write(tmp_path / "object", pa.table({"session_id": ["s0"], "session_date": ["2025-03-01"],
                                          "items": ['{"sku": "a"}']}))
    with pytest.raises(TrainingError, match=r"column items .* expected list<string> or a JSON array"):
        read_channel(tmp_path / "object", "train")


def test_schema_mismatch_names_the_column(tmp_path: Path):
    wrong_type = pa.table({"session_id": ["s0"], "session_date": ["2025-03-01"], "items": ["a,b"]})
    _write(tmp_path / "typed", wrong_type)
    with pytest.raises(TrainingError, match=r"column items .* has type string, expected list<string>"):
        read_channel(tmp_path / "typed", "train")
    missing = pa.table({"session_id": ["s0"], "items": [["a", "b"]]})
    _write(tmp_path / "missing", missing)
    with pytest.raises(TrainingError, match="lacks column\\(s\\) session_date"):
        read_channel(tmp_path / "missing", "train")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(TrainingError, match="not a readable parquet file"):
        read_channel(tmp_path / "garbage", "train")


def test_vocabulary_is_ordered_by_count_and_respects_min_count(tmp_path: Path):
    write_channel(tmp_path / "t", _rows(["b", "a", "b"], ["c", "b", "a"], ["d", "b"]))
    counts = item_counts(read_channel(tmp_path / "t", "t"))
    assert counts == [("b", 4), ("a", 2), ("c", 1), ("d", 1)]
    vocab = build_vocabulary(counts, min_item_count=2)
    assert vocab.items == ["b", "a"] and vocab.size == 4
    assert vocab.encode(pa.array(["a", "zzz", "b"])).tolist() == [3, OOV, 2]
    assert Vocabulary.from_json(vocab.to_json()).index == vocab.index
    with pytest.raises(TrainingError, match="min_item_count=5"):
        build_vocabulary(counts, min_item_count=5)


def test_long_sessions_become_windows_and_unknown_targets_are_ignored():
    ids = np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, OOV, 5], dtype=np.int32)
    offsets = np.array([0, 8, 11])
    x, y = training_sequences(ids, offsets, max_len=3)
    # session 1 (8 items): windows [2,3,4,5], [5,6,7,8], [8,9]; session 2: [2,OOV,5]
    assert x.tolist() == [[2, 3, 4], [5, 6, 7], [8, PAD, PAD], [2, OOV, PAD]]
    assert y.tolist() == [[3, 4, 5], [6, 7, 8], [9, PAD, PAD], [PAD, 5, PAD]]


def test_model_ranks_match_reading_each_prefix_alone_as_the_server_reads_it(tmp_path: Path, monkeypatch):
    """The batched evaluation equals scoring every prefix on its own, read as the server reads
    a session (model_input: unknown SKUs dropped, the last max_len known items); a prefix
    without a known SKU is answered with the popularity ranking."""
    import keras

    from recsys_model import evaluate
    from recsys_model.evaluate import model_ranks, target_indices
    from recsys_model.model import Scorer, build_model, transition_table

    monkeypatch.setattr(evaluate, "_MAX_ROWS", 7)  # many small scoring calls

    rows = make_sessions(25, seed=3, prefix="t")
    write_channel(tmp_path / "t", rows)
    train = read_channel(tmp_path / "t", "t")
    counts = item_counts(train)
    vocab = build_vocabulary(counts[:-5], 1)  # a few SKUs left out: unknown targets must miss
    unknown, known = [sku for sku, _ in counts[-5:]], vocab.items
    rows += _rows(
        # unknown SKUs inside a prefix longer than max_len
        [unknown[0], known[0], unknown[1], known[1], known[2], unknown[2], known[3], known[4], known[5], known[6]],
        [unknown[0], known[3], known[7]],  # no known SKU before the first target: popularity answers
        [unknown[0], unknown[1], unknown[2]],  # nothing known at all
        [unknown[3], unknown[4], known[-1]],  # a cold prefix whose target is not among the popular
    )
    write_channel(tmp_path / "u", rows)
    sessions = read_channel(tmp_path / "u", "u")
    popular = [sku for sku, _ in counts[:20]]
    hp = Hyperparameters(model_version="v", embedding_dim=8, hidden_units=8, max_len=3, successors=8)
    keras.utils.set_random_seed(1)
    # every source of the mixture takes part: the transition table is the train sessions'
    network = build_model(vocab.size, hp, transition_table(vocab.encode(train.skus), train.offsets, vocab.size, hp.successors))
    assert float(network.followed.numpy().sum()) > 0
    ranks = model_ranks(Scorer(network), vocab, hp.max_len, sessions, popular)

    ids = vocab.encode(sessions.skus)
    skus = sessions.skus.to_pylist()
    expected, dropped, cold = [], 0, 0
    for s in range(len(sessions)):
        start, end = sessions.offsets[s], sessions.offsets[s + 1]
        session = ids[start:end]
        for i in range(1, len(session)):
            prefix = model_input(session[:i], hp.max_len)
            dropped += OOV in session[max(0, i - hp.max_len) : i]
            target = session[i]
            if len(prefix) == 0:
                cold += 1
                target_sku = skus[start + i]
                rank = popular.index(target_sku) + 1 if target_sku in popular else 0
                expected.append((rank, rank))
            elif target == OOV:
                expected.append((0, 0))
            else:
                logits = np.array(network.probabilities(prefix[None, :], np.array([[0, len(prefix) - 1]], np.int32)))[0]
                logits[:2] = -np.inf
                # batch shapes may change the last float bit: allow near-ties either way
                best, worst = (logits > logits[target] + 1e-5).sum(), (logits > logits[target] - 1e-5).sum()
                expected.append((int(best) + 1, int(worst) + 1))
    assert len(ranks) == sessions.n_examples == len(target_indices(sessions)) == len(expected)
    for rank, (low, high) in zip(ranks.tolist(), expected):
        assert low <= rank <= high
    assert (ranks == 0).any() and (ranks > 0).any()
    assert any(length > hp.max_len + 1 for length in sessions.lengths)
    assert dropped and cold >= 4
    assert len(known) > len(popular) and known[3] in popular and known[-1] not in popular
    assert ranks[-6] == 4  # known[3], answered by the popularity ranking
    assert ranks[-4:].tolist() == [0, 0, 0, 0]  # the last two sessions: targets not in it


def test_metrics_and_popularity_ranks(tmp_path: Path):
    from recsys_model.evaluate import metrics, popularity_ranks, top_k_or_null

    write_channel(tmp_path / "t", _rows(["x", "a", "b"], ["y", "c"]))
    sessions = read_channel(tmp_path / "t", "t")
    ranks = popularity_ranks(["b", "a", "z"], sessions, k=2)
    assert ranks.tolist() == [2, 1, 0]  # targets a, b, c
    assert metrics(ranks, 2, "test_") == {"test_hr_at_2": pytest.approx(2 / 3), "test_mrr_at_2": pytest.approx(0.5)}
    assert top_k_or_null(np.array([1, 5, 0]), 3).to_pylist() == [1, None, None]
