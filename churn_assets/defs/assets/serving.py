"""Serving asset: the champion (and, during a rollout, the candidate) exported from MLflow into the BentoML
model store and built into a bento offline. Thin wrapper over ``churn_assets.serving.bento_build``."""

import dagster as dg

from churn_assets.defs.keys import CHAMPION, CHAMPION_BENTO, SERVING_GROUP
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.serving.bento_build import build_bento, kept_bento
from churn_assets.settings import Settings


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
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    kept = _kept_bento(context, settings)
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


def _kept_bento(context: dg.AssetExecutionContext, settings: Settings) -> str | None:
    """Only in a run that also decided the promotion (``training/champion`` selected, e.g. the
    ``retraining`` job); the standalone ``serving`` job always builds. A run of the whole job has no
    asset selection of its own (None from a launched run, empty from ``execute_in_process``): the job's."""
    selection = context.run.asset_selection
    decided = CHAMPION in (selection or context.job_def.asset_layer.selected_asset_keys)
    return kept_bento(decided, TrainingWorkdir.of(settings).champion, settings)
