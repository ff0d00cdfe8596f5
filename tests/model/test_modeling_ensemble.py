"""The ENSEMBLE candidate family: weights chosen on validation only, the blend model, and the candidate step
with XGBoost, the spline logistic regression and the ensemble on a simulated world (experiment table in
MLflow, ``churnops experiments``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from churn_assets.cli.modeling import register
from churn_assets.modeling.candidates import BASELINES, baseline_specs, fit_candidate, lightgbm_spec
from churn_assets.modeling.ensemble import OOF_TOLERANCE, BlendEnsemble, choose_blend, simplex_grid
from churn_assets.modeling.evaluation import AUC_TOLERANCE
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.splits import assign_stratified, build_splits
from churn_assets.modeling.tracking import configure, experiment_table, load_model, log_candidate_run
from churn_assets.modeling.train_table import train_from_frame
from churn_assets.settings import get_settings
from tests.modeling_helpers import modeling_settings, synthetic_churn

RNG = np.random.default_rng(5)


def _noisy_views(n: int = 3000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and three candidates' scores: two independent noisy views of the signal, one pure noise."""
    signal = RNG.normal(size=n)
    y = (RNG.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(int)

    def squash(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    return y, {
        "a": squash(signal + RNG.normal(scale=1.5, size=n)),
        "b": squash(signal + RNG.normal(scale=1.5, size=n)),
        "noise": RNG.random(n),
    }


def test_simplex_grid_covers_every_weighting() -> None:
    grid = simplex_grid(3)
    assert len(grid) == 66 and np.allclose(grid.sum(axis=1), 1.0) and (grid >= 0).all()
    assert len(simplex_grid(2)) == 11


def test_a_blend_of_two_independent_views_beats_each_and_leaves_noise_out() -> None:
    y, scores = _noisy_views()
    aucs = {k: roc_auc_score(y, v) for k, v in scores.items()}
    blend = choose_blend(scores, aucs, y, max_members=2)
    assert blend is not None
    assert sorted(blend.names) == ["a", "b"]  # the two best by validation AUC; noise is not a member
    assert sum(blend.weights) == pytest.approx(1.0)
    assert blend.val_auc > max(aucs["a"], aucs["b"])
    assert blend.val_auc_oof >= max(aucs.values()) - OOF_TOLERANCE


def test_one_dominant_candidate_is_no_ensemble() -> None:
    y, scores = _noisy_views()
    strong = {
        "strong": np.where(y == 1, 0.6, 0.4) + RNG.normal(scale=0.05, size=len(y)),
        "noise": scores["noise"],
    }
    aucs = {k: roc_auc_score(y, v) for k, v in strong.items()}
    assert choose_blend(strong, aucs, y, max_members=3) is None


def test_blend_model_averages_its_members_and_round_trips_through_mlflow(tmp_path: Path) -> None:
    X, y, _ = synthetic_churn(900, seed=2)
    splits = build_splits(X, y, assign_stratified(y, seed=2))
    lgbm = fit_candidate(lightgbm_spec({"n_estimators": 30}), splits, "none").model
    lr = fit_candidate(baseline_specs(names=("logistic_regression",))[0], splits, "none").model
    blend = BlendEnsemble(["lightgbm", "logistic_regression"], [lgbm, lr], [0.6, 0.4])
    expected = 0.6 * lgbm.predict_proba(splits.X_test)[:, 1] + 0.4 * lr.predict_proba(splits.X_test)[:, 1]
    np.testing.assert_allclose(blend.predict_proba(splits.X_test)[:, 1], expected, rtol=1e-12)
    settings = modeling_settings(tmp_path)
    logged = log_candidate_run(configure(settings), "ensemble", blend, "sklearn", {}, {"auc": 0.8})
    loaded = load_model(logged.model_uri, "sklearn")  # skops, with the ensemble's types trusted
    np.testing.assert_allclose(loaded.predict_proba(splits.X_test)[:, 1], expected, rtol=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        BlendEnsemble(["a", "b"], [lgbm, lr], [0.6, 0.6])
    with pytest.raises(ValueError, match="two or more members"):
        BlendEnsemble(["a"], [lgbm], [1.0])


@pytest.mark.e2e
def test_candidates_with_xgboost_and_ensemble_on_a_simulated_world(tmp_path: Path, monkeypatch) -> None:
    X, y, _ = synthetic_churn(2400, seed=21)
    settings = modeling_settings(
        tmp_path, n_trials=6, timeout_seconds=60, gate_max_disparity=1.0, gate_max_auc_gap=1.0
    )
    report = train_from_frame(
        X,
        y,
        assign_stratified(y, seed=21),
        settings,
        "b" * 64,
        model_name="simulated-churn",
        baselines=("logistic_regression", "random_forest"),
    ).summary()
    table = experiment_table(settings)
    assert table is not None and table.run_id == report["experiment_run_id"]
    models = [r["model"] for r in table.rows]
    assert models == [
        "lightgbm",
        "xgboost",
        "logistic_regression",
        "random_forest",
        "spline_logistic_regression",
        "ensemble",
    ]
    assert [r["model"] for r in table.rows if r["chosen"]] == [report["best_model"]]
    for row in table.rows:
        assert {"val_auc", "test_auc", "recall", "f1", "train_seconds", "params", "run_id"} <= set(row)
    ensemble = table.rows[-1]
    assert ensemble["params"]["weight_rule"] in {"equal", "grid"}
    assert len(ensemble["params"]["members"].split(",")) >= 2
    # Selection is on validation: the chosen model has the highest validation AUC of the selectable ones.
    selectable = {r["model"]: r["val_auc"] for r in table.rows if r["model"] != "ensemble" or r["selectable"]}
    assert report["best_model"] == max(selectable, key=lambda k: selectable[k])
    assert set(report["baselines"]) == {"logistic_regression", "random_forest"} <= set(BASELINES)
    # Calibration never costs ranking: the final model's test AUC is the chosen candidate's, within 0.001.
    assert report["test_auc"] >= report["candidates_test_auc"][report["best_model"]] - AUC_TOLERANCE
    tags = ModelRegistry(settings, name="simulated-churn").tags(report["model_version"])
    assert tags["calibration"] == report["calibration"]
    if report["best_model"] == "ensemble":
        assert json.loads(tags["ensemble_members"]) == report["ensemble_members"]

    app = typer.Typer()
    register(app)
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["experiments", "--json"])
        human = CliRunner().invoke(app, ["experiments"])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert [r["model"] for r in doc] == models and {r["training_run_id"] for r in doc} == {table.run_id}
    assert human.exit_code == 0 and "ensemble" in human.stdout and "← chosen" in human.stdout
