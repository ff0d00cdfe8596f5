"""Blocking promotion gates on ``training/challenger``: any failure stops ``training/champion``.

One check per gate (``churn_assets.modeling.gates.gate_results`` defines them). Each reads the
challenger's stored measurements (``TrainingWorkdir.challenger``: ``challenger/challenger.json``) and compares them with
the CURRENT limits in ``settings.modeling`` (``gate_*``), so tightening a limit and re-running the
checks re-decides without retraining.
"""

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.defs.keys import CHALLENGER
from churn_assets.defs.metadata import markdown_table, png_markdown
from churn_assets.modeling.names import GATES
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings

if TYPE_CHECKING:  # the modeling library is imported by the check bodies, not at code-location load
    from churn_assets.modeling.challenger_stage import ChallengerStage

DESCRIPTIONS = {
    "auc_floor": "Test AUC at least `gate_min_auc`.",
    "train_test_gap": "Train AUC minus test AUC at most `gate_max_auc_gap` (overfitting).",
    "calibration": (
        "Test Brier below the no-skill Brier and the mean reliability error (10 quantile bins) at most "
        "`gate_max_calibration_error`; sigmoid / tie-broken isotonic applied only when it lowers the OOF "
        "validation Brier and costs at most 0.001 validation AUC."
    ),
    "threshold": (
        "Threshold = max F1 on the calibrated validation scores; at it, test recall at least "
        "`gate_min_recall` and precision above the test positive rate."
    ),
    "shap": "Top-5 share of mean |SHAP| (LightGBM pred_contrib) at most `gate_max_shap_top5_share`.",
    "fairness": "Max recall gap between segment groups at most `gate_max_disparity`.",
    "stress_slices": (
        "AUC on new customers (tenure < `new_customer_days`) and high-value customers (top revenue decile) "
        "at least `gate_min_slice_auc`."
    ),
}


def _details(gate: str, stage: "ChallengerStage") -> dict[str, Any]:
    m = stage.measurements
    out: dict[str, Any] = {"challenger_version": stage.version, "semver": stage.semver}
    if gate == "calibration":
        c = m.calibration
        out["method"] = c.method
        out["test_brier"] = float(c.test_brier)
        out["no_skill_brier"] = float(c.no_skill_brier)
        out["val_brier_oof"] = dg.MetadataValue.json(c.val_brier_oof)
        out["reliability_curve"] = dg.MetadataValue.md(
            markdown_table(
                [
                    {"mean predicted": round(p, 4), "observed rate": round(o, 4)}
                    for p, o in zip(c.reliability.mean_predicted, c.reliability.observed_rate, strict=True)
                ]
            )
        )
        if "reliability" in stage.plots:
            out["reliability_plot"] = png_markdown(stage.plots["reliability"], "reliability (test)")
    elif gate == "threshold":
        t = m.threshold
        out.update(
            rule=t.rule,
            threshold=float(t.value),
            **{f"test_{k}": float(v) for k, v in asdict(t.test).items()},
            **{f"val_{k}": float(v) for k, v in asdict(t.val).items()},
            test_positive_rate=float(t.test_positive_rate),
        )
    elif gate == "shap":
        s = m.shap
        out["method"] = s.method
        if s.top5:
            out["top5"] = ", ".join(s.top5)
            out["mean_abs_shap"] = dg.MetadataValue.json(s.mean_abs)
        if "shap" in stage.plots:
            out["shap_plot"] = png_markdown(stage.plots["shap"], "mean |SHAP| (test)")
    elif gate == "fairness":
        f = m.fairness
        out["columns"] = ", ".join(f.columns) or "none present"
        out["worst_column"] = str(f.worst_column)
        if f.by_segment:
            out["by_segment"] = dg.MetadataValue.md(markdown_table(f.by_segment, limit=60))
    elif gate == "stress_slices":
        rows = [
            {
                "slice": k,
                "rows": s.rows,
                "positives": s.positives,
                "auc": s.auc,
                "recall": s.recall,
                "precision": s.precision,
            }
            for k, s in m.stress_slices.items()
        ]
        out["slices"] = dg.MetadataValue.md(markdown_table(rows) or "no slice columns")
    else:  # auc_floor, train_test_gap
        out.update({k: float(v) for k, v in asdict(getattr(m, gate)).items() if isinstance(v, int | float)})
    return out


def _build_gate_check(gate: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=CHALLENGER, name=gate, blocking=True, description=DESCRIPTIONS[gate])
    def _check(settings: dg.ResourceParam[Settings]) -> dg.AssetCheckResult:
        from churn_assets.modeling.challenger_stage import ChallengerStage
        from churn_assets.modeling.gates import gate_results

        stage = ChallengerStage.from_json(TrainingWorkdir.of(settings).challenger)
        result = next(g for g in gate_results(stage.measurements, settings.modeling) if g.name == gate)
        verb = "passed" if result.passed else "FAILED"
        return dg.AssetCheckResult(
            passed=bool(result.passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{gate} {verb}: value {result.value:.4f}, limit {result.limit}",
            metadata={"value": float(result.value), "limit": float(result.limit), **_details(gate, stage)},
        )

    return _check


gate_checks = [_build_gate_check(gate) for gate in GATES]
