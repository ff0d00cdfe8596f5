"""Models other than the production one, built from the same feature store.

``shared_models/churn_30d``: churn within 30 days from three of the production model's feature groups
(``modeling.horizon_model``). Its deps are exactly those groups' assets, so the lineage shows the groups
both models share; its versions are recorded as feature dependents (``churnops features usage``).
"""

import dagster as dg

from churn_assets.defs.keys import CHURN_30D_MODEL, SHARED_MODELS_GROUP, feature_asset_key
from churn_assets.modeling.horizon_model import CHURN_30D
from churn_assets.settings import Settings


@dg.asset(
    key=CHURN_30D_MODEL,
    group_name=SHARED_MODELS_GROUP,
    deps=[feature_asset_key(g) for g in CHURN_30D.groups],
    kinds={"lightgbm", "mlflow"},
    description=CHURN_30D.description
    + f" Registered model `{CHURN_30D.name}`: tuned LightGBM vs baselines, calibration, gates, promotion.",
)
def churn_30d(
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    from churn_assets.modeling.horizon_model import train_shared_feature_model

    report = train_shared_feature_model(
        settings, CHURN_30D, progress=lambda task, done, total: context.log.info(f"{task}: {done}/{total}")
    )
    return dg.MaterializeResult(
        metadata={
            "registered_model": report.model_name,
            "version": report.model_version,
            "semver": report.semver,
            "best_model": report.best_model,
            "test_auc": float(report.test_auc),
            "promotion": report.promotion,
            "promotion_reason": report.promotion_reason,
            "horizon_days": CHURN_30D.horizon_days,
            "feature_groups": dg.MetadataValue.json(list(CHURN_30D.groups)),
            "features": len(CHURN_30D.features),
        }
    )
