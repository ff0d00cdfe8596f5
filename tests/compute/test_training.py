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
