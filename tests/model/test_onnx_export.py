"""ONNX export of the champion: onnxruntime scores equal the native model's within 1e-5, the artifact is
logged on the model version, a family that cannot be converted is a clear error.

Equality: a LightGBM built by the training code (``candidates.lightgbm_spec``) on 45 synthetic features
with the declared dtypes (tests/feature_helpers.py), raw and with each calibrator, scored on 10,000 rows.
The command: `churnops export-onnx` on a tiny world whose champion is a LightGBM with an isotonic
calibrator fitted on the validation split as the training's calibration step fits it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.modeling.candidates import baseline_specs, fit_spec, lightgbm_spec
from churn_assets.modeling.evaluation import RankedIsotonic, calibrate, response
from churn_assets.modeling.onnx_export import OnnxExportError, to_onnx
from churn_assets.modeling.splits import build_splits
from churn_assets.modeling.training_set import feature_names
from tests.feature_helpers import random_group_frame

ROWS = 10_000


def _synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """45 features with the declared dtypes (strings as categories), ~1 % missing, a logistic label."""
    ids = list(range(n))
    parts = [
        random_group_frame(g, ids, [pd.Timestamp("2024-01-01")], seed=seed + i, null_share=0.01).to_pandas()
        for i, g in enumerate(FEATURE_GROUPS)
    ]
    X = pd.concat([p.drop(columns=["customer_id", "event_timestamp"]) for p in parts], axis=1)[
        feature_names()
    ]
    for c in X.columns:
        if X[c].dtype == object:
            X[c] = X[c].astype("category")
        else:
            X[c] = X[c].astype(float)
    num = [c for c in X.columns if not isinstance(X[c].dtype, pd.CategoricalDtype)]
    rng = np.random.default_rng(seed)
    z = X[num[:6]].fillna(50).to_numpy() @ rng.normal(0, 0.03, 6) + (
        X[X.columns[X.dtypes == "category"][0]] == "alpha"
    )
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-(z - z.mean())))).astype(int), name="churned")
    return X, y


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    X, y = _synthetic(6_000 + ROWS)
    assignment = pd.Series(["train"] * 4_000 + ["val"] * 2_000 + ["test"] * ROWS)
    splits = build_splits(X, y, assignment)
    spec = lightgbm_spec(
        {"n_estimators": 300, "num_leaves": 31, "learning_rate": 0.05, "min_child_samples": 20}
    )
    model, _auc, _s = fit_spec(spec, splits, "none")
    return splits, model


@pytest.mark.parametrize("method", ["none", "isotonic", "sigmoid", "chosen"])
def test_onnxruntime_scores_equal_native_within_1e_5(fitted, method: str) -> None:  # type: ignore[no-untyped-def]
    splits, raw = fitted
    if method == "none":
        model = raw
    elif method == "chosen":  # the training's own calibration step
        model = calibrate(raw, splits.X_val, splits.y_val).model
    else:
        model = CalibratedClassifierCV(FrozenEstimator(raw), method=method).fit(splits.X_val, splits.y_val)
    onx = to_onnx(model, splits.features, splits.X_test)
    assert onx.family == "LGBMClassifier" and len(splits.X_test) == ROWS
    native = np.asarray(model.predict_proba(splits.X_test))[:, 1]
    scored = onx.predict(splits.X_test)
    assert scored.shape == (ROWS,)
    assert np.max(np.abs(scored - native)) <= 1e-5
    assert np.std(native) > 0.01  # the scores vary: the comparison means something


def test_the_rank_preserving_isotonic_calibrator_converts_exactly(fitted) -> None:  # type: ignore[no-untyped-def]
    """The training's isotonic calibrator breaks its plateaus by the raw score (``RankedIsotonic``, at most
    1e-5 from plain isotonic): the ONNX graph carries that term too, so the scores agree far below 1e-5
    and keep the native ranking."""
    splits, raw = fitted
    model = CalibratedClassifierCV(FrozenEstimator(raw), method="isotonic").fit(splits.X_val, splits.y_val)
    scores = response(raw, splits.X_val)
    ranked = RankedIsotonic(out_of_bounds="clip").fit(scores, np.asarray(splits.y_val).astype(int))
    model.calibrated_classifiers_[0].calibrators[0] = ranked
    native = np.asarray(model.predict_proba(splits.X_test))[:, 1]
    scored = to_onnx(model, splits.features, splits.X_test).predict(splits.X_test)
    assert np.max(np.abs(scored - native)) <= 1e-9
    assert len(np.unique(scored)) == len(np.unique(native))  # no plateau comes back


def test_a_family_without_a_converter_is_a_clear_error(fitted) -> None:  # type: ignore[no-untyped-def]
    splits, _ = fitted
    [spec] = baseline_specs(names=("hist_gradient_boosting",))
    model, _auc, _s = fit_spec(spec, splits, "none")
    with pytest.raises(
        OnnxExportError, match="model family HistGradientBoostingClassifier reads categorical"
    ):
        to_onnx(model, splits.features, splits.X_test)
    [spec] = baseline_specs(names=("logistic_regression",))
    model, _auc, _s = fit_spec(spec, splits, "none")
    with pytest.raises(OnnxExportError, match="model family LogisticRegression cannot be converted to ONNX"):
        to_onnx(model, splits.features, splits.X_test)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_export_onnx_logs_the_artifact_on_the_champion_version(tmp_path, history_cache) -> None:  # type: ignore[no-untyped-def]
    import dagster as dg
    import onnx

    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.modeling.tracking import configure, log_candidate_run
    from churn_assets.modeling.workdir import TrainingWorkdir
    from tests.code.test_cli import assert_one_line_error, churnops, json_document
    from tests.model.test_status_cli import _env
    from tests.monitoring_helpers import register_quick_champion, tiny_settings

    settings = tiny_settings(tmp_path)
    history_cache.history(settings, dg.DagsterInstance.ephemeral())  # simulated history + main job
    raw_version = register_quick_champion(settings)
    registry = ModelRegistry(settings)
    splits, _ = TrainingWorkdir.of(settings).load_splits()
    raw = registry.version_by_alias("champion")
    assert raw is not None
    from churn_assets.modeling.tracking import load_model

    lgbm = load_model(str(raw.source), "lightgbm")
    final = CalibratedClassifierCV(FrozenEstimator(lgbm), method="isotonic").fit(splits.X_val, splits.y_val)
    tracking = configure(settings)
    logged = log_candidate_run(tracking, "final:lightgbm+isotonic", final, "sklearn", {}, {"auc": 0.9})
    calibrated = registry.register(logged, splits.features, "d" * 64, {"auc": 0.9}, [])
    registry.consider(calibrated.version, 0.9, 0.5, [])
    assert registry.aliases()["champion"] == calibrated.version

    done = json_document(churnops("export-onnx", "--json", home=settings.home, **_env(settings)))
    assert isinstance(done, dict)
    assert done["version"] == calibrated.version and done["calibration"] == "isotonic"
    assert done["family"] == "LGBMClassifier" and done["checked_rows"] == len(splits.X_test)
    assert done["max_abs_diff_vs_native"] <= 1e-5
    mv = registry.client.get_model_version(registry.name, calibrated.version)
    assert mv.tags["onnx_artifact"] == done["artifact_uri"] == f"runs:/{mv.run_id}/onnx/model.onnx"
    path = registry.client.download_artifacts(mv.run_id, "onnx/model.onnx", str(tmp_path))
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["features"]) == splits.features and meta["output"] == "probability"
    from churn_assets.modeling.onnx_export import OnnxModel

    onx = OnnxModel(
        proto, splits.features, json.loads(meta["categories"]), meta["family"], "isotonic", "matrix"
    )
    native = np.asarray(final.predict_proba(splits.X_test))[:, 1]
    assert np.max(np.abs(onx.predict(splits.X_test) - native)) <= 1e-5

    older = json_document(
        churnops("export-onnx", "--version", raw_version, "--json", home=settings.home, **_env(settings))
    )
    assert isinstance(older, dict) and older["version"] == raw_version and older["calibration"] == "none"
    missing = churnops("export-onnx", "--version", "99", home=settings.home, **_env(settings))
    assert_one_line_error(missing, 2, "has no version 99")

    # An ENSEMBLE version (the LightGBM, an XGBoost and the logistic baseline, sigmoid-calibrated on
    # validation): one graph, checked and logged on its version like a single model.
    from churn_assets.modeling.candidates import xgboost_spec
    from churn_assets.modeling.ensemble import BlendEnsemble

    members = [
        lgbm,
        fit_spec(xgboost_spec({"n_estimators": 50, "max_depth": 3}), splits, "none")[0],
        fit_spec(baseline_specs(names=("logistic_regression",))[0], splits, "none")[0],
    ]
    blend = BlendEnsemble(["lightgbm", "xgboost", "logistic_regression"], members, [0.5, 0.3, 0.2])
    ensemble = CalibratedClassifierCV(FrozenEstimator(blend), method="sigmoid").fit(
        splits.X_val, splits.y_val
    )
    logged = log_candidate_run(tracking, "final:ensemble+sigmoid", ensemble, "sklearn", {}, {"auc": 0.9})
    blended = registry.register(logged, splits.features, "d" * 64, {"auc": 0.9}, [])
    done = json_document(
        churnops("export-onnx", "--version", blended.version, "--json", home=settings.home, **_env(settings))
    )
    assert isinstance(done, dict) and done["version"] == blended.version and done["input"] == "columns"
    assert done["family"].startswith("BlendEnsemble(lightgbm=LGBMClassifier:0.5, xgboost=XGBClassifier:0.3")
    assert done["checked_rows"] == len(splits.X_test) and done["max_abs_diff_vs_native"] <= 1e-5
    mv = registry.client.get_model_version(registry.name, blended.version)
    assert mv.tags["onnx_artifact"] == done["artifact_uri"] == f"runs:/{mv.run_id}/onnx/model.onnx"
    proto = onnx.load(registry.client.download_artifacts(mv.run_id, "onnx/model.onnx", str(tmp_path / "ens")))
    meta = {p.key: p.value for p in proto.metadata_props}
    onx = OnnxModel(
        proto, splits.features, json.loads(meta["categories"]), meta["family"], "sigmoid", "columns"
    )
    native = np.asarray(ensemble.predict_proba(splits.X_test))[:, 1]
    assert np.max(np.abs(onx.predict(splits.X_test) - native)) <= 1e-5


def _blend(splits, names: tuple[str, ...], weights: tuple[float, ...], method: str):  # type: ignore[no-untyped-def]
    """An ensemble as the training builds one: members fitted on train, blended, calibrated on val."""
    from churn_assets.modeling.candidates import xgboost_spec
    from churn_assets.modeling.ensemble import BlendEnsemble

    specs = {
        "lightgbm": lightgbm_spec({"n_estimators": 100, "num_leaves": 15, "learning_rate": 0.05}),
        "xgboost": xgboost_spec({"n_estimators": 100, "max_depth": 4}),
    }
    members = [
        fit_spec(specs[n] if n in specs else baseline_specs(names=(n,))[0], splits, "none")[0] for n in names
    ]
    blend = BlendEnsemble(list(names), members, list(weights))
    return CalibratedClassifierCV(FrozenEstimator(blend), method=method).fit(splits.X_val, splits.y_val)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_an_ensemble_converts_to_one_graph_equal_to_native_within_1e_5(fitted, method: str) -> None:  # type: ignore[no-untyped-def]
    """LightGBM + XGBoost + logistic regression, blended and calibrated, as ONE ONNX graph: onnxruntime
    equals ``predict_proba`` on 10,000 rows (~1 % missing values), also with categories the members never
    saw (missing for every member, as the ensemble aligns them to XGBoost's categories)."""
    splits, _ = fitted
    model = _blend(splits, ("lightgbm", "xgboost", "logistic_regression"), (0.5, 0.3, 0.2), method)
    onx = to_onnx(model, splits.features, splits.X_test)
    assert onx.family.startswith("BlendEnsemble(") and onx.calibration == method
    assert len(onx.proto.graph.output) == 1 and len(splits.X_test) == ROWS
    native = np.asarray(model.predict_proba(splits.X_test))[:, 1]
    scored = onx.predict(splits.X_test)
    assert scored.shape == (ROWS,)
    assert np.max(np.abs(scored - native)) <= 1e-5
    assert np.std(native) > 0.01
    text = [c for c in splits.features if isinstance(splits.X_test[c].dtype, pd.CategoricalDtype)]
    unseen = splits.X_test.head(500).copy()
    for col in text[:3]:
        unseen[col] = unseen[col].cat.add_categories(["never-seen"])
        unseen.loc[unseen.index[::7], col] = "never-seen"
    native = np.asarray(model.predict_proba(unseen))[:, 1]
    assert np.max(np.abs(onx.predict(unseen) - native)) <= 1e-5


def test_an_ensemble_member_without_a_converter_is_named(fitted) -> None:  # type: ignore[no-untyped-def]
    splits, _ = fitted
    model = _blend(splits, ("lightgbm", "hist_gradient_boosting"), (0.5, 0.5), "sigmoid")
    with pytest.raises(OnnxExportError, match="ensemble member 'hist_gradient_boosting'"):
        to_onnx(model, splits.features, splits.X_test)
