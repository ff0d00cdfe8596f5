"""Serving asset: the champion (and, during a rollout, the candidate) exported from MLflow into the BentoML
model store and built into a bento offline. Thin wrapper over ``churn_assets.serving.bento_build``."""

import json
from pathlib import Path

import dagster as dg

from churn_assets.defs.assets.training import CHAMPION
from churn_assets.defs.training_resources import MlflowResource, ModelingResource
from churn_assets.serving.bento_build import build_bento, latest_bento
from churn_assets.settings import Settings

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
    kept = _kept_bento(context, modeling)
    if kept is not None:
        context.log.info(f"champion kept: bento {kept} unchanged (no rebuild)")
        return dg.MaterializeResult(metadata={"bento_tag": kept, "rebuilt": False, "reason": "champion kept"})
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
            "rebuilt": True,
        }
    )


def _kept_bento(context: dg.AssetExecutionContext, modeling: ModelingResource) -> str | None:
    """Only in a run that also decided the promotion (``training/champion`` selected, e.g. the
    ``retraining`` job); the standalone ``serving`` job always builds."""
    selection = context.run.asset_selection
    asset_layer = context.job_def.asset_layer
    decided = CHAMPION in (selection if selection is not None else asset_layer.selected_asset_keys)
    return kept_bento(decided, modeling.workdir.champion, modeling.settings())


def kept_bento(decided: bool, decision_path: Path, settings: Settings) -> str | None:
    """The existing bento's tag when this run's promotion decision kept the champion, else None (build).

    A kept (or pending) champion changes neither the served models nor the rollout, so rebuilding would
    reproduce the bento already there; a promotion, a run without a decision, or no bento yet -> build.
    """
    if not decided or not decision_path.exists():
        return None
    if json.loads(decision_path.read_text()).get("outcome") == "promoted":
        return None
    return latest_bento(settings)
