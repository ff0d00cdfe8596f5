"""Serving asset: the champion (and, during a rollout, the candidate) exported from MLflow into the BentoML
model store and built into a bento offline. Thin wrapper over ``churn_assets.serving.bento_build``."""

import dagster as dg

from churn_assets.defs.assets.training import CHAMPION
from churn_assets.defs.training_resources import MlflowResource, ModelingResource
from churn_assets.serving.bento_build import build_bento

SERVING_GROUP = "serving"
CHAMPION_BENTO = dg.AssetKey(["serving", "champion_bento"])


@dg.asset(
    key=CHAMPION_BENTO,
    group_name=SERVING_GROUP,
    deps=[CHAMPION],
    kinds={"bentoml"},
    description=(
        "The registry champion as a bento: a new champion starts a rollout (shadow) from the served version; "
        "the stable (+ candidate) models are exported into the BentoML store under home/bentoml and "
        "`bentoml build` runs offline. The bento tag is recorded on the registry version (tag `bento_tag`)."
    ),
)
def champion_bento(
    context: dg.AssetExecutionContext, modeling: ModelingResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    settings = mlflow.bind(modeling.settings())
    built = build_bento(settings)
    context.log.info(f"built bento {built.bento_tag} (rollout phase {built.phase})")
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built.bento_tag,
            "stable_model": built.stable,
            "candidate_model": built.candidate or "none",
            "rollout_phase": built.phase,
            "pruned_models": dg.MetadataValue.json(built.removed),
            "bentoml_home": str(settings.bentoml_home),
        }
    )
