"""Every asset key and asset group name of the code location, declared once.

Assets, checks, jobs and sensors take their keys from here, and so does the application (the demo reads
asset metadata by key): nothing outside ``churn_assets/defs`` imports an asset module (import-linter
contract in pyproject.toml).
"""

import dagster as dg

from churn_assets.feature_store.definitions import FEATURE_GROUPS

# ---- groups ---------------------------------------------------------------------------------------
LANDING_GROUP = "landing"
RAW_GROUP = "raw"
FEATURES_GROUP = "features"
TRAINING_GROUP = "training"
SERVING_GROUP = "serving"
PRODUCTION_GROUP = "production"
ROLLOUT_GROUP = "rollout"
MONITORING_GROUP = "monitoring"
STATUS_GROUP = "status"
SHARED_MODELS_GROUP = "shared_models"


# ---- raw and features -----------------------------------------------------------------------------
def landing_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", table])


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def feature_asset_key(group: str) -> dg.AssetKey:
    return dg.AssetKey(["features", group])


FEATURE_KEYS = [feature_asset_key(g.name) for g in FEATURE_GROUPS]
ONLINE_STORE = dg.AssetKey(["features", "online_store"])

# ---- training and serving -------------------------------------------------------------------------
TRAINING_SET = dg.AssetKey(["training", "training_set"])
CANDIDATES = dg.AssetKey(["training", "candidates"])
CHALLENGER = dg.AssetKey(["training", "challenger"])
CHAMPION = dg.AssetKey(["training", "champion"])
CHAMPION_BENTO = dg.AssetKey(["serving", "champion_bento"])
CHURN_30D_MODEL = dg.AssetKey(["shared_models", "churn_30d"])

# ---- weekly production, rollout, monitoring -------------------------------------------------------
LIVE_TRAFFIC = dg.AssetKey(["production", "live_traffic"])
BATCH_SCORES = dg.AssetKey(["production", "batch_scores"])
LABEL_STATUS = dg.AssetKey(["production", "label_status"])
ROLLOUT_REVIEW = dg.AssetKey(["production", "rollout_review"])
ROLLOUT_START = dg.AssetKey(["rollout", "start"])
ROLLOUT_STEP = dg.AssetKey(["rollout", "step"])
DRIFT_REPORT = dg.AssetKey(["monitoring", "drift_report"])
PERFORMANCE_REPORT = dg.AssetKey(["monitoring", "performance_report"])
STATUS_REPORT = dg.AssetKey(["monitoring", "status_report"])

# ---- asset checks ---------------------------------------------------------------------------------
# WARN, non-blocking checks on the weekly monitoring reports (defs/monitoring_checks.py). The names are
# the contract of the UI, the alert sensors and docs/monitoring.md; the 0.78 in them is the default of
# ``monitoring.auc_threshold``, which the checks read.
NO_MATERIAL_DRIFT = dg.AssetCheckKey(DRIFT_REPORT, "no_material_drift")
AUC_AT_OR_ABOVE_THRESHOLD = dg.AssetCheckKey(PERFORMANCE_REPORT, "auc_at_or_above_0_78")
ESTIMATED_AUC_AT_OR_ABOVE_THRESHOLD = dg.AssetCheckKey(PERFORMANCE_REPORT, "estimated_auc_at_or_above_0_78")
MONITORING_CHECKS = (NO_MATERIAL_DRIFT, AUC_AT_OR_ABOVE_THRESHOLD, ESTIMATED_AUC_AT_OR_ABOVE_THRESHOLD)

# WARN check on the online store: features no aliased model version has used for
# ``feature_store.deprecate_after_days`` (defs/feature_checks.py).
FEATURES_NOT_DEPRECATED = dg.AssetCheckKey(ONLINE_STORE, "features_not_deprecated")
