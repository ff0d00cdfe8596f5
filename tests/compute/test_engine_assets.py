"""The Dagster assets on the Dask engine against a real world, and a worker process killed mid-stage.

One tiny simulated world with a registered champion (tests/monitoring_helpers.py); the assets run with
``compute.engine = dask`` against this module's own cluster of separate processes (a scheduler and 2
nannies, one worker process of 1 GiB each; a task given up after its worker died twice), reached by its
``tcp://`` address like a remote scheduler:

* batch scores: identical to the local engine's for the same champion; a worker killed on every attempt
  fails the stage and the prediction log stays as it was; a worker killed once is replaced and the stage
  completes with the same scores;
* drift report: the same report as the local engine's on the 45 features;
* training candidates: a worker killed in the middle of LightGBM's data-parallel fit fails the stage
  cleanly, the champion and the candidate step's output unchanged; the rerun succeeds.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from unittest import mock

import dagster as dg
import polars as pl
import pytest

from churn_assets.defs.assets.monitoring import drift_report
from churn_assets.defs.assets.production import batch_scores
from churn_assets.defs.assets.training import candidates
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.serving.prediction_log import read_predictions
from churn_assets.settings import ComputeSettings, ModelingSettings, Settings
from tests.compute_helpers import KillWorkerOnTask
from tests.monitoring_helpers import all_resources, production_world, tiny_settings

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

SCORED = ["customer_id", "variant", "model_version", "score", "label", "feature_hash"]


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and 2 nannies (one worker process each, 1 GiB) in processes of their own, as on a real
    cluster: a busy test process (the Dagster run, in process) never delays the scheduler noticing a lost
    worker or a nanny restarting one. The scheduler gives a task up after its worker died twice."""
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    with (
        # read by the scheduler's process at start (dask's environment configuration)
        mock.patch.dict(os.environ, {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}),
        SubprocessCluster(
            n_workers=2,
            threads_per_worker=1,
            worker_kwargs={"memory_limit": "1GiB"},
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as subprocesses,
        Client(subprocesses) as client,
    ):
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
        client.wait_for_workers(2, timeout=120)
        yield client


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url, history_cache):
    import sqlalchemy as sa

    settings = tiny_settings(tmp_path_factory.mktemp("engine"))
    name = "churnops_dask_engine_assets"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as con:
        con.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        con.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    modeling = ModelingSettings.model_validate(
        settings.modeling.model_dump()
        | {
            "n_trials": 3,
            "timeout_seconds": 120.0,
            # The candidate step here is LightGBM (tuned as cluster tasks, fitted data-parallel: the fit a
            # worker is killed in) and one baseline; XGBoost, the extra families and the ensemble are
            # fitted on the driver after that fit, whatever the engine, and add nothing to what this
            # module asserts (the step with every family on the cluster: tests/compute/test_training.py).
            "xgboost": False,
            "extra_candidates": [],
            "ensemble_max_members": 0,
            "baselines": ["logistic_regression"],
            "optuna_storage": postgres_url.rsplit("/", 1)[0] + f"/{name}",
        }
    )
    settings = settings.model_copy(update={"modeling": modeling})
    instance, weeks = production_world(settings, production_weeks=1, histories=history_cache)
    return settings, instance, weeks[0]


def _on_dask(settings: Settings, client) -> Settings:  # type: ignore[no-untyped-def]
    compute = ComputeSettings(  # LightGBM data-parallel whatever the (small) train split
        engine="dask", scheduler=client.scheduler.address, shards=4, lightgbm_data_parallel_min_rows=0
    )
    return settings.model_copy(update={"compute": compute})


