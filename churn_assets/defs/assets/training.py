"""Training assets: training set -> candidates -> challenger (gated) -> champion.

Thin wrappers over ``churn_assets.modeling`` (``training_set``, ``candidate_stage``,
``challenger_stage``, ``registry``). Each asset writes its result to the training work folder
(``modeling.workdir.TrainingWorkdir``) and the next one reads it from there, so every step can
be re-materialized on its own. The seven gates are blocking asset checks on ``training/challenger``
(``defs/training_checks.py``): one failure stops ``training/champion``.
"""

from typing import Any

import dagster as dg

from churn_assets.defs.keys import (
    CANDIDATES,
    CHALLENGER,
    CHAMPION,
    FEATURE_KEYS,
    TRAINING_GROUP,
    TRAINING_SET,
)
from churn_assets.defs.metadata import markdown_table, png_markdown
from churn_assets.defs.resources import ComputeResource, WarehouseResource
from churn_assets.modeling.paths import tracking_uri
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings, mask_url
from churn_assets.timeline import Timeline

# The modeling library (scikit-learn, LightGBM, MLflow, Optuna, matplotlib) is imported inside the
# asset bodies: every run the daemon launches is a subprocess that loads this code location, and most
# runs (weekly production, rollout steps) never train (docs/automation.md, "Where the time goes").


class _MlflowLinks:
    """``MetadataValue.url`` links into the MLflow UI (``settings.modeling.mlflow_ui_url``): the parent run
    of this Dagster run (opened by the ``mlflow`` resource in the training / retraining jobs; absent when
    an asset is materialized on its own), runs of the experiment, registered model versions."""

    def __init__(self, settings: Settings) -> None:
        from churn_assets.modeling.tracking import active_run_info, configure

        self.ui_url = settings.modeling.mlflow_ui_url
        self.model_name = settings.modeling.registered_model_name
        self.experiment_id = configure(settings).experiment_id
        self.parent = active_run_info()

    def run_url(self, run_id: str) -> str:
        from churn_assets.modeling.tracking import ui_run_url

        return ui_run_url(self.ui_url, self.experiment_id, run_id)

    def run(self, run_id: str) -> dg.MetadataValue:
        return dg.MetadataValue.url(self.run_url(run_id))

    def version(self, version: str | int) -> dg.MetadataValue:
        from churn_assets.modeling.tracking import ui_model_version_url

        return dg.MetadataValue.url(ui_model_version_url(self.ui_url, self.model_name, version))

    def parent_run(self) -> dict[str, dg.MetadataValue]:
        """``{"mlflow_parent_run": url}`` when this Dagster run has an MLflow parent run, else ``{}``."""
        if self.parent is None:
            return {}
        from churn_assets.modeling.tracking import ui_run_url

        url = ui_run_url(self.ui_url, self.parent.experiment_id, self.parent.run_id)
        return {"mlflow_parent_run": dg.MetadataValue.url(url)}


def _fmt(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


@dg.asset(
    key=TRAINING_SET,
    group_name=TRAINING_GROUP,
    deps=FEATURE_KEYS,
    kinds={"pandas", "parquet"},
    description=(
        "Label snapshots (active customer x monthly as-of date, churned within the next 90 days) joined "
        "point-in-time with the offline feature store; time-based split by snapshot month."
    ),
)
def training_set(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.compute.engine import build_training_set

    workdir = TrainingWorkdir.of(settings)
    timeline = Timeline.from_settings(settings.simulation)
    with compute.engine() as engine, warehouse.warehouse().connect() as con:
        con.execute(f"SET memory_limit = '{settings.modeling.training_set_memory_limit}'")
        # checked before anything is written: bad input fails here and leaves the stored set as it was
        meta = build_training_set(engine, con, timeline, workdir)
        engine_meta = engine.metadata()
    if "shard_rows" in meta and engine.client is not None:
        engine_meta["shard_rows"] = dg.MetadataValue.json(meta["shard_rows"])
    rows = [
        {"split": name, **{k: _fmt(v) for k, v in s.items() if k != "periods_present"}}
        for name, s in meta["splits"].items()
    ]
    context.log.info(f"training set: {meta['rows']} rows, sha256 {meta['sha256'][:12]}")
    split_meta: dict[str, Any] = {}
    for name, s in meta["splits"].items():
        split_meta[f"{name}_rows"] = s["rows"]
        split_meta[f"{name}_positive_rate"] = float(s["positive_rate"])
        split_meta[f"{name}_boundaries"] = f"periods {s['periods']}: {s['first_as_of']} .. {s['last_as_of']}"
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": meta["rows"],
            "splits": dg.MetadataValue.md(markdown_table(rows)),
            **split_meta,
            "positive_rate": float(meta["positive_rate"]),
            "customers": meta["customers"],
            "features": len(meta["features"]),
            "label": meta["label"],
            "data_sha256": meta["sha256"],
            "excluded_snapshots": dg.MetadataValue.md(
                (
                    ", ".join(meta["excluded_snapshots"])
                    + f" (label window + {meta['report_delay_days']}-day report delay past the data end "
                    + f"{meta['data_end']})"
                )
                if meta["excluded_snapshots"]
                else "none"
            ),
            "leakage_feature_timestamps_after_as_of": meta["leakage_feature_timestamps_after_as_of"],
            "cancelled_before_as_of": meta["cancelled_before_as_of"],
            "path": dg.MetadataValue.path(str(workdir.training_set)),
            **engine_meta,
        }
    )


