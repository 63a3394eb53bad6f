"""The warehouse: a DuckDB file locally, Snowflake in production.

Only two operations cross this boundary: replace the raw events of some days
(in one transaction, so a re-run never duplicates a day) and read a query into
a DataFrame. dbt does everything in between.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pandas as pd

from recsys.settings import Settings

RAW_TABLE = "browsing_events"
RAW_DDL = """
create table if not exists {schema}.{table} (
    session_id_hash varchar,
    event_type varchar,
    product_action varchar,
    product_sku_hash varchar,
    server_timestamp_epoch_ms bigint,
    hashed_url varchar,
    event_date date,
    loaded_at timestamp
)
"""


class Warehouse(Protocol):
    def replace_days(self, frame: pd.DataFrame, days: list[dt.date]) -> int: ...

    def query(self, sql: str) -> pd.DataFrame: ...


class DuckDBWarehouse:
    def __init__(self, settings: Settings):
        self.path = settings.duckdb_path
        self.raw_schema = settings.raw_schema
        self.analytics_schema = settings.analytics_schema

    def _connect(self):
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.path))

    def replace_days(self, frame: pd.DataFrame, days: list[dt.date]) -> int:
        # DuckDB allows one writer: open, write, close, so dbt can take over next.
        with self._connect() as con:
            con.execute(f"create schema if not exists {self.raw_schema}")
            con.execute(RAW_DDL.format(schema=self.raw_schema, table=RAW_TABLE))
            con.execute("begin transaction")
            con.execute(
                f"delete from {self.raw_schema}.{RAW_TABLE} where event_date in (select unnest(?::date[]))",
                [days],
            )
            con.register("incoming", frame)
            con.execute(f"insert into {self.raw_schema}.{RAW_TABLE} by name select * from incoming")
            con.execute("commit")
            return len(frame)

    def query(self, sql: str) -> pd.DataFrame:
        with self._connect() as con:
            return con.execute(sql).df()


class SnowflakeWarehouse:
    """Snowflake through the Airflow connection ``snowflake_default``."""

    def __init__(self, settings: Settings):
        self.conn_id = settings.snowflake_conn_id
        self.raw_schema = settings.raw_schema.upper()
        self.analytics_schema = settings.analytics_schema.upper()

    def _hook(self):
        from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

        return SnowflakeHook(snowflake_conn_id=self.conn_id)

    def replace_days(self, frame: pd.DataFrame, days: list[dt.date]) -> int:
        from snowflake.connector.pandas_tools import write_pandas

        conn = self._hook().get_conn()
        try:
            cur = conn.cursor()
            cur.execute(f"create schema if not exists {self.raw_schema}")
            cur.execute(RAW_DDL.format(schema=self.raw_schema, table=RAW_TABLE.upper()))
            cur.execute("begin")
            placeholders = ", ".join(["%s"] * len(days))
            cur.execute(
                f"delete from {self.raw_schema}.{RAW_TABLE.upper()} where event_date in ({placeholders})",
                [d.isoformat() for d in days],
            )
            upper = frame.rename(columns=str.upper)
            if len(upper):
                write_pandas(conn, upper, RAW_TABLE.upper(), schema=self.raw_schema, auto_create_table=False)
            cur.execute("commit")
        except Exception:
            conn.rollback()
            raise
        finally:
            conn.close()
        return len(frame)

    def query(self, sql: str) -> pd.DataFrame:
        frame = self._hook().get_pandas_df(sql)
        return frame.rename(columns=str.lower)


def get_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse == "snowflake":
        return SnowflakeWarehouse(settings)
    return DuckDBWarehouse(settings)
