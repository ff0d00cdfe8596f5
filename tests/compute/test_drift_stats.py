"""The drift report's statistics per customer shard on the Dask engine, merged: equal to the local
engine's (exactly where the window is tested whole, within the DKW bound where the KS test is sampled)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from churn_assets.compute.cluster import shard_of
from churn_assets.compute.drift_stats import BinSpec, detect_drift_sharded, merge, sample_key, shard_stats
from churn_assets.monitoring.drift import detect_drift, profile_reference, root_cause
from churn_assets.settings import MonitoringSettings
from tests.compute_helpers import FEATURES, synthetic_training_set

pytestmark = pytest.mark.distributed

CFG = MonitoringSettings(exclude_features=[])


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Reference = the train rows; current = the other rows, shifted (charges up, some tenure missing)."""
    path = synthetic_training_set(tmp_path_factory.mktemp("drift") / "training_set.parquet", n=12_000)
    frame = pl.read_parquet(path).with_columns(pl.col("contract", "segment").cast(pl.String))
    reference = frame.filter(pl.col("split") == "train").select("customer_id", *FEATURES)
    current = (
        frame.filter(pl.col("split") != "train")
        .select("customer_id", *FEATURES)
        .with_columns(
            pl.col("monthly_charges") * 1.25,
            pl.when(pl.col("customer_id") % 7 == 0).then(None).otherwise(pl.col("tenure")).alias("tenure"),
        )
        .sort("customer_id")
    )
    return reference, current


def _sharded(client, reference, current, tmp_path: Path, shards: int, sample_rows: int):
    profile = profile_reference(reference, FEATURES)
    return profile, detect_drift_sharded(
        client, profile, current, CFG, FEATURES, shards=shards, staging=tmp_path / f"staging-{shards}",
        sample_rows=sample_rows, keep=["segment"],
    )  # fmt: skip


def test_sharded_drift_statistics_equal_the_local_ones(dask_client_2w, frames, tmp_path: Path):
    reference, current = frames
    profile, sharded = _sharded(dask_client_2w, reference, current, tmp_path, 4, sample_rows=1_000_000)
    local = detect_drift(profile, current, CFG, features=FEATURES)
    assert sharded.fraction == 1.0 and sharded.stats.sample.height == current.height
    assert sharded.report.records() == local.records()  # KS, chi-square, PSI, p-values, null shares: exact
    assert sharded.report.summary() == local.summary()
    assert local.drifted_features  # the shift is caught, by both
    means = sharded.stats.means()
    for name in ("tenure", "monthly_charges", "support_tickets"):
        assert math.isclose(means[name], float(current[name].mean()), rel_tol=1e-12)  # type: ignore[arg-type]
    assert sum(sharded.rows_by_shard.values()) == current.height and len(sharded.rows_by_shard) == 4
    # the root cause on the sample (here the whole window) is the local one
    assert root_cause(reference, profile, sharded.stats.sample, sharded.report, ["segment"]) == root_cause(
        reference, profile, current, local, ["segment"]
    )
    assert not (tmp_path / "staging-4").exists()


def test_a_sampled_ks_is_within_the_dkw_bound_and_the_rest_stays_exact(
    dask_client_2w, frames, tmp_path: Path
):
    reference, current = frames
    profile, sharded = _sharded(dask_client_2w, reference, current, tmp_path, 3, sample_rows=1_500)
    local = {r["feature"]: r for r in detect_drift(profile, current, CFG, features=FEATURES).records()}
    m = sharded.stats.sample.height
    assert 0 < m < current.height and sharded.fraction == 1_500 / current.height
    delta = 1e-6
    tolerance = math.sqrt(
        math.log(2 / delta) / (2 * m)
    )  # DKW: |KS(sample) - KS(window)| <= this w.p. 1 - delta
    for r in sharded.report.records():
        exact = local[r["feature"]]
        if r["test"] == "KS":
            assert abs(r["statistic"] - exact["statistic"]) <= tolerance
            assert r["psi"] == exact["psi"] and r["n_current"] == exact["n_current"]
            assert r["null_share_current"] == exact["null_share_current"]
        else:
            assert r == exact


def test_the_ks_sample_is_the_same_rows_whatever_the_shard_count(frames):
    _reference, current = frames
    spec = BinSpec({}, [], ["customer_id", "tenure"], fraction=0.2)

    def sample(shards: int) -> pl.DataFrame:
        ids = shard_of(current["customer_id"].to_numpy(), shards)
        return merge([shard_stats(current.filter(pl.Series(ids == k)), spec) for k in range(shards)]).sample

    assert sample(2).equals(sample(5)) and 0.15 < sample(2).height / current.height < 0.25
    keys = sample_key(np.arange(1, 200_001))
    assert keys.min() >= 0 and keys.max() < 1 and abs(keys.mean() - 0.5) < 0.01
