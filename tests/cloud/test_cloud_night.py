"""One whole recsys_retrain night with every cloud box selected, on emulated services.

The settings are the production ones (README "Going to production"), and nothing else
differs from the local night: RECSYS_WAREHOUSE=snowflake, RECSYS_STORE_URL and
RECSYS_LANDING_URL on s3://, RECSYS_TRAINING_BACKEND=sagemaker,
RECSYS_ENDPOINT_BACKEND=sagemaker, with the connections aws_default and
snowflake_default. Behind them:

* S3 and SageMaker: moto's server, behind aws_emulator.py (training jobs trained for real
  by the image's ``train``, the endpoint served for real by its ``serve``);
* Snowflake: fakesnow. dbt (Cosmos, in its own virtualenv) reaches its server over HTTP
  with the profile built from snowflake_default; SnowflakeHook, which cannot reach that
  server, gets connections to the same in-process database.

The test records every AWS call and every Snowflake statement and checks the ones that
matter, in order; the champion is the model the endpoint then serves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from unittest import mock

import pytest

from tests.cloud.aws_emulator import REGION
from tests.snowflake_emulator import fakesnow_server

REPO = Path(__file__).resolve().parents[2]
BUCKET = "recsys-prod"
DATABASE = "RECSYS"
NIGHT = dt.datetime(2026, 3, 10, 2, tzinfo=dt.UTC)  # the local end-to-end test's first night
WINDOW = [dt.date(2026, 3, 6) + dt.timedelta(days=i) for i in range(4)]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys-model"

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")]


def _in_order(calls: list[str], expected: list[str]) -> list[str]:
    """The expected calls missing from ``calls`` as a subsequence (in this order)."""
    remaining = iter(calls)
    return [call for call in expected if not any(seen.startswith(call) for seen in remaining)]


@pytest.fixture(scope="module")
def night(airflow_db, emulated_aws, tmp_path_factory):
    import fakesnow.fakes
    import fakesnow.server
    from fakesnow.cursor import FakeSnowflakeCursor

    from recsys.dev.simulator import ensure_days

    work = tmp_path_factory.mktemp("cloud-night")
    statements: list[str] = []
    real_execute = FakeSnowflakeCursor.execute

    def recording_execute(self, command, *args, **kwargs):
        statements.append(" ".join(str(command).split()))
        return real_execute(self, command, *args, **kwargs)

    saved = pytest.MonkeyPatch()
    aws = emulated_aws
    with fakesnow_server() as snowflake, \
            mock.patch("snowflake.connector.connect", side_effect=fakesnow.server.shared_fs.connect), \
            mock.patch("snowflake.connector.pandas_tools.write_pandas", side_effect=fakesnow.fakes.write_pandas), \
            mock.patch.object(FakeSnowflakeCursor, "execute", recording_execute):
        env = {
            "RECSYS_HOME": str(work / "recsys"),
            "RECSYS_WAREHOUSE": "snowflake",
            "RECSYS_STORE_URL": f"s3://{BUCKET}/nightly",
            "RECSYS_LANDING_URL": f"s3://{BUCKET}/landing",
            "RECSYS_SIM_GENERATE_MISSING": "false",
            "RECSYS_SNOWFLAKE_LANDING_STAGE": "RAW.LANDING",
            "RECSYS_TRAINING_BACKEND": "sagemaker",
            "RECSYS_ENDPOINT_BACKEND": "sagemaker",
            "RECSYS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/recsys-sagemaker-execution",
            "RECSYS_SAGEMAKER_IMAGE_URI": f"{IMAGE}:gpu",
            "RECSYS_SAGEMAKER_SERVING_IMAGE_URI": f"{IMAGE}:cpu",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({
                "conn_type": "aws", "login": "testing", "password": "testing",
                "extra": {"region_name": REGION, "endpoint_url": aws.url}}),
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps({
                "conn_type": "snowflake", "login": snowflake["user"], "password": snowflake["password"],
                "schema": "RAW", "extra": {"account": snowflake["account"], "database": DATABASE,
                                           "warehouse": "COMPUTE_WH", "role": "SYSADMIN", "host": snowflake["host"],
                                           "port": snowflake["port"], "protocol": snowflake["protocol"]}}),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
        }
        for name, value in env.items():
            saved.setenv(name, value)
        for name in ("RECSYS_DUCKDB_PATH", "RECSYS_ENDPOINT_DIR", "MLFLOW_TRACKING_URI", "RECSYS_SIM_SCENARIO"):
            saved.delenv(name, raising=False)
        # production polls every minute (training) and 30 s (endpoint)
        saved.setattr("recsys.training.sagemaker.POLL_S", 2)
        saved.setattr("recsys.endpoint.sagemaker.WAIT", {"Delay": 1, "MaxAttempts": 120})

        # the landing bucket, as the upstream feed fills it: one CSV a day
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for day in WINDOW:
            ensure_days(work / "landing", [day], preset="tiny")
            s3.upload_file(str(work / "landing" / f"browsing_{day}.csv"), BUCKET, f"landing/browsing_{day}.csv")
        # Snowflake's external stage over the landing bucket: fakesnow reads no S3, so its stage
        # points at the same files on disk
        fakesnow.server.shared_fs.connect(database=DATABASE, schema="RAW").cursor().execute(
            f"create stage if not exists RAW.LANDING url='{(work / 'landing').as_uri()}/'")
        aws.calls.clear()

        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("recsys_retrain")
        saved_environ = dict(os.environ)
        try:
            run = dag.test(logical_date=NIGHT)
        finally:  # running dbt tasks in-process exports their env vars
            os.environ.clear()
            os.environ.update(saved_environ)
        yield {"run": run, "aws": aws, "home": env["RECSYS_HOME"], "statements": statements, "runtime": aws.client("sagemaker-runtime")}
        saved.undo()


def test_the_night_succeeds_on_every_cloud_box(night):
    states = {ti.task_id: str(ti.state) for ti in night["run"].get_task_instances()}
    assert night["run"].state == "success", states
    assert all(state == "success" for state in states.values()), states


def test_the_aws_calls_of_a_night_come_in_order(night):
    from recsys.run import run_key

    calls = night["aws"].calls
    print("\n".join(calls))  # the record, for the reader of the test output
    runs = f"{BUCKET}/nightly/runs/{run_key(night['run'].run_id)}"
    missing = _in_order(calls, [
        "s3:GetObject recsys-prod/landing/browsing_2026-03-06.csv",  # ingest_raw_events: header and end
        "s3:GetObject recsys-prod/landing/browsing_2026-03-09.csv",
        f"s3:PutObject {runs}/dataset/train/sessions.parquet",
        f"s3:PutObject {runs}/dataset/manifest.json",
        "sagemaker:ListTrainingJobs",  # train_model: an attempt of this run to re-attach to
        "sagemaker:CreateTrainingJob",
        "sagemaker:DescribeTrainingJob",  # the triggerer, until the job ends
        f"s3:GetObject {runs}/training/",  # output.tar.gz
        f"s3:PutObject {runs}/training/",  # its files, unpacked
        f"s3:PutObject {runs}/reports/model_report",  # model_gate
        "sagemaker:ListModels",  # update_endpoint
        "sagemaker:CreateModel",
        "sagemaker:ListEndpointConfigs",
        "sagemaker:CreateEndpointConfig",
        "sagemaker:DescribeEndpoint",
        "sagemaker:CreateEndpoint",
        "sagemaker:DescribeEndpoint",  # the triggerer, until in service; then which config it carries
        "sagemaker-runtime:InvokeEndpoint",  # the smoke test
        "sagemaker:ListEndpointConfigs",  # pruning versions beyond the newest few
        "sagemaker:ListModels",
    ])
    assert not missing, f"missing or out of order: {missing}"
    sagemaker = night["aws"].sagemaker_calls()
    assert sagemaker.count("CreateTrainingJob") == 1 and "StopTrainingJob" not in sagemaker
    # the job was waited for while it trained, not found finished
    assert [status for _, status in night["aws"].described][:1] == ["InProgress"]


def test_snowflake_replaces_the_window_in_one_transaction_and_dbt_builds_on_it(night):
    statements = [s.lower() for s in night["statements"]]
    print("\n".join(night["statements"]))  # the record, for the reader of the test output
    missing = _in_order(statements, [
        "create transient table raw.browsing_events_staging_",  # ingest: a staging table of its own
        "copy into raw.browsing_events_staging_",  # Snowflake reads the day from the landing stage
        "update raw.browsing_events_staging_",  # its event_date
        "copy into raw.browsing_events_staging_",
        "begin",
        "delete from raw.browsing_events where event_date in",
        "insert into raw.browsing_events select * from raw.browsing_events_staging_",
        "commit",
        "drop table if exists raw.browsing_events_staging_",
        "select session_id, session_date, position, sku from analytics.training_events",  # export_dataset
    ])
    assert not missing, f"missing or out of order: {missing}"
    # dbt's models, built over HTTP by dbt-snowflake with the profile from snowflake_default
    built = " ".join(statements)
    for model in ("stg_browsing_events", "sessions", "training_events"):
        assert f"recsys.analytics.{model}" in built, model


def test_the_endpoint_serves_the_new_champion(night):
    from recsys import tracking
    from recsys.settings import Settings

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RECSYS_HOME", night["home"])
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        champion = tracking.current_champion(Settings.from_env())
    assert champion is not None and champion.artifact_uri.startswith(f"s3://{BUCKET}/nightly/runs/")
    answer = night["runtime"].invoke_endpoint(EndpointName="session-recsys", ContentType="application/json",
                                              Body=json.dumps({"sessions": [[]], "k": 5}))
    body = json.loads(answer["Body"].read())
    assert body["model_version"] == champion.model_version and len(body["recommendations"][0]) == 5
    described = night["aws"].client("sagemaker").describe_endpoint(EndpointName="session-recsys")
    assert described["EndpointConfigName"] == f"session-recsys-{champion.model_version}"
    model = night["aws"].client("sagemaker").describe_model(ModelName=described["EndpointConfigName"])
    assert model["PrimaryContainer"]["Image"] == f"{IMAGE}:cpu"  # the serving image, not the GPU one
