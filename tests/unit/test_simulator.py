"""Unit tests of the browsing simulator (plugins/recsys/dev/simulator)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.dev.simulator import (PRESETS, SCENARIOS, ensure_days, generate_day, landing_path, main,
                                  oracle_metrics, oracle_next_item_probs, read_day, split_browsing_csv,
                                  summary_stats, write_day)
from recsys.dev.simulator.catalog import live_numbers
from recsys.dev.simulator.chain import sample_sequences
from recsys.dev.simulator.presets import SHAPE
from recsys.dev.simulator.scenarios import catalog_for_day
from recsys.dev.simulator.stats import REFERENCE, StatsAccumulator
from recsys.ingest import RAW_COLUMNS, landing_name
from recsys.settings import SIM_PRESETS, SIM_SCENARIOS

HEX64 = re.compile(r"^[0-9a-f]{64}$")
DAY = dt.date(2026, 3, 3)  # ordinal 739678: not a multiple of 5
EMPTY_DAY = dt.date(2026, 3, 5)  # ordinal 739680: a multiple of 5
INTERACTIONS = ("detail", "add", "purchase")


def interaction_sessions(df: pd.DataFrame) -> list[list[str]]:
    """Per session, the SKUs of its product interactions in time order."""
    m = (df["event_type"] == "event_product") & df["product_action"].isin(INTERACTIONS)
    rows = df[m].sort_values(["session_id_hash", "server_timestamp_epoch_ms"], kind="stable")
    return [g.tolist() for _, g in rows.groupby("session_id_hash", sort=False)["product_sku_hash"]]


def item_shares(df: pd.DataFrame) -> pd.Series:
    m = (df["event_type"] == "event_product") & df["product_action"].isin(INTERACTIONS)
    return df.loc[m, "product_sku_hash"].value_counts(normalize=True)


@pytest.fixture(scope="module")
def tiny_day() -> pd.DataFrame:
    return generate_day(DAY, preset="tiny")


@pytest.fixture(scope="module")
def demo_window() -> dict:
    """Statistics of a 14-day demo window (the length of a training window)."""
    acc = StatsAccumulator()
    for i in range(14):
        acc.add(generate_day(dt.date(2026, 3, 1) + dt.timedelta(days=i), preset="demo"))
    return acc.result()


# --- API and schema --------------------------------------------------------------


def test_names_and_presets():
    assert RAW_COLUMNS == ("session_id_hash", "event_type", "product_action",
                           "product_sku_hash", "server_timestamp_epoch_ms", "hashed_url")
    assert SCENARIOS == ("steady", "popularity_shift", "catalog_churn", "broken_feed")
    assert {"tiny", "demo", "coveo"} <= set(PRESETS)
    coveo = PRESETS["coveo"]
    assert coveo.sessions_per_day == 54_000 and coveo.new_skus_per_day == 356
    assert abs(coveo.n_skus - 57_500) < 500


def test_settings_accept_exactly_the_presets_and_scenarios_the_simulator_knows():
    assert SIM_PRESETS == tuple(PRESETS)
    assert SIM_SCENARIOS == SCENARIOS


def test_landing_files_are_named_as_ingest_reads_them(tmp_path):
    assert landing_path(tmp_path, DAY) == tmp_path / landing_name(DAY) == tmp_path / "browsing_2026-03-03.csv"


def test_schema_dtypes_and_hashes(tiny_day):
    df = tiny_day
    assert tuple(df.columns) == RAW_COLUMNS
    assert 300 <= df["session_id_hash"].nunique() <= 600
    assert df["server_timestamp_epoch_ms"].dtype == np.int64
    for column in ("session_id_hash", "hashed_url"):
        assert df[column].notna().all()
        assert df[column].map(lambda s: bool(HEX64.match(s))).all()
    skus = df["product_sku_hash"].dropna()
    assert skus.map(lambda s: bool(HEX64.match(s))).all()

    assert set(df["event_type"]) == {"pageview", "event_product"}
    pageview = df["event_type"] == "pageview"
    assert df.loc[pageview, "product_action"].isna().all()
    assert set(df.loc[~pageview, "product_action"]) == {"detail", "add", "remove", "purchase"}
    assert df.loc[~pageview, "product_sku_hash"].notna().all()
    # Pageviews of non-product pages carry no SKU.
    assert df.loc[pageview, "product_sku_hash"].isna().any()

    start = pd.Timestamp(DAY, tz="UTC").value // 1_000_000
    ts = df["server_timestamp_epoch_ms"]
    assert ts.min() >= start and ts.max() < start + 86_400_000
    assert ts.is_monotonic_increasing


def test_every_detail_has_its_pageview(tiny_day):
    df = tiny_day
    keys = ["session_id_hash", "hashed_url", "server_timestamp_epoch_ms", "product_sku_hash"]
    details = df[df["product_action"] == "detail"][keys]
    views = df[df["event_type"] == "pageview"][keys].drop_duplicates()
    paired = details.merge(views, on=keys, how="left", indicator=True)
    assert len(details) > 100
    assert (paired["_merge"] == "both").all()


def test_sessions_have_no_30_minute_gap(tiny_day):
    ts = tiny_day.sort_values(["session_id_hash", "server_timestamp_epoch_ms"])
    gaps = ts.groupby("session_id_hash")["server_timestamp_epoch_ms"].diff().dropna()
    assert gaps.max() < 30 * 60 * 1000


# --- determinism and catalogue -------------------------------------------------


def test_deterministic_and_independent_of_order():
    days = [dt.date(2026, 2, 10), dt.date(2026, 2, 11)]
    first = [generate_day(d, preset="tiny", seed=3) for d in days]
    catalog_for_day.cache_clear()
    # Other days, other presets and the reverse order in between change nothing.
    generate_day(dt.date(2026, 5, 1), preset="demo", seed=3)
    again = [generate_day(d, preset="tiny", seed=3) for d in reversed(days)][::-1]
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    other_seed = generate_day(days[0], preset="tiny", seed=4)
    assert not set(other_seed["session_id_hash"]) & set(first[0]["session_id_hash"])


def test_catalogue_churns_daily_and_works_before_epoch():
    preset = PRESETS["tiny"]
    for day in (dt.date(2025, 6, 1), dt.date(2026, 3, 3)):  # before and after EPOCH
        today = set(live_numbers(preset, day.toordinal()))
        tomorrow = set(live_numbers(preset, day.toordinal() + 1))
        assert len(tomorrow - today) == preset.new_skus_per_day
        assert len(today) == len(tomorrow)
    before = generate_day(dt.date(2025, 6, 1), preset="tiny")
    assert len(before) > 1000
    # The same SKU keeps its hash across days: consecutive days share most SKUs.
    a = catalog_for_day("tiny", 7, DAY.toordinal(), "steady")
    b = catalog_for_day("tiny", 7, DAY.toordinal() + 1, "steady")
    assert len(set(a.skus) & set(b.skus)) == len(a) - preset.new_skus_per_day


# --- landing files ----------------------------------------------------------------


def test_landing_path(tmp_path):
    assert landing_path(tmp_path, DAY) == tmp_path / "browsing_2026-03-03.csv"


def test_write_day_round_trips_without_temp_files(tmp_path, tiny_day):
    path = write_day(tmp_path, DAY, preset="tiny")
    assert path == landing_path(tmp_path, DAY)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(RAW_COLUMNS)
    pageview = next(line for line in lines[1:] if ",pageview,," in line)
    assert pageview.split(",")[2:4] == ["", ""]  # empty action and SKU
    back = read_day(path)
    assert len(back) == len(tiny_day)
    assert (back["server_timestamp_epoch_ms"].to_numpy() == tiny_day["server_timestamp_epoch_ms"]).all()
    assert (back["session_id_hash"].to_numpy() == tiny_day["session_id_hash"].to_numpy()).all()
    assert back["product_sku_hash"].isna().sum() == tiny_day["product_sku_hash"].isna().sum()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        write_day(tmp_path, DAY, preset="tiny")
    assert list(tmp_path.iterdir()) == []


def test_ensure_days_writes_only_missing(tmp_path):
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    assert ensure_days(tmp_path, days, preset="tiny") == days
    kept = landing_path(tmp_path, days[0])
    kept.write_text("delivered earlier\n")
    stamp = kept.stat().st_mtime_ns
    landing_path(tmp_path, days[2]).unlink()

    assert ensure_days(tmp_path, days, preset="tiny") == [days[2]]
    assert kept.read_text() == "delivered earlier\n" and kept.stat().st_mtime_ns == stamp
    assert ensure_days(tmp_path, days, preset="tiny") == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_split_browsing_csv_round_trips(tmp_path):
    days = [dt.date(2026, 4, 1) + dt.timedelta(days=i) for i in range(3)]
    frames = {d: generate_day(d, preset="tiny", seed=11) for d in days}
    # Like the real file: an unnamed index column, an extra column, rows not in day order.
    whole = pd.concat(frames.values(), ignore_index=True).sample(frac=1.0, random_state=0)
    whole["extra"] = "x"
    source = tmp_path / "browsing_train.csv"
    whole.to_csv(source, index=True)

    out = tmp_path / "landing"
    assert split_browsing_csv(source, out, chunksize=700) == days
    assert sorted(p.name for p in out.iterdir()) == [landing_path(out, d).name for d in days]
    for d in days:
        back = read_day(landing_path(out, d))
        assert tuple(back.columns) == RAW_COLUMNS
        expected = frames[d]
        key = list(RAW_COLUMNS)
        a = back.astype(str).sort_values(key).reset_index(drop=True)
        b = expected.astype(str).sort_values(key).reset_index(drop=True)
        assert len(a) == len(b)
        assert (a["session_id_hash"] == b["session_id_hash"]).all()
        assert (a["server_timestamp_epoch_ms"] == b["server_timestamp_epoch_ms"]).all()
        assert (back["product_sku_hash"].isna().sum() == expected["product_sku_hash"].isna().sum())


# --- statistical shape ---------------------------------------------------------------


def test_shape_matches_reference(demo_window):
    """A 14-day demo window against DATA.md.

    Tolerances: +-2 points on the two big event shares and +-30 % relative on the rare
    cart events (their counts are in the thousands, and the cart model is simpler than
    real shopping); +-3 points on the pageview-only share and the repeat rate; exact
    median and +-2 on p90 of session length (integers); +-5 points on the popularity
    concentration, which depends on how many interactions the sample holds.
    """
    s, ref = demo_window, REFERENCE
    mix, ref_mix = s["event_mix"], ref["event_mix"]
    assert abs(mix["pageview"] - ref_mix["pageview"]) < 0.02
    assert abs(mix["detail"] - ref_mix["detail"]) < 0.02
    for kind in ("add", "remove", "purchase"):
        assert abs(mix[kind] / ref_mix[kind] - 1) < 0.30, kind
    assert abs(s["pageview_only_session_share"] - 0.66) < 0.03
    assert s["session_length"]["median"] == 3
    assert abs(s["session_length"]["p90"] - 17) <= 2
    assert abs(s["session_length"]["mean"] - 7.3) < 0.6
    assert s["session_length"]["max"] <= 200
    assert abs(s["session_duration_s"]["median"] - 22) < 8
    assert 400 < s["session_duration_s"]["p90"] < 800
    assert abs(s["popularity"]["top1_share"] - 0.347) < 0.05
    assert abs(s["popularity"]["top5_share"] - 0.672) < 0.05
    assert abs(s["repeat_rate"] - 0.13) < 0.03
    assert abs(s["purchase_rate_among_add_sessions"] - 0.20) < 0.07
    assert s["quality"] == dict.fromkeys(s["quality"], 0)
    # Sessions per day and catalogue scale of the demo preset.
    assert 5_000 <= s["sessions"] / 14 <= 10_000
    assert 1_000 <= s["skus"] <= 3_000


def test_summary_stats_of_empty_frame():
    s = summary_stats(generate_day(EMPTY_DAY, preset="tiny", scenario="broken_feed"))
    assert s["rows"] == 0 and s["sessions"] == 0 and s["repeat_rate"] is None


# --- scenarios -------------------------------------------------------------------------


def _steady_window(end: dt.date, days: int, preset: str = "demo") -> pd.DataFrame:
    return pd.concat([generate_day(end - dt.timedelta(days=i), preset=preset)
                      for i in range(1, days + 1)])


def total_variation(p: pd.Series, q: pd.Series) -> float:
    p, q = p.align(q, fill_value=0.0)
    return 0.5 * float((p - q).abs().sum())


def test_popularity_shift_moves_item_shares():
    window = item_shares(_steady_window(DAY, 3))
    steady = item_shares(generate_day(DAY, preset="demo"))
    shifted = item_shares(generate_day(DAY, preset="demo", scenario="popularity_shift"))
    # Drift on item shares: small between steady days, large on the shifted day.
    assert total_variation(window, steady) < 0.25
    assert total_variation(window, shifted) > 0.6
    top = window.index[:20]
    assert len(set(top) & set(shifted.index[:20])) <= 4
    assert shifted.reindex(top, fill_value=0).sum() < 0.3 * steady.reindex(top, fill_value=0).sum()


def test_catalog_churn_brings_unseen_skus():
    seen = set(_steady_window(DAY, 7).loc[lambda d: d["product_sku_hash"].notna(),
                                          "product_sku_hash"])

    def unseen_share(df):
        shares = item_shares(df)
        return float(shares[~shares.index.isin(seen)].sum())

    churn = generate_day(DAY, preset="demo", scenario="catalog_churn")
    assert unseen_share(generate_day(DAY, preset="demo")) < 0.05
    assert unseen_share(churn) > 0.3
    # Launched SKUs are outside the regular catalogue and belong to that day only.
    regular = set(catalog_for_day("demo", 7, DAY.toordinal(), "steady").skus)
    launched = set(item_shares(churn).index) - regular
    assert unseen_share(churn) - 0.05 < float(item_shares(churn).reindex(list(launched)).sum())
    next_day = generate_day(DAY + dt.timedelta(days=1), preset="demo", scenario="catalog_churn")
    assert len(launched) > 100 and not launched & set(next_day["product_sku_hash"].dropna())


def test_broken_feed_damages_rows():
    df = generate_day(DAY, preset="tiny", scenario="broken_feed")
    steady = generate_day(DAY, preset="tiny")
    assert len(df) > len(steady)
    assert df["session_id_hash"].isna().any()
    assert df["event_type"].isna().any()
    assert df["server_timestamp_epoch_ms"].isna().any()
    types = set(df["event_type"].dropna())
    assert types - {"pageview", "event_product"}
    assert df.duplicated().any()
    quality = summary_stats(df)["quality"]
    assert all(v > 0 for v in quality.values()), quality


def test_broken_feed_empty_day_rule(tmp_path):
    assert EMPTY_DAY.toordinal() % 5 == 0 and DAY.toordinal() % 5 != 0
    empty = generate_day(EMPTY_DAY, preset="tiny", scenario="broken_feed")
    assert empty.empty and tuple(empty.columns) == RAW_COLUMNS
    path = write_day(tmp_path, EMPTY_DAY, preset="tiny", scenario="broken_feed")
    assert path.read_text().splitlines() == [",".join(RAW_COLUMNS)]
    # Only the scenario day changes: the steady version of that day has rows.
    assert len(generate_day(EMPTY_DAY, preset="tiny")) > 0


# --- oracle ----------------------------------------------------------------------------


def test_oracle_probabilities_sum_to_one(tiny_day):
    sessions = [s for s in interaction_sessions(tiny_day) if len(s) >= 3]
    prefixes = [[], sessions[0][:1], sessions[0][:3], sessions[1], [sessions[1][0]] * 2,
                ["f" * 64], sessions[0][:2] + ["e" * 64]]
    for prefix in prefixes:
        probs = oracle_next_item_probs(prefix, DAY, preset="tiny")
        assert abs(sum(probs.values()) - 1) < 1e-9
        assert min(probs.values()) > 0
    # Right after a repeat the same product comes again with at least that probability.
    sku = sessions[0][0]
    assert oracle_next_item_probs([sku, sku], DAY, preset="tiny")[sku] >= SHAPE.p_repeat_after_repeat


def test_oracle_matches_the_process():
    """Empirical next-item frequencies of the generator agree with the oracle."""
    catalog = catalog_for_day("tiny", 7, DAY.toordinal(), "steady")
    lengths = np.full(200_000, 3)
    seq, _ = sample_sequences(catalog, lengths, np.random.default_rng(0))
    for prefix_len in (1, 2):
        prefix = seq[0, :prefix_len]
        match = (seq[:, :prefix_len] == prefix).all(axis=1)
        counts = Counter(catalog.skus[seq[match, prefix_len]])
        probs = oracle_next_item_probs(list(catalog.skus[prefix]), DAY, preset="tiny")
        n = sum(counts.values())
        assert n > 500
        tv = 0.5 * sum(abs(counts.get(s, 0) / n - probs.get(s, 0.0))
                       for s in set(counts) | set(probs))
        # Sampling noise of n draws over a few dozen likely SKUs stays well below this.
        assert tv < 0.08, (prefix_len, n, tv)


def test_oracle_beats_most_popular():
    train = pd.concat([generate_day(DAY - dt.timedelta(days=i), preset="demo") for i in (1, 2, 3)])
    top = item_shares(train).index[:20].tolist()
    sessions = interaction_sessions(generate_day(DAY, preset="demo"))[:1500]
    hits = rr = n = 0
    for items in sessions:
        for i in range(1, len(items)):
            n += 1
            if items[i] in top:
                hits += 1
                rr += 1 / (top.index(items[i]) + 1)
    popular = {"hr": hits / n, "mrr": rr / n}
    oracle = oracle_metrics(sessions, DAY, k=20, preset="demo")
    assert oracle["positions"] == n
    assert oracle["hr_at_k"] > popular["hr"] + 0.3
    assert oracle["mrr_at_k"] > popular["mrr"] + 0.3
    assert oracle["hr_at_k"] <= 1 and oracle["mrr_at_k"] <= oracle["hr_at_k"]


# --- command line ------------------------------------------------------------------------


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "examples" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--out", "x", "--start", "2026-03-01", "--days", "1", "--scenario", "nope"], "nope"),
    (["generate", "--out", "x", "--start", "2026-03-01", "--days", "1", "--preset", "huge"], "huge"),
    (["generate", "--out", "x", "--start", "2026-13-01", "--days", "1"], "2026-13-01"),
    (["split", "/no/such/browsing_train.csv", "--out", "x"], "/no/such/browsing_train.csv"),
    (["stats", "/no/such/folder"], "/no/such/folder"),
])
def test_cli_bad_input_exits_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert needle in capsys.readouterr().err


def test_cli_generate_and_stats(tmp_path, capsys):
    argv = ["generate", "--out", str(tmp_path), "--start", "2026-03-01", "--days", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(" rows ") == 2 and out.count(" sessions ") == 2
    assert main(argv) == 0
    assert capsys.readouterr().out.count("exists, kept") == 2
    assert main(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for needle in ("event mix: pageview", "pageview-only", "session length", "top1_share",
                   "repeat", "new SKUs per day"):
        assert needle in out


def test_cli_module_entry_point():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "plugins"))
    done = subprocess.run([sys.executable, "-m", "recsys.dev.simulator", "generate", "--out", "x",
                           "--start", "2026-03-01", "--days", "1", "--scenario", "nope"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "nope" in done.stderr and "Traceback" not in done.stderr
