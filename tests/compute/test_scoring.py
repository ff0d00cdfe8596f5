"""Weekly batch scoring on the Dask engine: per-shard tasks give the local engine's scores, row for row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import lightgbm as lgb
import polars as pl
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from churn_assets.automation.production import score_snapshot
from churn_assets.compute.cluster import shard_of
from churn_assets.compute.scoring import score_snapshot_sharded, stage_shards
from churn_assets.modeling.candidates import baseline_specs
from churn_assets.modeling.ensemble import BlendEnsemble
from churn_assets.modeling.evaluation import RankedIsotonic
from churn_assets.modeling.training_set import read_split
from churn_assets.serving.scoring import ScoringModel
from tests.compute_helpers import CATEGORIES, FEATURES, synthetic_training_set

pytestmark = pytest.mark.distributed

AS_OF = dt.date(2025, 3, 3)
COMPARED = ["customer_id", "variant", "model_name", "model_version", "score", "label", "threshold",
            "feature_hash", "source", "as_of", "ts"]  # fmt: skip


def _model(path: Path, version: str, seed: int) -> ScoringModel:
    X, y = read_split(path, "train", FEATURES, CATEGORIES)
    model = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, random_state=seed, subsample=0.8,
                               subsample_freq=1, n_jobs=1, verbose=-1)  # fmt: skip
    model.fit(X, y)
    return ScoringModel("churn-model", version, model, FEATURES, threshold=0.3)


def _isotonic(path: Path, version: str) -> ScoringModel:
    """A version calibrated as ``modeling.evaluation.calibrate`` registers ``isotonic_ranked``: the LightGBM
    frozen in ``CalibratedClassifierCV``, its calibrator a :class:`RankedIsotonic` fitted on validation
    (scikit-learn rebuilds the isotonic interpolation, ``f_``, when it is unpickled)."""
    X, y = read_split(path, "val", FEATURES, CATEGORIES)
    lgbm = _model(path, version, 3).model
    calibrated = CalibratedClassifierCV(FrozenEstimator(lgbm), method="isotonic").fit(X, y)
    scores = lgbm.predict_proba(X)[:, 1]
    calibrated.calibrated_classifiers_[0].calibrators[0] = RankedIsotonic(out_of_bounds="clip").fit(scores, y)
    return ScoringModel("churn-model", version, calibrated, FEATURES, threshold=0.3)


def _ensemble(path: Path, version: str) -> ScoringModel:
    """An ENSEMBLE version (LightGBM + logistic-regression pipeline, blended): served through compiled
    per-member scorers (closures, serving/members.py) that a pickled model must not carry to a worker."""
    X, y = read_split(path, "train", FEATURES, CATEGORIES)
    lr = baseline_specs(names=("logistic_regression",))[0].build().fit(X, y)
    blend = BlendEnsemble(
        ["lightgbm", "logistic_regression"], [_model(path, version, 4).model, lr], [0.7, 0.3]
    )
    return ScoringModel("churn-model", version, blend, FEATURES, threshold=0.3)


def _snapshot(path: Path) -> pl.DataFrame:
    """The week's active customers: the test split's rows (ids, features as the feature store returns them)."""
    frame = pl.read_parquet(path).filter(pl.col("split") == "test")
    return frame.select(
        "customer_id", *[pl.col(c).cast(pl.String) if c in CATEGORIES else pl.col(c) for c in FEATURES]
    ).sort("customer_id")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    path = synthetic_training_set(root / "training_set.parquet", n=6_000)
    models = {
        "3": _model(path, "3", 1),
        "4": _model(path, "4", 2),
        "5": _isotonic(path, "5"),
        "6": _ensemble(path, "6"),
    }
    return root, _snapshot(path), models


def _canary(customer_id: int) -> str:
    return "canary" if customer_id % 5 == 0 else "stable"


@pytest.mark.parametrize(
    ("phase", "candidate"),
    [("none", None), ("shadow", "4"), ("canary_10", "4"), ("shadow", "5"), ("canary_10", "6")],
    ids=["stable", "shadow", "canary", "shadow-isotonic-calibrated", "canary-ensemble"],
)
def test_sharded_batch_scores_equal_the_local_engines(dask_client_2w, world, phase, candidate):
    root, features, models = world
    loads: list[str] = []

    def load(version: str) -> ScoringModel:
        loads.append(version)
        return models[version]

    kwargs = dict(phase=phase, stable_version="3", candidate_version=candidate, load=load, route=_canary)
    local = score_snapshot(features, AS_OF, **kwargs)  # type: ignore[arg-type]
    loads.clear()
    staging = root / f"staging-{phase}"
    sharded, per_shard = score_snapshot_sharded(
        dask_client_2w,
        features,
        AS_OF,
        shards=4,
        staging=staging,
        **kwargs,  # type: ignore[arg-type]
    )
    assert sharded.frame.select(COMPARED).equals(local.frame.select(COMPARED))
    assert sharded.counts() == local.counts() and sum(sharded.counts().values()) >= features.height
    assert sum(per_shard.values()) == features.height and len(per_shard) == 4
    assert sorted(loads) == sorted({"3", *([candidate] if candidate else [])})  # each model loaded once, here
    assert not staging.exists()  # the shard files are removed after the stage


def test_stage_shards_puts_each_customer_in_its_shard_file(tmp_path: Path, world):
    _root, features, _models = world
    files = stage_shards(features, tmp_path / "staged", 3)
    for shard, (path, rows) in files.items():
        part = pl.read_parquet(path)
        assert part.height == rows and (shard_of(part["customer_id"].to_numpy(), 3) == shard).all()
        assert part["customer_id"].is_sorted()
    assert sum(rows for _p, rows in files.values()) == features.height
