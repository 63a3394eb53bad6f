"""dbt's Snowflake SQL, run for real: the `snowflake` target against fakesnow's server.

The profile is the one the DAG's dbt tasks get: Cosmos renders it from the Airflow
connection ``snowflake_default`` (defined here through AIRFLOW_CONN_SNOWFLAKE_DEFAULT,
pointing at the local server with the extras host / port / protocol http), via
``recsys.dbt_config.profile_config``. Simulated landing days go into RAW.BROWSING_EVENTS
through the Snowflake connector; `dbt build` (models and tests, dbt-snowflake from the
dbt virtualenv) must give the training sequences that pandas derives from the same
rows, and a broken_feed night must fail the feed tests that name its defects.

The key-pair tests need no server: a connection holding a private key renders a
key-pair profile without a password, one without a key renders user and password.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from recsys import dbt_config
from recsys.settings import Settings
from recsys.warehouse import RAW_DDL, RAW_TABLE

# fakesnow's own note on how it builds results, once per query
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

CLEAN_DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
# 2026-03-04's ordinal is not a multiple of 5: broken_feed damages the day instead of emptying it
BROKEN_DAY = dt.date(2026, 3, 4)
DATABASE = "RECSYS"
# dbt_project.yml's defaults, which the DAG does not override
MIN_SESSION_INTERACTIONS, MAX_SESSION_INTERACTIONS = 2, 50
MODELS = ["stg_browsing_events", "sessions", "training_events"]
TESTS = [
    "feed_window_has_events", "feed_no_duplicated_events", "feed_session_id_not_null",
    "feed_event_type_not_null", "feed_event_type_known", "feed_product_action_known",
    "feed_event_time_not_null", "feed_url_not_null", "feed_event_date_not_null",
    "feed_every_window_day_has_rows", "feed_product_sku_not_null", "feed_product_action_not_null",
    "sessions_session_id_not_null", "sessions_one_row_per_session",
    "training_events_not_empty", "training_events_one_row_per_position", "training_events_session_id_not_null",
    "training_events_session_date_not_null", "training_events_position_not_null", "training_events_sku_not_null",
    "training_events_event_time_not_null",
]


def _dbt_has_snowflake(settings: Settings) -> bool:
    """dbt-snowflake installed next to the dbt executable the settings name."""
    env = Path(settings.dbt_executable).parent.parent
    return any(env.glob("lib/python*/site-packages/dbt_snowflake-*.dist-info"))


def _settings(**env: str) -> Settings:
    return Settings.from_env({**os.environ, "RECSYS_WAREHOUSE": "snowflake", **env})


def _connection(**fields) -> str:
    """AIRFLOW_CONN_* JSON of a Snowflake connection; `extra` entries are merged into the defaults."""
    extra = {"account": "recsys-test", "database": DATABASE, "warehouse": "COMPUTE_WH", "role": "SYSADMIN",
             **fields.pop("extra", {})}
    return json.dumps({"conn_type": "snowflake", "login": "recsys", "password": "not-a-secret",
                       **fields, "extra": extra})


def _render(monkeypatch, connection: str) -> tuple[type, dict, dict]:
    """(Cosmos mapping class, profiles.yml target, env vars) the DAG's dbt tasks would get."""
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection)
    config = dbt_config.profile_config(_settings())
    with config.ensure_profile() as (path, env):
        profile = yaml.safe_load(path.read_text())[config.profile_name]
    assert profile["target"] == config.target_name == "snowflake"
    return type(config.profile_mapping.auth_mapping), profile["outputs"]["snowflake"], env


# --- Key-pair or password, chosen by the connection ---------------------------------------


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_a_connection_with_a_password_renders_user_and_password(monkeypatch):
    mapping, target, env = _render(monkeypatch, _connection())
    assert mapping.__name__ == "SnowflakeUserPasswordProfileMapping"
    assert {k: target[k] for k in ("type", "account", "user", "database", "warehouse", "role", "schema")} == {
        "type": "snowflake", "account": "recsys-test", "user": "recsys", "database": DATABASE,
        "warehouse": "COMPUTE_WH", "role": "SYSADMIN", "schema": "analytics"}
    # the secret reaches dbt through the environment, never through the file
    assert target["password"] == "{{ env_var('COSMOS_CONN_SNOWFLAKE_PASSWORD') }}"
    assert env == {"COSMOS_CONN_SNOWFLAKE_PASSWORD": "not-a-secret"}
    assert not {"private_key", "private_key_path", "private_key_passphrase"} & set(target)


