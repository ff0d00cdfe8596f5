"""Jobs: the main pipeline, training, and the automation jobs launched by sensors (docs/automation.md)."""

import warnings

import dagster as dg

from churn_assets.defs.keys import (
    CHAMPION_BENTO,
    FEATURES_GROUP,
    MONITORING_GROUP,
    PRODUCTION_GROUP,
    RAW_GROUP,
    ROLLOUT_START,
    ROLLOUT_STEP,
    SERVING_GROUP,
    SHARED_MODELS_GROUP,
    TRAINING_GROUP,
)
from churn_assets.defs.partitions import weekly_partitions
from churn_assets.defs.resources import end_mlflow_on_run_finished

MAIN_JOB = "churn_pipeline"

churn_pipeline = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.groups(RAW_GROUP, FEATURES_GROUP),
    description=(
        "Ingest landed raw weeks through their contracts, compute feature snapshots into the offline "
        "store and refresh the online store. Launch it over a range of weeks (one run)."
    ),
)

TRAINING_JOB = "training"

training = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.groups(TRAINING_GROUP),
    description=(
        "Build the training set from the offline feature store, tune and compare the candidates (MLflow "
        "runs), register the challenger, run its blocking gate checks and decide the promotion."
    ),
    hooks={end_mlflow_on_run_finished},  # the MLflow parent run of the candidates ends with the run
)

PRODUCTION_JOB = "weekly_production"

# The weekly job mixes raw/features (BackfillPolicy.single_run: the history loads 100 weeks in one run)
# with the production/monitoring assets (one week per run: their metadata is per week). Dagster warns at
# every load that it resolves the job to one partition per run -- exactly how the new-week sensor launches
# it (one run per week) -- so that one warning, for this job only, is silenced.
warnings.filterwarnings(
    "ignore",
    message=rf"Asset job {PRODUCTION_JOB} materializes assets with varying BackfillPolicies",
    category=UserWarning,
)

weekly_production = dg.define_asset_job(
    PRODUCTION_JOB,
    selection=dg.AssetSelection.groups(RAW_GROUP, FEATURES_GROUP, PRODUCTION_GROUP, MONITORING_GROUP),
    partitions_def=weekly_partitions,
    description=(
        "One production week (launched by the new-week sensor): raw -> contracts -> features -> online store "
        "-> live traffic to the running service (when traffic.enabled) -> batch scoring of the other "
        "customers into the prediction log -> label status, rollout review, drift and performance reports."
    ),
)

RETRAINING_JOB = "retraining"

retraining = dg.define_asset_job(
    RETRAINING_JOB,
    selection=dg.AssetSelection.groups(TRAINING_GROUP)
    | dg.AssetSelection.assets(CHAMPION_BENTO, ROLLOUT_START),
    description=(
        "Launched by the retraining sensor / monthly schedule: training set from the feature store (rolling "
        "window, newest holdout) -> challenger -> gates -> promotion (> min_auc_gain) -> bento rebuild -> "
        "rollout start in shadow. A kept champion is audit-logged for review."
    ),
    hooks={end_mlflow_on_run_finished},
)

ROLLOUT_STEP_JOB = "rollout_step"

rollout_step_job = dg.define_asset_job(
    ROLLOUT_STEP_JOB,
    selection=dg.AssetSelection.assets(ROLLOUT_STEP),
    description="One rollout step (advance or rollback), requested by the rollout sensor.",
)

SERVING_JOB = "serving"

serving = dg.define_asset_job(
    SERVING_JOB,
    selection=dg.AssetSelection.groups(SERVING_GROUP),
    description="Export the registry champion (and a rollout candidate) to BentoML and build the bento offline.",
)

SHARED_MODELS_JOB = "shared_models"

shared_models = dg.define_asset_job(
    SHARED_MODELS_JOB,
    selection=dg.AssetSelection.groups(SHARED_MODELS_GROUP),
    description=(
        "Train and register the models other than the production one that are built from the same "
        "feature store (churn-30d: churn within 30 days from the account, usage and engagement groups)."
    ),
)
