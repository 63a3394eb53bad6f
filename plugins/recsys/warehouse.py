"""The warehouse: a DuckDB file locally, Snowflake in production.

Only two operations cross this boundary: replace the raw events of some days
(in one transaction, so a re-run never duplicates a day) and read a query into
a DataFrame. dbt does everything in between. Snowflake has a third, for the
export that stays in the warehouse: run statements and return their (small) results.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Protocol

import pandas as pd

from recsys.settings import Settings

log = logging.getLogger(__name__)

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
        """Load ``frame`` into a staging table of its own, then swap the days in with DML only
        (DELETE + INSERT ... SELECT) in one transaction. Snowflake commits an open transaction
        before any DDL, and ``write_pandas`` runs DDL (its temporary stage and file format):
        inside the transaction it would commit the DELETE before the rows are in."""
        from snowflake.connector.pandas_tools import write_pandas

        def load(conn, cur, staging_name: str) -> dict[dt.date, int]:
            upper = frame.rename(columns=str.upper)
            if len(upper):
                write_pandas(conn, upper, staging_name, schema=self.raw_schema, auto_create_table=False)
            return {}

        self._replace(days, load)
        return len(frame)

    def copy_days(self, stage: str, days: list[dt.date]) -> dict[dt.date, int]:
        """Load each day's landing file from ``stage`` (an external stage over the landing
        bucket) with COPY INTO: Snowflake reads the files, the worker never holds them. Then the
        same swap as ``replace_days``. Returns the rows loaded per day. A staging table of its
        own also means a re-run loads its files again (COPY skips files it has loaded into a
        table before)."""
        from recsys.ingest import RAW_COLUMNS, landing_name

        def load(conn, cur, staging_name: str) -> dict[dt.date, int]:
            staging, loaded = f"{self.raw_schema}.{staging_name}", {}
            for day in days:
                # by position, as the header check found them; fields may be quoted, empty ones are null
                cur.execute(
                    f"copy into {staging} ({', '.join(RAW_COLUMNS)}) from @{stage} "
                    f"files = ('{landing_name(day)}') "
                    "file_format = (type = csv skip_header = 1 field_optionally_enclosed_by = '\"' "
                    "empty_field_as_null = true) on_error = abort_statement")
                results = [dict(zip([c[0].lower() for c in cur.description], row)) for row in cur.fetchall()]
                failed = [r for r in results if str(r.get("status", "")).upper() not in ("LOADED", "")]
                if failed:
                    raise RuntimeError(f"COPY INTO of {landing_name(day)} from @{stage}: {failed[0].get('status')} "
                                       f"({failed[0].get('first_error')})")
                loaded[day] = sum(int(r.get("rows_loaded") or 0) for r in results)
                cur.execute(f"update {staging} set event_date = %s, loaded_at = current_timestamp() "
                            "where event_date is null", [day.isoformat()])
            return loaded

        return self._replace(days, load)

    def _replace(self, days: list[dt.date], load) -> dict[dt.date, int]:
        """``load`` fills a fresh staging table (DDL and bulk loads, outside any transaction:
        the raw table is not touched yet), then the days are replaced with DML only, in one
        transaction, and the staging table is dropped whatever happened."""
        table = f"{self.raw_schema}.{RAW_TABLE.upper()}"
        # one per load: nights of a backfill load side by side
        staging_name = f"{RAW_TABLE.upper()}_STAGING_{uuid.uuid4().hex[:12].upper()}"
        staging = f"{self.raw_schema}.{staging_name}"
        conn = self._hook().get_conn()
        cur = conn.cursor()
        try:
            cur.execute(f"create schema if not exists {self.raw_schema}")
            cur.execute(RAW_DDL.format(schema=self.raw_schema, table=RAW_TABLE.upper()))
            cur.execute(f"create transient table {staging} like {table}")
            loaded = load(conn, cur, staging_name)
            cur.execute("begin")
            try:
                placeholders = ", ".join(["%s"] * len(days))
                cur.execute(f"delete from {table} where event_date in ({placeholders})",
                            [d.isoformat() for d in days])
                cur.execute(f"insert into {table} select * from {staging}")
                cur.execute("commit")
            except BaseException:
                conn.rollback()
                raise
        finally:
            try:
                cur.execute(f"drop table if exists {staging}")
            except Exception:  # never hide the load's own error; an orphan is named in the log
                log.warning("could not drop the staging table %s: drop it by hand", staging, exc_info=True)
            finally:
                conn.close()
        return loaded

    def query(self, sql: str) -> pd.DataFrame:
        frame = self._hook().get_pandas_df(sql)
        return frame.rename(columns=str.lower)

    def execute(self, statements: list[str]) -> list[list[tuple]]:
        """Run statements in order on one connection; each one's result rows (an aggregate,
        or what COPY INTO answers), never a large result."""
        conn = self._hook().get_conn()
        try:
            cur = conn.cursor()
            results = []
            for sql in statements:
                cur.execute(sql)
                results.append(cur.fetchall())
            return results
        finally:
            conn.close()


def get_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse == "snowflake":
        return SnowflakeWarehouse(settings)
    return DuckDBWarehouse(settings)