def test_a_connection_with_a_private_key_renders_a_key_pair_profile(monkeypatch, private_key_pem):
    # the Snowflake provider (>= 6.3) stores private_key_content base64-encoded
    content = base64.b64encode(private_key_pem.encode()).decode()
    mapping, target, env = _render(monkeypatch, _connection(password="", extra={"private_key_content": content}))
    assert mapping.__name__ == "SnowflakePrivateKeyPemProfileMapping"
    assert "password" not in target and "private_key_passphrase" not in target
    assert target["private_key"] == "{{ env_var('COSMOS_CONN_SNOWFLAKE_PRIVATE_KEY') }}"
    assert env == {"COSMOS_CONN_SNOWFLAKE_PRIVATE_KEY": private_key_pem}
    assert target["user"] == "recsys"


def test_a_private_key_with_a_password_uses_it_as_the_passphrase(monkeypatch, private_key_pem):
    mapping, target, env = _render(monkeypatch, _connection(password="key-passphrase",
                                                            extra={"private_key_content": private_key_pem}))
    assert mapping.__name__ == "SnowflakeEncryptedPrivateKeyPemProfileMapping"
    assert "password" not in target
    assert target["private_key_passphrase"] == "{{ env_var('COSMOS_CONN_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE') }}"
    assert env == {"COSMOS_CONN_SNOWFLAKE_PRIVATE_KEY": private_key_pem,
                   "COSMOS_CONN_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "key-passphrase"}


@pytest.mark.parametrize(("password", "mapping_name"), [
    ("", "SnowflakePrivateKeyFilePemProfileMapping"),
    ("key-passphrase", "SnowflakeEncryptedPrivateKeyFilePemProfileMapping"),
])
def test_a_private_key_file_renders_a_key_path_profile(monkeypatch, password, mapping_name):
    mapping, target, env = _render(monkeypatch, _connection(password=password,
                                                            extra={"private_key_file": "/keys/recsys.p8"}))
    assert mapping.__name__ == mapping_name
    assert target["private_key_path"] == "/keys/recsys.p8"
    assert "password" not in target and "private_key" not in target
    assert ("private_key_passphrase" in target) == bool(password)


def test_the_dag_builds_the_profile_config_without_reading_the_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", raising=False)
    config = dbt_config.profile_config(_settings())  # what parsing the DAG does: no connection needed
    assert (config.profile_name, config.target_name, config.get_profile_type()) == ("recsys", "snowflake",
                                                                                    "snowflake")
    with config.ensure_profile(use_mock_values=True) as (path, env):  # what `dbt ls` rendering would use
        assert yaml.safe_load(path.read_text())["recsys"]["outputs"]["snowflake"]["type"] == "snowflake"
        assert env == {}
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", _connection(password=""))
    with pytest.raises(ValueError, match="'snowflake_default' lacks password"):
        with config.ensure_profile():
            pass


# --- dbt build against fakesnow's server -----------------------------------------------------


@pytest.fixture(scope="module")
def fake_snowflake(tmp_path_factory):
    """fakesnow's server on a free local port, snowflake_default pointing at it, and the
    clean days plus the broken day loaded into RAW.BROWSING_EVENTS."""
    settings = _settings()
    if not Path(settings.dbt_executable).exists():
        pytest.fail(f"dbt not found at {settings.dbt_executable}; create .venv-dbt or set RECSYS_DBT_EXECUTABLE")
    if not _dbt_has_snowflake(settings):
        pytest.skip("dbt-snowflake is not installed in the dbt virtualenv (requirements/dbt.txt)")
    import snowflake.connector

    from tests.snowflake_emulator import fakesnow_server

    with fakesnow_server() as server, pytest.MonkeyPatch.context() as mp:
        # Cosmos' Snowflake mappings read host and port from the extras (the Snowflake
        # connection form hides the connection's own host and port fields)
        mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", _connection(
            login=server["user"], password=server["password"],
            extra={"account": server["account"], "host": server["host"], "port": server["port"],
                   "protocol": server["protocol"]}))
        settings = _settings()
        con = snowflake.connector.connect(**{**server, "network_timeout": 60})
        raw = pd.concat([_load_day(con, settings, CLEAN_DAYS[0], extra_rows=_same_millisecond_session())]
                        + [_load_day(con, settings, day) for day in CLEAN_DAYS[1:]]
                        + [_load_day(con, settings, BROKEN_DAY, scenario="broken_feed")], ignore_index=True)
        yield SimpleNamespace(settings=settings, server=server, con=con, raw=raw,
                              tmp=tmp_path_factory.mktemp("dbt-snowflake"))
        con.close()