@dg.asset(
    key=CANDIDATES,
    group_name=TRAINING_GROUP,
    deps=[TRAINING_SET],
    kinds={"lightgbm", "xgboost", "scikitlearn", "optuna", "mlflow"},
    description=(
        "Optuna-tuned LightGBM and XGBoost (pruning, RDB storage, resumable), the scikit-learn baselines (LR, "
        "RF, HistGradientBoosting, MLP 128-64) and the spline logistic regression, each with its "
        "class-imbalance choice, and the ENSEMBLE blend of the best of them (weights chosen on validation); "
        "one MLflow run each, the experiment table on the parent run. The best on validation AUC goes on "
        "to become the challenger."
    ),
)
def candidates(
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    from churn_assets.compute.training import distributed_trainer
    from churn_assets.modeling.candidate_stage import run_retraining_candidates

    workdir = TrainingWorkdir.of(settings)
    splits, meta = workdir.load_splits()
    with distributed_trainer(settings, workdir.training_set, meta["sha256"]) as trainer:
        stage = run_retraining_candidates(
            splits,
            settings,
            meta["sha256"],
            workdir.candidates_dir,
            progress=context.log.info,
            trainer=trainer,
        )
    stage.to_json(workdir.candidates)
    links = _MlflowLinks(settings)
    table = [
        {
            "model": r["model"],
            "val AUC": _fmt(r["val_auc"]),
            "test AUC": _fmt(r["test_auc"]),
            "recall": _fmt(r["recall"]),
            "precision": _fmt(r["precision"]),
            "F1": _fmt(r["f1"]),
            "imbalance": r["imbalance"],
            "fit s": _fmt(r["train_seconds"]),
            "MLflow run": f"[{r['run_id'][:12]}]({links.run_url(r['run_id'])})",
        }
        for r in sorted(stage.table, key=lambda r: -r["val_auc"])
    ]
    t = stage.tuning
    return dg.MaterializeResult(
        metadata={
            "experiments": dg.MetadataValue.md(markdown_table(table)),
            "best": stage.best,
            "ensemble_members": dg.MetadataValue.json(stage.members),
            "lightgbm_hyperparameters": "the champion's (no re-tuning)"
            if "fixed_params" in t
            else "tuned (Optuna)",
            "best_val_auc": float(stage.val_auc),
            "engine": str(t.get("engine", "local")),
            **(
                {
                    "workers": int(t["workers"]),
                    "train_rows_by_shard": dg.MetadataValue.json(t["train_rows_by_shard"]),
                }
                if "workers" in t
                else {}
            ),
            "optuna": dg.MetadataValue.json(
                {k: t.get(k) for k in ("study", "storage", "complete", "pruned", "run_now", "best_val_auc")}
                | (
                    {"budget": f"{t['n_trials_budget']} trials / {t['seconds_budget']} s"}
                    if "n_trials_budget" in t
                    else {"fixed_params": t.get("fixed_params")}
                )
            ),
            "imbalance_choice": dg.MetadataValue.json(
                {
                    r["model"]: {
                        "chosen": r["imbalance"],
                        "val_auc_none": r["val_auc_none"],
                        "val_auc_balanced": r["val_auc_balanced"],
                    }
                    for r in stage.table
                }
            ),
            "tracking_uri": mask_url(tracking_uri(settings)),
            **links.parent_run(),
            "mlflow_best_run": links.run(stage.run_ids[stage.best]),
            "best_roc": png_markdown(stage.plots[stage.best], f"ROC (test) of {stage.best}"),
        }
    )


@dg.asset(
    key=CHALLENGER,
    group_name=TRAINING_GROUP,
    deps=[CANDIDATES],
    kinds={"mlflow"},
    description=(
        "The best candidate, calibrated (sigmoid / tie-broken isotonic only when it lowers the out-of-fold "
        "validation Brier without costing more than 0.001 validation AUC), with its validation-chosen threshold, evaluated on test, logged and registered as a new "
        "`churn-model` version with alias `challenger`. Gates: blocking asset checks."
    ),
)
def challenger(
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    from churn_assets.modeling.candidate_stage import CandidateStage
    from churn_assets.modeling.challenger_stage import decide_promotion, evaluate_challenger
    from churn_assets.modeling.gates import gate_results
    from churn_assets.modeling.registry import ModelRegistry

    # The saved scores stand in for predictions: train labels only, val + test features.
    workdir = TrainingWorkdir.of(settings)
    splits, meta = workdir.load_splits(("val", "test"))
    stage = CandidateStage.from_json(workdir.candidates)
    result = evaluate_challenger(stage, splits, settings, meta["sha256"], workdir.challenger_dir)
    result.to_json(workdir.challenger)
    gates = gate_results(result.measurements, settings.modeling)
    failed = [g.name for g in gates if not g.passed]
    if failed:
        # The blocking checks will stop training/champion: record the decision here (audit log).
        decision = decide_promotion(settings, result, splits.X_test, splits.y_test)
        context.log.warning(f"challenger {result.version}: {decision.outcome} ({decision.reason})")
    m = result.measurements
    tags = ModelRegistry(settings).tags(result.version)
    links = _MlflowLinks(settings)
    return dg.MaterializeResult(
        metadata={
            "model": result.model_name,
            "version": result.version,
            "semver": result.semver,
            "alias": "challenger",
            "best_candidate": result.best,
            "calibration": result.calibration,
            "test_auc": float(result.test_metrics["auc"]),
            "train_auc": float(result.train_auc),
            "threshold": float(m.threshold.value),
            "test_recall": float(m.threshold.test.recall),
            "test_precision": float(m.threshold.test.precision),
            "test_f1": float(m.threshold.test.f1),
            "test_brier": float(m.calibration.test_brier),
            "gates": dg.MetadataValue.md(
                markdown_table(
                    [
                        {"gate": g.name, "value": _fmt(g.value), "limit": g.limit, "passed": g.passed}
                        for g in gates
                    ]
                )
            ),
            "registry_tags": dg.MetadataValue.json(
                {k: tags[k] for k in ("semver", "artifact_sha256", "data_sha256", "features", "gates_passed")}
            ),
            "mlflow_run_id": result.run_id,
            **links.parent_run(),
            "mlflow_run": links.run(result.run_id),
            "mlflow_model_version": links.version(result.version),
            **{f"plot_{k}": png_markdown(v, k) for k, v in result.plots.items()},
        }
    )


@dg.asset(
    key=CHAMPION,
    group_name=TRAINING_GROUP,
    deps=[CHALLENGER],
    kinds={"mlflow"},
    description=(
        "Promotion decision: the challenger becomes `champion` (old champion -> `previous`) when every gate "
        "passed and its test AUC beats the champion's on the SAME holdout by more than `min_auc_gain` (no "
        "champion yet: gates alone decide). Manual mode marks it pending. Every decision is audit-logged."
    ),
)
def champion(context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
    from churn_assets.modeling.challenger_stage import ChallengerStage, decide_promotion
    from churn_assets.modeling.registry import ModelRegistry

    workdir = TrainingWorkdir.of(settings)
    splits, _ = workdir.load_splits(("test",))
    result = ChallengerStage.from_json(workdir.challenger)
    decision = decide_promotion(settings, result, splits.X_test, splits.y_test)
    record = {
        "outcome": decision.outcome,
        "reason": decision.reason,
        "challenger": decision.challenger,
        "champion_before": decision.champion_before,
        "champion_after": decision.champion_after,
        "challenger_auc": decision.challenger_auc,
        "champion_auc": decision.champion_auc,
        "mode": settings.modeling.promotion_mode,
    }
    workdir.write_decision(record)
    workdir.record_trained_on(str(decision.challenger))
    context.log.info(f"promotion decision: {decision.outcome} ({decision.reason})")
    registry = ModelRegistry(settings)
    links = _MlflowLinks(settings)
    return dg.MaterializeResult(
        metadata={
            "decision": decision.outcome,
            "reason": decision.reason,
            "challenger_version": decision.challenger,
            "champion_before": decision.champion_before or "none",
            "champion_after": decision.champion_after or "none",
            "challenger_auc": float(decision.challenger_auc),
            "champion_auc_same_holdout": "none (no champion)"
            if decision.champion_auc is None
            else float(decision.champion_auc),
            "min_auc_gain": settings.modeling.min_auc_gain,
            "mode": settings.modeling.promotion_mode,
            "aliases": dg.MetadataValue.json(registry.aliases()),
            **links.parent_run(),
            "mlflow_run": links.run(result.run_id),
            "mlflow_challenger_version": links.version(decision.challenger),
            **(
                {"mlflow_champion_version": links.version(decision.champion_after)}
                if decision.champion_after
                else {}
            ),
        }
    )