def _run(asset, settings: Settings, instance, week: str | None = None) -> dg.ExecuteInProcessResult:  # type: ignore[no-untyped-def]
    return dg.materialize(
        [asset],
        partition_key=week,
        instance=instance,
        resources=all_resources(settings),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _week_rows(settings: Settings, week: str) -> pl.DataFrame:
    start = dt.datetime.fromisoformat(week)
    return read_predictions(settings, start, start + dt.timedelta(days=21))


def _killing(client, plugin: KillWorkerOnTask):  # type: ignore[no-untyped-def]
    class Registered:
        def __enter__(self) -> None:
            client.register_plugin(plugin)

        def __exit__(self, *exc: object) -> None:
            client.unregister_worker_plugin(plugin.name)
            client.wait_for_workers(2, timeout=120)  # the nannies restart the killed worker processes

    return Registered()


def test_batch_scores_on_dask_equal_the_local_ones_and_survive_a_killed_worker(
    cluster, world, tmp_path: Path
):
    settings, instance, week = world
    dask_settings = _on_dask(settings, cluster)
    local = _run(batch_scores, settings, instance, week)
    assert local.success
    stored = _week_rows(settings, week)
    assert stored.height == _metadata(local)["scored_rows"] > 0

    with _killing(cluster, KillWorkerOnTask("score-shard")):  # every attempt: the stage fails
        failed = _run(batch_scores, dask_settings, instance, week)
    assert not failed.success
    assert _week_rows(settings, week).equals(stored)  # nothing written by the failed stage

    with _killing(cluster, KillWorkerOnTask("score-shard", marker=str(tmp_path / "killed-once"))):
        done = _run(batch_scores, dask_settings, instance, week)
    assert (tmp_path / "killed-once").exists()  # a worker really died in the middle of the stage
    assert done.success
    meta = _metadata(done)
    assert str(meta["engine"]).startswith("dask tcp://") and meta["scored_rows"] == stored.height
    assert sum(meta["customers_by_shard"].values()) == meta["customers"]  # type: ignore[union-attr]
    both = _week_rows(settings, week)
    new = both.filter(~pl.col("request_id").is_in(stored["request_id"].implode()))
    key = ["variant", "customer_id"]
    assert new.select(SCORED).sort(key).equals(stored.select(SCORED).sort(key))


def test_drift_report_on_dask_equals_the_local_one(cluster, world):
    settings, instance, week = world
    local, sharded = (
        _run(drift_report, settings, instance, week),
        _run(drift_report, _on_dask(settings, cluster), instance, week),
    )
    assert local.success and sharded.success
    a, b = _metadata(local), _metadata(sharded)
    assert a["n_tested"] == b["n_tested"] == 45 - len(settings.monitoring.exclude_features)
    for name in ("drift_table", "drifted_features", "max_severity", "root_cause", "current_rows"):
        assert a[name] == b[name], name
    assert a["engine"] == "local" and str(b["engine"]).startswith("dask tcp://")
    detail = b["engine_detail"]
    assert detail["ks_sample_fraction"] == 1.0 and sum(detail["rows_by_shard"].values()) == a["current_rows"]  # type: ignore[index]


def test_a_worker_killed_during_the_distributed_fit_leaves_the_champion_and_the_stage_output(
    cluster, world, tmp_path: Path
):
    settings, instance, _week = world
    dask_settings = _on_dask(settings, cluster)
    registry = ModelRegistry(settings)
    champion = registry.aliases().get("champion")
    versions = len(registry.client.search_model_versions(f"name='{registry.name}'"))
    workdir = TrainingWorkdir.of(settings)
    assert champion is not None and not workdir.candidates.exists()

    with _killing(cluster, KillWorkerOnTask("_train_part", marker=str(tmp_path / "killed-in-fit"))):
        failed = _run(candidates, dask_settings, instance)
    assert (tmp_path / "killed-in-fit").exists() and not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "WorkerLostError" in str(failure.event_specific_data) and "rerun the stage" in str(
        failure.event_specific_data
    )
    assert registry.aliases().get("champion") == champion and not workdir.candidates.exists()
    assert len(registry.client.search_model_versions(f"name='{registry.name}'")) == versions

    rerun = _run(candidates, dask_settings, instance)  # the cluster recovered: the same stage now succeeds
    assert rerun.success and workdir.candidates.exists()
    meta = _metadata(rerun)
    assert meta["workers"] == 2 and str(meta["engine"]).startswith("dask tcp://")
    assert registry.aliases().get("champion") == champion  # candidates never promote
