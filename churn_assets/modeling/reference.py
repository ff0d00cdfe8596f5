"""The simulator's reference LightGBM registered as a champion: a model for monitoring experiments and
tests that need a served champion without running the training job."""

from __future__ import annotations

from typing import Any

import numpy as np

from churn_assets.modeling.evaluation import binary_metrics, choose_threshold
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.training_set import build_training_table, feature_names
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline


def register_champion(settings: Settings, params: dict[str, Any] | None = None) -> str:
    """Training set (written where the training assets keep it) -> LightGBM on the train split ->
    MLflow run -> registered version, promoted when there is no champion. Returns the version."""
    import lightgbm as lgb

    from churn_assets.simulation.calibration import LGBM_PARAMS

    timeline = Timeline.from_settings(settings.simulation)
    with Warehouse.of(settings).connect() as con:
        table, meta = build_training_table(con, timeline, settings)
    TrainingWorkdir.of(settings).write_training_set(table, meta)
    frame = table.to_pandas()
    names = feature_names()
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    model = lgb.LGBMClassifier(**(params or LGBM_PARAMS))  # type: ignore[arg-type]
    model.fit(train[names], train["churned"])
    return register_fitted(settings, model, meta["sha256"], val[names], val["churned"])


def register_fitted(settings: Settings, model: Any, training_set_sha256: str, X_val: Any, y_val: Any) -> str:
    """A LightGBM fitted elsewhere (e.g. data-parallel on a Dask cluster) registered like
    :func:`register_champion`'s: threshold and metrics on the validation rows ``X_val``/``y_val``, an
    MLflow run, a registered version, promoted when there is no champion. Returns the version."""
    p_val = np.asarray(model.predict_proba(X_val))[:, 1]
    threshold = choose_threshold(y_val, p_val)
    metrics = {k: v for k, v in binary_metrics(y_val, p_val, threshold).items() if k != "n"}
    metrics["threshold"] = threshold
    logged = log_candidate_run(
        configure(settings), "monitoring-evaluation", model, "lightgbm", {}, metrics, input_example=X_val
    )
    registry = ModelRegistry(settings)
    version = registry.register(logged, list(X_val.columns), training_set_sha256, metrics, [])
    if registry.aliases().get("champion") is None:
        registry.consider(version.version, metrics["auc"], None, [])
    return version.version
