"""Benchmark: the champion as ONNX vs native — model size and single-row latency.

The model: LightGBM with the simulator's reference parameters (``simulation.calibration.LGBM_PARAMS``:
300 trees, 31 leaves) plus an isotonic calibrator (``CalibratedClassifierCV(FrozenEstimator(...))``, as
the training's calibration step builds it), fitted on ``--rows`` rows (half each) of the 45 declared features with
their dtypes (random values, strings as categories, a logistic label). Converted by
``modeling.onnx_export.to_onnx``.

``--model ensemble``: an ENSEMBLE instead — that LightGBM, an XGBoost (300 trees, depth 6) and the
logistic-regression baseline (one-hot + scaling), blended 0.5 / 0.3 / 0.2 (``modeling.ensemble.BlendEnsemble``)
and isotonic-calibrated, converted to one ONNX graph; its single-row latency is also measured on the
serving path (``serving.scoring.ScoringModel.score`` of one row dict: members on numpy arrays, ``served``).

Measured, one thread each:

* size: the ONNX file vs the native model as MLflow stores it (``skops``);
* single-row latency over ``--repeat`` calls on random rows: native ``predict_proba`` on a 1-row pandas
  frame; onnxruntime ``run`` on the encoded row (``ort``); encoding + ``run`` (``ort+encode``);
* the largest |ONNX - native| score difference on all rows (an ensemble: also per member, of the blend,
  and the isotonic calibrator's steepest slope).

Usage::

    .venv/bin/python -m benchmarks.onnx_export                 # 20,000 rows, 2,000 calls
    .venv/bin/python -m benchmarks.onnx_export --rows 5000 --repeat 500
    .venv/bin/python -m benchmarks.onnx_export --model ensemble
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import pandas as pd


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    from churn_assets.feature_store.definitions import all_features

    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for f in all_features():
        if f.dtype == "string":
            columns[f.name] = pd.Categorical(rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"], n))
        else:
            values = rng.gamma(2.0, 20.0, n)
            values[rng.random(n) < 0.01] = np.nan
            columns[f.name] = values
    X = pd.DataFrame(columns)
    numeric = [c for c in X.columns if X[c].dtype != "category"]
    z = X[numeric[:6]].fillna(40).to_numpy() @ rng.normal(0, 0.03, 6)
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-(z - z.mean())))).astype(int))
    return X, y


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


def member_differences(onx: Any, blend: Any, model: Any, X: pd.DataFrame) -> None:
    """Where an ensemble's ONNX - native difference comes from: each member's probability and the blend
    read from the graph's intermediate tensors (``m<i>_p``, ``ens_blend``) against native, and the
    steepest slope of an isotonic calibrator (which multiplies the blend's difference)."""
    import onnx
    from onnx import TensorProto, helper

    from churn_assets.modeling.onnx_export import OnnxModel

    proto = onnx.ModelProto()
    proto.CopyFrom(onx.proto)
    names = [f"m{i}_p" for i in range(len(blend.names))] + ["ens_blend"]
    proto.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in names)
    probe = OnnxModel(proto, onx.features, onx.categories, onx.family, onx.calibration, onx.input_kind)
    outputs = probe.session().run(names, probe.inputs(X))
    for name, member, out in zip(blend.names, blend.members, outputs, strict=False):
        native = np.asarray(member.predict_proba(X))[:, 1]
        print(f"max |ONNX - native| of member {name}: {np.max(np.abs(out.ravel() - native)):.2e}")
    blended = np.asarray(blend.predict_proba(X))[:, 1]
    print(f"max |ONNX - native| of the blend: {np.max(np.abs(outputs[-1].ravel() - blended)):.2e}")
    calibrator = model.calibrated_classifiers_[0].calibrators[0]
    if hasattr(calibrator, "X_thresholds_"):
        slopes = np.diff(calibrator.y_thresholds_) / np.diff(calibrator.X_thresholds_)
        print(f"steepest isotonic calibrator slope: {np.max(slopes):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=20_000,
        help="rows: the first half fits LightGBM, the second the calibrator; all are checked",
    )
    parser.add_argument("--repeat", type=int, default=2_000, help="single-row calls per engine")
    parser.add_argument("--model", choices=["lightgbm", "ensemble"], default="lightgbm")
    args = parser.parse_args()

    import lightgbm as lgb
    import skops.io as sio
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from churn_assets.modeling.onnx_export import to_onnx
    from churn_assets.simulation.calibration import LGBM_PARAMS

    print(f"load average before: {os.getloadavg()}")
    X, y = synthetic(args.rows)
    half = args.rows // 2
    raw = lgb.LGBMClassifier(**LGBM_PARAMS).fit(X[:half], y[:half])  # type: ignore[arg-type]
    served = None
    if args.model == "ensemble":
        from churn_assets.modeling.candidates import baseline_specs, xgboost_spec
        from churn_assets.modeling.ensemble import BlendEnsemble
        from churn_assets.serving.scoring import ScoringModel

        xgb = xgboost_spec({"n_estimators": 300, "max_depth": 6}).build().fit(X[:half], y[:half])
        logistic = baseline_specs(names=("logistic_regression",))[0].build().fit(X[:half], y[:half])
        raw = BlendEnsemble(
            ["lightgbm", "xgboost", "logistic_regression"], [raw, xgb, logistic], [0.5, 0.3, 0.2]
        )
        description = (
            "ensemble (LightGBM 300 trees 0.5, XGBoost 300 trees depth 6 0.3, logistic regression 0.2)"
        )
    else:
        description = f"LightGBM {LGBM_PARAMS['n_estimators']} trees"
    model = CalibratedClassifierCV(FrozenEstimator(raw), method="isotonic").fit(X[half:], y[half:])
    features = list(X.columns)
    if args.model == "ensemble":
        served = ScoringModel("bench", "1", model, features, 0.5, flavor="sklearn")
    onx = to_onnx(model, features, X)
    onnx_bytes = len(onx.proto.SerializeToString())
    native_bytes = len(sio.dumps(model))
    diff = float(np.max(np.abs(onx.predict(X) - np.asarray(model.predict_proba(X))[:, 1])))
    session = onx.session()
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(X), args.repeat)
    timings: dict[str, list[float]] = {"native": [], "ort": [], "ort+encode": []}
    if served is not None:
        timings["served"] = []
    for i in rows:
        frame = X.iloc[[int(i)]]
        t0 = time.perf_counter()
        model.predict_proba(frame)
        t1 = time.perf_counter()
        feed = onx.inputs(frame)
        t2 = time.perf_counter()
        session.run(["probability"], feed)
        t3 = time.perf_counter()
        timings["native"].append(t1 - t0)
        timings["ort"].append(t3 - t2)
        timings["ort+encode"].append(t3 - t1)
        if served is not None:
            row = frame.astype(object).where(frame.notna(), None).to_dict("records")
            t4 = time.perf_counter()
            served.score(row)
            timings["served"].append(time.perf_counter() - t4)
    print(f"model: {description} + isotonic calibrator, 45 features, {len(X):,} rows")
    print(f"size: ONNX {onnx_bytes / 1e6:.2f} MB vs native (skops) {native_bytes / 1e6:.2f} MB")
    for name, seconds in timings.items():
        print(f"single row, {name}: {percentiles(seconds)} ({len(seconds):,} calls)")
    print(f"max |ONNX - native| on {len(X):,} rows: {diff:.2e}")
    if args.model == "ensemble":
        member_differences(onx, raw, model, X)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