TIE_SESSION = "f" * 64


def _same_millisecond_session() -> pd.DataFrame:
    """A session whose product events share one millisecond, landed out of order (the
    simulated feed has no such ties): training keeps funnel order, then product order."""
    at_ms = int(dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)
    return pd.DataFrame(
        [(TIE_SESSION, "event_product", action, sku, at_ms, "page-" + sku)
         for action, sku in [("purchase", "sku-a"), ("add", "sku-c"), ("detail", "sku-d"), ("detail", "sku-b")]],
        columns=["session_id_hash", "event_type", "product_action", "product_sku_hash",
                 "server_timestamp_epoch_ms", "hashed_url"])


def _load_day(con, settings: Settings, day: dt.date, scenario: str = "steady",
              extra_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One simulated landing day (and `extra_rows`) into the raw table, as the ingest step
    leaves it. The rows travel as one JSON document per day (a multi-row INSERT of
    thousands of rows takes fakesnow seconds to parse)."""
    from recsys.dev import simulator

    frame = pd.concat([simulator.generate_day(day, preset="tiny", scenario=scenario), extra_rows],
                      ignore_index=True)
    frame["event_date"] = day
    payload = frame.assign(event_date=day.isoformat()).to_json(orient="records")
    cur = con.cursor()
    cur.execute(f"create database if not exists {DATABASE}")
    cur.execute(f"create schema if not exists {DATABASE}.{settings.raw_schema}")
    cur.execute(f"use schema {DATABASE}.{settings.raw_schema}")
    cur.execute(RAW_DDL.format(schema=settings.raw_schema, table=RAW_TABLE))
    cur.execute(
        f"""
        insert into {settings.raw_schema}.{RAW_TABLE}
        select value:session_id_hash::varchar, value:event_type::varchar, value:product_action::varchar,
               value:product_sku_hash::varchar, value:server_timestamp_epoch_ms::bigint,
               value:hashed_url::varchar, value:event_date::date, %s::timestamp_ntz
        from table(flatten(input => parse_json(%s)))
        """,
        ("2026-03-05 02:00:00", payload),
    )
    assert cur.rowcount == len(frame)
    return frame


def _dbt_build(fake_snowflake, name: str, days: list[dt.date]) -> tuple:
    """`dbt build` of the window days[0]..days[-1] with the DAG's vars and profile;
    returns the process and {model or test: status}."""
    target = fake_snowflake.tmp / name
    window = {"window_start": days[0].isoformat(), "window_end": days[-1].isoformat(),
              "raw_schema": fake_snowflake.settings.raw_schema}
    proc = dbt_config.run_dbt(
        fake_snowflake.settings,
        ["build", "--target-path", str(target), "--log-path", str(target / "logs"), "--vars", json.dumps(window)],
        capture_output=True, text=True, timeout=300,
    )
    results = target / "run_results.json"
    statuses = ({r["unique_id"].split(".")[2]: r["status"] for r in json.loads(results.read_text())["results"]}
                if results.exists() else {})
    return proc, statuses


def _query(con, sql: str) -> pd.DataFrame:
    cur = con.cursor()
    cur.execute(sql)
    return pd.DataFrame(cur.fetchall(), columns=[c.name.lower() for c in cur.description])


@pytest.fixture(scope="module")
def clean_build(fake_snowflake):
    proc, statuses = _dbt_build(fake_snowflake, "clean", CLEAN_DAYS)
    analytics = f"{DATABASE}.{fake_snowflake.settings.analytics_schema}"
    # read now: a later build of another window replaces the staging view
    return SimpleNamespace(
        proc=proc, statuses=statuses,
        training=_query(fake_snowflake.con, f"select session_id, session_date, position, sku, event_ms "
                                       f"from {analytics}.training_events order by session_id, position"),
        sessions=_query(fake_snowflake.con, f"select session_id, session_date, n_events, n_product_interactions "
                                       f"from {analytics}.sessions order by session_id"),
        staged=_query(fake_snowflake.con, f"select event_ms, event_at, event_date from {analytics}.stg_browsing_events"),
    )


def test_the_snowflake_build_runs_every_model_and_test(clean_build):
    output = clean_build.proc.stdout + clean_build.proc.stderr
    assert clean_build.proc.returncode == 0, output
    assert clean_build.statuses == {**{m: "success" for m in MODELS}, **{t: "pass" for t in TESTS}}, output


def _expected_training_events(raw: pd.DataFrame) -> pd.DataFrame:
    """training_events.sql, in pandas."""
    rank = {"detail": 1, "add": 2, "purchase": 3}
    session_date = raw.groupby("session_id_hash")["event_date"].min()
    events = raw[(raw["event_type"] == "event_product") & raw["product_action"].isin(list(rank))].copy()
    events["rank"] = events["product_action"].map(rank)
    events = events.sort_values(
        ["session_id_hash", "server_timestamp_epoch_ms", "rank", "product_sku_hash", "hashed_url"],
        na_position="last", kind="stable")
    events["seq"] = events.groupby("session_id_hash").cumcount() + 1
    n = events.groupby("session_id_hash")["seq"].transform("size")
    keep = (n >= MIN_SESSION_INTERACTIONS) & (events["seq"] > n - MAX_SESSION_INTERACTIONS)
    kept = events[keep]
    return pd.DataFrame({
        "session_id": kept["session_id_hash"].astype(str),
        "session_date": kept["session_id_hash"].map(session_date),
        "position": (kept["seq"] - (n[keep] - MAX_SESSION_INTERACTIONS).clip(lower=0)).astype("int64"),
        "sku": kept["product_sku_hash"].astype(str),
        "event_ms": kept["server_timestamp_epoch_ms"].astype("int64"),
    }).sort_values(["session_id", "position"]).reset_index(drop=True)


def test_training_events_hold_the_sessions_pandas_derives_from_the_feed(fake_snowflake, clean_build):
    raw = fake_snowflake.raw[fake_snowflake.raw["event_date"].isin(CLEAN_DAYS)]
    expected = _expected_training_events(raw)
    actual = clean_build.training.astype({"position": "int64", "event_ms": "int64", "session_id": str, "sku": str})
    assert len(expected) > 1000 and expected["session_id"].nunique() > 100  # a real sample, not a handful
    assert actual["session_id"].nunique() == expected["session_id"].nunique()
    pd.testing.assert_frame_equal(actual, expected)
    ties = actual[actual["session_id"] == TIE_SESSION]
    assert ties["sku"].tolist() == ["sku-b", "sku-d", "sku-c", "sku-a"]
    # sessions longer than the cap keep their last interactions, renumbered from 1
    assert actual.groupby("session_id")["position"].max().max() == MAX_SESSION_INTERACTIONS


def test_sessions_and_timestamps(fake_snowflake, clean_build):
    raw = fake_snowflake.raw[fake_snowflake.raw["event_date"].isin(CLEAN_DAYS)]
    sessions = clean_build.sessions
    assert sessions["session_id"].tolist() == sorted(raw["session_id_hash"].unique())
    assert sessions["n_events"].astype(int).sum() == len(raw)
    staged = clean_build.staged
    assert len(staged) == len(raw)
    # epoch milliseconds -> the UTC wall clock, without a time zone (snowflake__epoch_ms_to_timestamp)
    expected_at = pd.to_datetime(staged["event_ms"].astype("int64"), unit="ms")
    assert (pd.to_datetime(staged["event_at"]) == expected_at).all()
    assert set(staged["event_date"]) == set(CLEAN_DAYS)


def test_a_broken_feed_night_fails_the_build_naming_the_checks(fake_snowflake):
    days = CLEAN_DAYS[1:] + [BROKEN_DAY]
    proc, statuses = _dbt_build(fake_snowflake, "broken", days)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    failed = sorted(name for name, status in statuses.items() if status in ("fail", "error"))
    # broken_feed nulls session ids, event types and timestamps, adds unknown event types and duplicates rows
    assert failed == sorted(["feed_session_id_not_null", "feed_event_type_not_null", "feed_event_type_known",
                             "feed_event_time_not_null", "feed_no_duplicated_events"]), output
    for name in failed:
        assert f"Failure in test {name}" in output, output
    assert statuses["stg_browsing_events"] == "success"
    assert statuses["sessions"] == statuses["training_events"] == "skipped"


def test_dbt_connects_with_a_key_pair_profile(fake_snowflake, monkeypatch, private_key_pem):
    """The key-pair profile as the DAG renders it is one dbt-snowflake accepts: it reads the
    key and logs in with it (fakesnow takes any key; a wrong key is Snowflake's to refuse)."""
    server = fake_snowflake.server
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", _connection(
        login=server["user"], password="",
        extra={"account": server["account"], "host": server["host"], "port": server["port"],
               "protocol": server["protocol"], "private_key_content": private_key_pem}))
    proc = dbt_config.run_dbt(_settings(), ["debug", "--connection", "--log-path", str(fake_snowflake.tmp / "debug")],
                              capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Connection test: [OK connection ok]" in output, output
