"""Backfills: a run on days older than the champion's window never replaces it, and is not
judged against a champion that has trained on its holdout day."""

from __future__ import annotations

import datetime as dt

import pytest

from recsys import pipeline, tracking
from recsys.run import RunContext
from recsys.settings import Settings

CHAMPION_WINDOW = ("2026-03-06", "2026-03-09")


def _window(settings: Settings, run_id: str, end: str, force_deploy: bool = False) -> dict:
    run = tracking.Run.start(settings, dag_id="recsys_retrain", airflow_run_id=run_id, tags={"window_end": end})
    end_day = dt.date.fromisoformat(end)
    return RunContext(dag_id="recsys_retrain", run_id=run_id, window_start=end_day - dt.timedelta(days=3),
                      window_end=end_day, mlflow_run_id=run.run_id, mlflow_url=run.url,
                      force_deploy=force_deploy).to_xcom()


@pytest.fixture
def settings(recsys_home) -> Settings:
    """A local MLflow store whose champion trained on CHAMPION_WINDOW."""
    settings = Settings.from_env()
    start, end = CHAMPION_WINDOW
    window = _window(settings, "scheduled__2026-03-10", end)
    version = tracking.register_challenger(
        settings, run_id=window["mlflow_run_id"], artifact_uri=(recsys_home / "model").as_uri(),
        tags={"model_version": "night-1", "dataset_uri": "", "window_start": start, "window_end": end},
    )
    tracking.promote_champion(settings, version)
    return settings


@pytest.mark.parametrize("end", ["2026-03-09", "2026-03-10", "2026-04-01"])
def test_a_run_as_new_as_the_champion_deploys(settings, end):
    window = _window(settings, f"manual__{end}", end)
    assert pipeline.newer_than_champion(window) is True
    assert pipeline._comparable_champion(settings, RunContext.from_xcom(window)).model_version == "night-1"
    assert tracking.client(settings).get_run(window["mlflow_run_id"]).info.status == "RUNNING"


def test_a_backfill_of_older_days_keeps_the_champion_and_closes_its_run(settings):
    window = _window(settings, "backfill__2026-03-08", "2026-03-07")

    assert pipeline.newer_than_champion(window) is False

    run = tracking.client(settings).get_run(window["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "2026-03-09" in run.data.tags["deploy_skipped"] and "2026-03-07" in run.data.tags["deploy_skipped"]
    assert tracking.current_champion(settings).model_version == "night-1"
    # the champion trained on 2026-03-07, so it is no fair bar on that holdout day
    assert pipeline._comparable_champion(settings, RunContext.from_xcom(window)) is None


def test_force_deploy_overrides_the_freshness_check(settings):
    window = _window(settings, "backfill__2026-03-08", "2026-03-07", force_deploy=True)
    assert pipeline.newer_than_champion(window) is True


def test_the_first_run_has_nothing_to_be_older_than(recsys_home):
    settings = Settings.from_env()
    window = _window(settings, "scheduled__2026-03-10", "2026-03-09")
    assert pipeline.newer_than_champion(window) is True
    assert pipeline._comparable_champion(settings, RunContext.from_xcom(window)) is None


def test_an_unreachable_registry_fails_the_run_instead_of_reading_as_no_champion(recsys_home, monkeypatch):
    """Only a registry that answers 'no such alias' means there is no champion: an
    outage read that way would let the gates compare with baselines only and deploy."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = Settings.from_env()
    with pytest.raises(tracking.RegistryUnavailable, match="champion.*127.0.0.1:9"):
        tracking.current_champion(settings)
    context = RunContext(dag_id="recsys_retrain", run_id="manual__x", window_start=dt.date(2026, 3, 6),
                         window_end=dt.date(2026, 3, 9), mlflow_run_id="r", mlflow_url="r")
    with pytest.raises(tracking.RegistryUnavailable):
        pipeline._comparable_champion(settings, context)
