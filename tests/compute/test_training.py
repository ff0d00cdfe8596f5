"""Training on the Dask engine: LightGBM data-parallel on the training set's shards, Optuna trials as
cluster tasks — against a real LocalCluster of 2 worker processes (1 GiB each)."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.compute.cluster import shard_of
from churn_assets.compute.training import fit_lightgbm_dask, shard_training_set
from churn_assets.modeling.training_set import read_split
from churn_assets.settings import ComputeSettings
from tests.compute_helpers import CATEGORIES, FEATURES, synthetic_training_set

pytestmark = pytest.mark.distributed

# Fixed, deterministic parameters (no row or column sampling), so the two fits differ only by where the
# histograms are built.
PARAMS = {"n_estimators": 80, "num_leaves": 15, "learning_rate": 0.05, "min_child_samples": 40}


def test_sharding_keeps_every_row_once_in_its_customers_shard(tmp_path: Path):
    path = synthetic_training_set(tmp_path / "training_set.parquet", n=3_000)
    shards = shard_training_set(path, tmp_path / "shards", 4)
    whole = pl.read_parquet(path)
    parts = [pl.read_parquet(shards.path(k)).with_columns(pl.lit(k).alias("k")) for k in range(4)]
    joined = pl.concat(parts)
    assert joined.height == whole.height
    assert (shard_of(joined["customer_id"].to_numpy(), 4) == joined["k"].to_numpy()).all()
    assert sorted(joined["customer_id"].to_list()) == sorted(whole["customer_id"].to_list())
    assert sum(shards.rows("train").values()) == whole.filter(pl.col("split") == "train").height


def test_the_trainer_reads_a_sharded_training_set_in_place_and_shards_a_single_file_once(tmp_path: Path):
    from churn_assets.compute.training import training_shards
    from churn_assets.settings import Settings

    settings = Settings(home=tmp_path, compute=ComputeSettings(shards=3))
    single = synthetic_training_set(tmp_path / "local" / "training_set.parquet", n=2_000)
    first = training_shards(settings, single, "ab" * 32)
    assert first.shards == 3 and first.root.parent == single.parent / "shards"
    stamp = first.path(0).stat().st_mtime_ns
    assert training_shards(settings, single, "ab" * 32) == first and first.path(0).stat().st_mtime_ns == stamp
    # the Dask engine's training-set stage writes a directory of shard files: used where it is
    directory = tmp_path / "dask" / "training_set.parquet"
    shard_training_set(single, directory, 5)
    sharded = training_shards(settings, directory, "cd" * 32)
    assert sharded.root == directory and sharded.shards == 5
    assert sum(sharded.rows("val").values()) == sum(first.rows("val").values()) > 0
    sharded.path(2).unlink()
    with pytest.raises(FileNotFoundError, match="misses shards"):
        training_shards(settings, directory, "cd" * 32)


def test_dask_lightgbm_on_shards_reaches_the_local_fits_test_auc(dask_client_2w, tmp_path: Path):
    path = synthetic_training_set(tmp_path / "training_set.parquet", n=24_000)
    shards = shard_training_set(path, tmp_path / "shards", 4)
    X_train, y_train = read_split(path, "train", FEATURES, CATEGORIES)
    X_test, y_test = read_split(path, "test", FEATURES, CATEGORIES)

    local = lgb.LGBMClassifier(objective="binary", random_state=42, n_jobs=1, verbose=-1, **PARAMS)
    local.fit(X_train, y_train)
    distributed, rows = fit_lightgbm_dask(dask_client_2w, shards, PARAMS, FEATURES, CATEGORIES, seed=42)

    assert sum(rows.values()) == len(y_train) and all(n > 0 for n in rows.values())
    assert isinstance(
        distributed, lgb.LGBMClassifier
    )  # a plain local model: the rest of the stage is unchanged
    assert distributed.booster_.feature_name() == FEATURES
    assert distributed.booster_.pandas_categorical == [CATEGORIES["contract"], CATEGORIES["segment"]]
    auc_local = roc_auc_score(y_test, local.predict_proba(X_test)[:, 1])
    auc_dask = roc_auc_score(y_test, distributed.predict_proba(X_test)[:, 1])
    assert auc_local > 0.7  # a signal worth comparing
    assert abs(auc_dask - auc_local) <= 0.005, (auc_dask, auc_local)
    # it really is another model (histograms built on two workers), not the local one
    assert not np.allclose(distributed.predict_proba(X_test)[:, 1], local.predict_proba(X_test)[:, 1])


def _splits(path: Path):
    from churn_assets.modeling.splits import splits_from_parts

    parts = {name: read_split(path, name, FEATURES, CATEGORIES) for name in ("train", "val", "test")}
    return splits_from_parts(parts, FEATURES, kind="time")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_optuna_trials_run_as_cluster_tasks_into_one_rdb_study(
    dask_client_2w, tmp_path: Path, fresh_postgres_database, backend: str
):
    import optuna
    from distributed import get_task_stream

    from churn_assets.compute.training import run_trials_on_cluster
    from churn_assets.modeling.tuning import TrialJob, tune_lightgbm

    storage = (
        fresh_postgres_database("churnops_dask_training_optuna")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'optuna.db'}"  # the default storage: a file under the shared home
    )
    splits = _splits(synthetic_training_set(tmp_path / "training_set.parquet", n=4_000))
    runner_calls: list[int] = []

    def runner(job: TrialJob, n: int) -> int:
        runner_calls.append(n)
        return run_trials_on_cluster(dask_client_2w, job, n)

    with get_task_stream(dask_client_2w) as stream:
        result = tune_lightgbm(splits, storage, "dask-study", n_trials=6, timeout_seconds=120, runner=runner)
    study = optuna.load_study(study_name="dask-study", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert runner_calls == [6] and len(finished) == 6 == result.n_complete + result.n_pruned
    assert result.best_val_auc == max(t.value for t in finished if t.value is not None)
    tasks = [t for t in stream.data if str(t["key"]).startswith("optuna-trials-dask-study")]
    assert len(tasks) == 2 and len({t["worker"] for t in tasks}) == 2  # one task per worker process
    # resuming the study runs nothing more: the budget is the study's total, wherever trials ran
    again = tune_lightgbm(splits, storage, "dask-study", n_trials=6, timeout_seconds=120, runner=runner)
    assert again.n_run_now == 0 and runner_calls == [6]


def test_candidate_step_on_the_cluster_tags_what_each_candidate_was_trained_on(
    dask_client_2w, tmp_path: Path, fresh_postgres_database
):
    from mlflow import MlflowClient

    from churn_assets.compute.training import DaskTrainer
    from churn_assets.modeling.candidate_stage import run_candidates
    from churn_assets.modeling.paths import tracking_uri
    from tests.modeling_helpers import modeling_settings

    path = synthetic_training_set(tmp_path / "training_set.parquet", n=6_000)
    splits = _splits(path)
    settings = modeling_settings(
        tmp_path / "home",
        n_trials=4,
        timeout_seconds=120,
        sample_rows=1_500,
        optuna_storage=fresh_postgres_database("churnops_dask_training_stage"),
    ).model_copy(
        update={"compute": ComputeSettings(lightgbm_data_parallel_min_rows=0)}
    )  # always data-parallel
    trainer = DaskTrainer(dask_client_2w, shard_training_set(path, tmp_path / "shards", 4), "dask local:2")
    stage = run_candidates(
        splits, settings, tmp_path / "candidates", study_name="stage", baselines=["logistic_regression"],
        trainer=trainer,
    )  # fmt: skip
    assert stage.tuning["complete"] + stage.tuning["pruned"] == 4
    assert sum(stage.tuning["train_rows_by_shard"].values()) == len(splits.y_train)
    client = MlflowClient(tracking_uri(settings))
    tags = {name: client.get_run(run_id).data.tags for name, run_id in stage.run_ids.items()}
    assert tags["lightgbm"]["train_rows"] == str(len(splits.y_train))
    assert tags["lightgbm"]["engine"] == "dask local:2: lightgbm.dask on 2 workers"
    baseline = tags["logistic_regression"]
    assert baseline["train_rows"] == "1500" and baseline["train_data"].startswith("stratified sample of 1500")
    assert "no distributed trainer" in baseline["engine"]


def test_a_train_split_under_the_data_parallel_minimum_gets_the_local_engines_model(
    dask_client_2w, tmp_path: Path
):
    """Below ``compute.lightgbm_data_parallel_min_rows`` (default 1,000,000) the Dask engine's candidate step
    fits LightGBM in the run process with the local engine's code: the same model, prediction for prediction."""
    import joblib
    from mlflow import MlflowClient

    from churn_assets.compute.training import DaskTrainer
    from churn_assets.modeling.candidate_stage import run_candidates
    from churn_assets.modeling.paths import tracking_uri
    from tests.modeling_helpers import modeling_settings

    path = synthetic_training_set(tmp_path / "training_set.parquet", n=6_000)
    splits = _splits(path)
    fixed = {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 60, "imbalance": "none"}
    trainer = DaskTrainer(dask_client_2w, shard_training_set(path, tmp_path / "shards", 4), "dask local:2")
    scores: dict[str, np.ndarray] = {}
    for name, engine in (("local", None), ("dask", trainer)):
        settings = modeling_settings(
            tmp_path / name, xgboost=False, ensemble_max_members=0, extra_candidates=[]
        )
        stage = run_candidates(
            splits, settings, tmp_path / name / "work", study_name=name, baselines=[], fixed_params=fixed,
            trainer=engine,
        )  # fmt: skip
        assert stage.best == "lightgbm"
        scores[name] = joblib.load(stage.model_path).predict_proba(splits.X_test)[:, 1]
        tags = MlflowClient(tracking_uri(settings)).get_run(stage.run_ids["lightgbm"]).data.tags
    assert "train_rows_by_shard" not in stage.tuning  # nothing was fitted on the workers
    assert stage.tuning["engine"] == tags["engine"]  # what the Dagster asset's metadata shows
    assert tags["engine"] == (
        f"dask local:2 (driver: {len(splits.y_train)} train rows < "
        "compute.lightgbm_data_parallel_min_rows = 1000000)"
    )
    np.testing.assert_array_equal(scores["local"], scores["dask"])
