"""Jobs: the main pipeline (raw -> contracts -> features -> online store)."""

import dagster as dg

from churn_assets.defs.assets.features import FEATURE_GROUP_NAME
from churn_assets.defs.assets.raw import RAW_GROUP

MAIN_JOB = "churn_pipeline"

churn_pipeline = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.groups(RAW_GROUP, FEATURE_GROUP_NAME),
    description=(
        "Ingest landed raw weeks through their contracts, compute feature snapshots into the offline "
        "store and refresh the online store. Launch it over a range of weeks (one run)."
    ),
)

TRAINING_JOB = "training"

training = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.groups("training"),
    description=(
        "Build the training set from the offline feature store, tune and compare the candidates (MLflow "
        "runs), register the challenger, run its blocking gate checks and decide the promotion."
    ),
)

SERVING_JOB = "serving"

serving = dg.define_asset_job(
    SERVING_JOB,
    selection=dg.AssetSelection.groups("serving"),
    description="Export the registry champion (and a rollout candidate) to BentoML and build the bento offline.",
)
