"""The champion as an ONNX model for edge deployment (``churnops export-onnx [--version N]``).

What converts (:func:`to_onnx`):

* **LightGBM** (``LGBMClassifier``), raw or wrapped by the training's calibrator
  (``CalibratedClassifierCV(FrozenEstimator(lgbm), method="isotonic"|"sigmoid")``): ``onnxmltools``
  converts the trees of the raw margin, which are rewritten as one float64 ``TreeEnsemble``
  (:func:`_float64_trees`); the calibrator (it reads the margin, LightGBM's ``decision_function``) is
  appended as ONNX operators in float64 — sigmoid ``1 / (1 + exp(a·s + b))``, isotonic the piecewise-linear interpolation of its
  thresholds with clipping, exactly as scikit-learn predicts them. The input is one float64 matrix of the
  model's features in their order; string (categorical) features enter as LightGBM's category codes
  (:func:`encode`; the categories are stored in the ONNX metadata ``categories``, a JSON object).
* **scikit-learn** estimators and pipelines that ``skl2onnx`` converts (e.g. the logistic-regression
  baseline: imputer, scaler and one-hot encoder included), raw or calibrated the same way; their input is
  one tensor per feature (float64 numbers, strings for categorical columns).

Anything else — a model family without a converter, a calibrator of another kind, several calibrated
folds — raises :class:`OnnxExportError` naming what cannot be converted. The output is one float64 tensor
``probability`` (N,): the churn probability, equal to ``predict_proba(X)[:, 1]`` of the native model.

:func:`export_version` converts a registered version, checks the ONNX scores against the native ones on
a sample of the training data's test split, and logs ``onnx/model.onnx`` (+ ``onnx/export.json``) as
artifacts of the version's MLflow run, tagging the version ``onnx_artifact``.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

OUTPUT = "probability"
ONNX_OPSET = 15  # the newest default-domain opset onnxmltools' LightGBM converter supports
ML_OPSET = 3
TREE_OPSET = 21  # default-domain opset beside ai.onnx.ml 5 (TreeEnsemble) for the rebuilt LightGBM graph


class OnnxExportError(RuntimeError):
    """The model (or part of it) cannot be converted to ONNX; the message names the part."""


@dataclass
class OnnxModel:
    """A converted model: the ONNX proto, its input layout and what it was converted from."""

    proto: onnx.ModelProto
    features: list[str]
    categories: dict[str, list[str]]  # LightGBM: category list per categorical feature (codes = positions)
    family: str
    calibration: str
    input_kind: str  # "matrix" (one matrix ``input``) or "columns" (one tensor per feature)
    input_dtype: Any = np.float64

    def inputs(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The onnxruntime feed for ``frame`` (which holds at least the model's features)."""
        if self.input_kind == "matrix":
            return {"input": encode(frame, self.features, self.categories).astype(self.input_dtype)}
        feed = {}
        for f in self.features:
            col = frame[f]
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                feed[f] = col.astype(object).where(col.notna(), "").astype(str).to_numpy().reshape(-1, 1)
            else:
                feed[f] = col.to_numpy(dtype=np.float64).reshape(-1, 1)
        return feed

    def session(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(
            self.proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def predict(self, frame: pd.DataFrame, session: Any | None = None) -> np.ndarray:
        """Churn probabilities of ``frame`` computed by onnxruntime."""
        [out] = (session or self.session()).run([OUTPUT], self.inputs(frame))
        return np.asarray(out, dtype=np.float64).reshape(-1)


def encode(frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """The input matrix of a ONNX model with a ``matrix`` input (float64; cast to the model's type): features in order, a categorical feature as the
    position of its value in LightGBM's category list (NaN when missing or unseen), as LightGBM does."""
    out = np.empty((len(frame), len(features)), dtype=np.float64)
    for i, f in enumerate(features):
        if f in categories:
            codes = {v: float(k) for k, v in enumerate(categories[f])}
            out[:, i] = frame[f].astype(object).map(codes).astype(float).to_numpy()
        else:
            out[:, i] = pd.to_numeric(frame[f], errors="coerce").to_numpy(dtype=np.float64)
    return out


def _lightgbm_categories(booster: Any, features: list[str]) -> dict[str, list[str]]:
    """LightGBM's category lists (``pandas_categorical``, in the order of the categorical columns)."""
    infos = booster.dump_model()["feature_infos"]
    categorical = [f for f in features if infos.get(f, {}).get("values")]
    lists = booster.pandas_categorical or []
    if len(lists) != len(categorical):
        raise OnnxExportError(
            f"LightGBM model: {len(categorical)} categorical feature(s) but {len(lists)} category list(s)"
        )
    return {f: [str(v) for v in values] for f, values in zip(categorical, lists, strict=True)}


def _split_calibration(model: Any) -> tuple[Any, Any | None, str]:
    """``(base model, calibrator or None, method)`` of a final model."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    if not isinstance(model, CalibratedClassifierCV):
        return model, None, "none"
    folds = model.calibrated_classifiers_
    if len(folds) != 1:
        raise OnnxExportError(
            f"a calibrated model with {len(folds)} folds (only a single calibrator converts)"
        )
    [fold] = folds
    base = fold.estimator
    base = base.estimator if isinstance(base, FrozenEstimator) else base
    [calibrator] = fold.calibrators
    return base, calibrator, str(model.method)


def _const(name: str, value: Any, dtype: Any = np.float64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _calibration_nodes(
    calibrator: Any, method: str, score: str, prefix: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """ONNX nodes mapping the float64 (N, 1) ``score`` to the calibrated probability; returns the name of
    the (N, 1) result."""
    n = lambda s: f"{prefix}{s}"  # noqa: E731
    if method == "sigmoid":
        a, b = float(calibrator.a_), float(calibrator.b_)
        inits = [_const(n("a"), a), _const(n("b"), b)]
        nodes = [
            helper.make_node("Mul", [score, n("a")], [n("as")]),
            helper.make_node("Add", [n("as"), n("b")], [n("asb")]),
            helper.make_node("Neg", [n("asb")], [n("neg")]),
            helper.make_node("Sigmoid", [n("neg")], [n("out")]),
        ]
        return nodes, inits, n("out")
    if method != "isotonic":
        raise OnnxExportError(f"calibrator {type(calibrator).__name__} (method {method!r}) has no ONNX form")
    xs = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
    ys = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    if getattr(calibrator, "out_of_bounds", "clip") != "clip" or not np.all(np.diff(xs) > 0):
        raise OnnxExportError("isotonic calibrator without clipping or with unsorted thresholds")
    if len(xs) == 1:
        inits = [_const(n("y"), ys[:1].reshape(1, 1)), _const(n("zero"), 0.0)]
        nodes = [
            helper.make_node("Mul", [score, n("zero")], [n("z")]),
            helper.make_node("Add", [n("z"), n("y")], [n("out")]),
        ]
        return _tie_break(calibrator, score, n, nodes, inits)
    inits = [
        _const(n("lo"), xs[0]),
        _const(n("hi"), xs[-1]),
        _const(n("inner"), xs[1:-1].reshape(1, -1)),
        _const(n("xs"), xs),
        _const(n("ys"), ys),
        _const(n("one"), 1, np.int64),
        _const(n("axis1"), [1], np.int64),
    ]
    nodes = [
        helper.make_node("Clip", [score, n("lo"), n("hi")], [n("t")]),
        helper.make_node("GreaterOrEqual", [n("t"), n("inner")], [n("ge")]),
        helper.make_node("Cast", [n("ge")], [n("ge64")], to=TensorProto.INT64),
        helper.make_node("ReduceSum", [n("ge64"), n("axis1")], [n("j")], keepdims=1),
        helper.make_node("Add", [n("j"), n("one")], [n("j1")]),
        helper.make_node("Gather", [n("xs"), n("j")], [n("x0")], axis=0),
        helper.make_node("Gather", [n("xs"), n("j1")], [n("x1")], axis=0),
        helper.make_node("Gather", [n("ys"), n("j")], [n("y0")], axis=0),
        helper.make_node("Gather", [n("ys"), n("j1")], [n("y1")], axis=0),
        helper.make_node("Sub", [n("y1"), n("y0")], [n("dy")]),
        helper.make_node("Sub", [n("x1"), n("x0")], [n("dx")]),
        helper.make_node("Div", [n("dy"), n("dx")], [n("slope")]),
        helper.make_node("Sub", [n("t"), n("x0")], [n("dt")]),
        helper.make_node("Mul", [n("slope"), n("dt")], [n("rise")]),
        helper.make_node("Add", [n("rise"), n("y0")], [n("out")]),
    ]
    return _tie_break(calibrator, score, n, nodes, inits)


def _tie_break(
    calibrator: Any, score: str, n: Any, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """The isotonic graph as it is (``out``), or, for the training's :class:`RankedIsotonic`, its plateaus
    broken by the raw score: ``(1 - w) * out + w * sigmoid((score - center) / scale)``."""
    from churn_assets.modeling.evaluation import TIE_BREAK_WEIGHT, RankedIsotonic

    if not isinstance(calibrator, RankedIsotonic):
        return nodes, inits, n("out")
    inits = [
        *inits,
        _const(n("center"), calibrator.center_),
        _const(n("scale"), calibrator.scale_),
        _const(n("w"), TIE_BREAK_WEIGHT),
        _const(n("1mw"), 1.0 - TIE_BREAK_WEIGHT),
    ]
    nodes = [
        *nodes,
        helper.make_node("Sub", [score, n("center")], [n("centred")]),
        helper.make_node("Div", [n("centred"), n("scale")], [n("zc")]),
        helper.make_node("Sigmoid", [n("zc")], [n("rank")]),
        helper.make_node("Mul", [n("rank"), n("w")], [n("wrank")]),
        helper.make_node("Mul", [n("out"), n("1mw")], [n("wiso")]),
        helper.make_node("Add", [n("wiso"), n("wrank")], [n("ranked")]),
    ]
    return nodes, inits, n("ranked")


def _finish(
    proto: onnx.ModelProto, score: str, calibrator: Any | None, method: str, sigmoid: float | None
) -> onnx.ModelProto:
    """Append ``score (N, 1) -> float64 -> calibrator, or the logistic link sigmoid(k·score) when
    ``sigmoid`` is k, or nothing -> (N,) probability`` and make it the graph's only output."""
    g = proto.graph
    p = "onnx_export_"
    default = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if default:
        default[0].version = max(default[0].version, ONNX_OPSET)
    else:
        proto.opset_import.append(helper.make_opsetid("", ONNX_OPSET))
    g.initializer.append(_const(f"{p}axis", [1], np.int64))
    nodes = [helper.make_node("Cast", [score], [f"{p}s64"], to=TensorProto.DOUBLE)]
    score = f"{p}s64"
    if calibrator is not None:
        cal_nodes, inits, score = _calibration_nodes(calibrator, method, score, f"{p}cal_")
        nodes += cal_nodes
        g.initializer.extend(inits)
    elif sigmoid is not None:
        g.initializer.append(_const(f"{p}k", sigmoid))
        nodes += [
            helper.make_node("Mul", [score, f"{p}k"], [f"{p}ks"]),
            helper.make_node("Sigmoid", [f"{p}ks"], [f"{p}prob"]),
        ]
        score = f"{p}prob"
    nodes.append(helper.make_node("Squeeze", [score, f"{p}axis"], [OUTPUT]))
    g.node.extend(nodes)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None]))
    onnx.checker.check_model(proto)
    return proto


def _column(proto: onnx.ModelProto, proba: str) -> str:
    """Append ``proba[:, 1:2]`` (the positive class) to the graph; returns its name."""
    p = "onnx_export_col_"
    proto.graph.initializer.extend(
        [
            _const(f"{p}start", [1], np.int64),
            _const(f"{p}end", [2], np.int64),
            _const(f"{p}axis", [1], np.int64),
        ]
    )
    proto.graph.node.append(
        helper.make_node("Slice", [proba, f"{p}start", f"{p}end", f"{p}axis"], [f"{p}out"])
    )
    return f"{p}out"


_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}


def _exact(values_by_tree: list[dict[np.float32, float]], tree: int, value: float) -> float:
    """LightGBM's float64 value of a float32 attribute of ``tree`` (the first one rounding to it)."""
    return values_by_tree[tree].get(np.float32(value), float(value))


def _float64_trees(proto: onnx.ModelProto, booster: Any | None) -> str:
    """Replace onnxmltools' ``TreeEnsembleRegressor`` (float32 thresholds, leaf weights and sums) by one
    ai.onnx.ml opset-5 ``TreeEnsemble`` in float64 with the same structure: thresholds and leaf values
    restored to LightGBM's float64 values (matched within each tree by their float32 rounding), a float64
    input and sum — each row takes the branches LightGBM takes and gets its margin to float64 precision.
    ``booster`` None: an XGBoost ``TreeEnsembleClassifier`` (float32 values kept as they are: XGBoost's
    own); its post-transform is dropped. Returns the name of the (N, 1) float64 margin."""
    [old] = [n for n in proto.graph.node if n.op_type in ("TreeEnsembleRegressor", "TreeEnsembleClassifier")]
    a = {x.name: helper.get_attribute_value(x) for x in old.attribute}
    if old.op_type == "TreeEnsembleClassifier":
        if set(a.get("class_ids", [])) - {0}:
            raise OnnxExportError("XGBoost model with more than one output class: not converted")
        a.update({f"target_{k}": a[f"class_{k}"] for k in ("treeids", "nodeids", "weights")})
        a.pop("base_values", None)  # the caller adds it (:func:`_tree_base`)
    if a.get("base_values") and any(a["base_values"]):
        raise OnnxExportError("tree model with a base value: not converted")
    thresholds: list[dict[np.float32, float]] = []
    leaves: list[dict[np.float32, float]] = []
    if booster is None:
        trees = len(set(a["nodes_treeids"]))
        thresholds, leaves = [{} for _ in range(trees)], [{} for _ in range(trees)]

    def walk(node: dict[str, Any], th: dict[np.float32, float], lv: dict[np.float32, float]) -> None:
        if "leaf_value" in node:
            lv.setdefault(np.float32(node["leaf_value"]), float(node["leaf_value"]))
            return
        if node["decision_type"] != "==":
            th.setdefault(np.float32(float(node["threshold"])), float(node["threshold"]))
        walk(node["left_child"], th, lv)
        walk(node["right_child"], th, lv)

    for tree in booster.dump_model()["tree_info"] if booster is not None else []:
        th: dict[np.float32, float] = {}
        lv: dict[np.float32, float] = {}
        walk(tree["tree_structure"], th, lv)
        thresholds.append(th)
        leaves.append(lv)
    modes = [m.decode() if isinstance(m, bytes) else m for m in a["nodes_modes"]]
    keys = list(zip(a["nodes_treeids"], a["nodes_nodeids"], strict=True))
    weight: dict[tuple[int, int], float] = {}
    for t, n, w in zip(a["target_treeids"], a["target_nodeids"], a["target_weights"], strict=True):
        weight[(t, n)] = weight.get((t, n), 0.0) + _exact(leaves, t, w)
    at = {key: i for i, key in enumerate(keys)}
    # onnxmltools writes a categorical split on several categories as a chain of BRANCH_EQ nodes sharing
    # one true branch; TreeEnsemble allows no shared node: each chain becomes one BRANCH_MEMBER node.
    members: dict[tuple[int, int], tuple[list[float], int]] = {}  # head -> (categories, last link)
    absorbed: set[tuple[int, int]] = set()
    for i, (key, mode) in enumerate(zip(keys, modes, strict=True)):
        if mode != "BRANCH_EQ" or key in absorbed:
            continue
        values, last = [float(a["nodes_values"][i])], i
        while True:
            nxt = at.get((key[0], a["nodes_falsenodeids"][last]))
            if (
                nxt is None
                or modes[nxt] != "BRANCH_EQ"
                or a["nodes_featureids"][nxt] != a["nodes_featureids"][i]
                or a["nodes_truenodeids"][nxt] != a["nodes_truenodeids"][i]
            ):
                break
            if a["nodes_missing_value_tracks_true"][nxt] != a["nodes_missing_value_tracks_true"][i]:
                raise OnnxExportError("LightGBM categorical split with mixed missing-value branches")
            values.append(float(a["nodes_values"][nxt]))
            absorbed.add(keys[nxt])
            last = nxt
        if len(values) > 1:
            members[key] = (values, last)
    split_index: dict[tuple[int, int], int] = {}
    leaf_index: dict[tuple[int, int], int] = {}
    for key, mode in zip(keys, modes, strict=True):
        if mode == "LEAF":
            leaf_index[key] = len(leaf_index)
        elif key not in absorbed:
            split_index[key] = len(split_index)
    leaf_weights = [weight.get(k, 0.0) for k in leaf_index]
    out: dict[str, list[Any]] = {k: [] for k in ("feat", "split", "mode", "t", "tl", "f", "fl", "miss")}
    membership: list[float] = []

    def child(t: int, n: int) -> tuple[int, int]:
        return (leaf_index[(t, n)], 1) if (t, n) in leaf_index else (split_index[(t, n)], 0)

    for i, (key, mode) in enumerate(zip(keys, modes, strict=True)):
        if mode == "LEAF" or key in absorbed:
            continue
        if mode not in _MODES:
            raise OnnxExportError(f"tree split mode {mode}: not converted")
        t = key[0]
        value = float(a["nodes_values"][i])
        true_id, true_leaf = child(t, a["nodes_truenodeids"][i])
        last = members[key][1] if key in members else i
        false_id, false_leaf = child(t, a["nodes_falsenodeids"][last])
        out["feat"].append(a["nodes_featureids"][i])
        if key in members:
            out["split"].append(0.0)
            out["mode"].append(6)  # BRANCH_MEMBER
            membership += [*members[key][0], float("nan")]
        else:
            out["split"].append(_exact(thresholds, t, value) if _MODES[mode] < 4 else value)
            out["mode"].append(_MODES[mode])
        out["t"] += [true_id]
        out["tl"] += [true_leaf]
        out["f"] += [false_id]
        out["fl"] += [false_leaf]
        out["miss"].append(a["nodes_missing_value_tracks_true"][i])
    roots = []
    for t in sorted(set(a["nodes_treeids"])):
        if (t, 0) in split_index:
            roots.append(split_index[(t, 0)])
            continue
        roots.append(len(out["feat"]))  # a single-leaf tree: a split whose two branches reach that leaf
        leaf = leaf_index[(t, 0)]
        for k, v in (
            ("feat", 0),
            ("split", 0.0),
            ("mode", 0),
            ("t", leaf),
            ("tl", 1),
            ("f", leaf),
            ("fl", 1),
        ):
            out[k].append(v)
        out["miss"].append(1)
    margin = "onnx_export_margin"
    node = helper.make_node(
        "TreeEnsemble",
        [proto.graph.input[0].name],
        [margin],
        domain="ai.onnx.ml",
        nodes_featureids=out["feat"],
        nodes_splits=numpy_helper.from_array(np.asarray(out["split"], np.float64)),
        nodes_modes=numpy_helper.from_array(np.asarray(out["mode"], np.uint8)),
        nodes_truenodeids=out["t"],
        nodes_trueleafs=out["tl"],
        nodes_falsenodeids=out["f"],
        nodes_falseleafs=out["fl"],
        nodes_missing_value_tracks_true=out["miss"],
        leaf_targetids=[0] * len(leaf_weights),
        leaf_weights=numpy_helper.from_array(np.asarray(leaf_weights, np.float64)),
        tree_roots=roots,
        n_targets=1,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE
        **(
            {"membership_values": numpy_helper.from_array(np.asarray(membership, np.float64))}
            if membership
            else {}
        ),
    )
    del proto.graph.node[:]
    del proto.graph.initializer[:]
    proto.graph.node.append(node)
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", TREE_OPSET), helper.make_opsetid("ai.onnx.ml", 5)])
    proto.ir_version = max(proto.ir_version, 10)
    return margin


def _lightgbm_margin_booster(booster: Any) -> tuple[Any, float]:
    """The booster re-labelled as a regression (its trees untouched: ONNX then outputs the raw margin, which
    both the calibrator and the logistic link take) and the link's sigmoid parameter."""
    import lightgbm as lgb

    text = booster.model_to_string()
    found = re.search(r"^objective=binary(?: sigmoid:([0-9.eE+-]+))?$", text, flags=re.MULTILINE)
    if found is None:
        raise OnnxExportError("LightGBM model: only the binary objective converts")
    margin = lgb.Booster(model_str=text[: found.start()] + "objective=regression" + text[found.end() :])
    margin.params["objective"] = "regression"  # what onnxmltools reads first (the parameters section)
    return margin, float(found.group(1) or 1.0)


def _last(model: Any) -> Any:
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _family(model: Any) -> str:
    return type(_last(model)).__name__


def to_onnx(model: Any, features: list[str], sample: pd.DataFrame) -> OnnxModel:
    """Convert a final model (see the module docstring); ``sample``: rows of the features, used for the
    input types of scikit-learn models."""
    from churn_assets.modeling.ensemble import BlendEnsemble

    base, calibrator, method = _split_calibration(model)
    if isinstance(base, BlendEnsemble):
        return _ensemble_to_onnx(base, calibrator, method, features, sample)
    family = _family(base)
    try:
        import lightgbm as lgb

        is_lgbm = isinstance(base, lgb.LGBMClassifier)
    except ImportError:  # pragma: no cover - lightgbm is a dependency
        is_lgbm = False
    if is_lgbm:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = base.booster_
        if list(booster.feature_name()) != list(features):
            raise OnnxExportError("LightGBM model: its feature names differ from the version's features")
        categories = _lightgbm_categories(booster, features)
        margin, k = _lightgbm_margin_booster(booster)
        proto = convert_lightgbm(
            margin,
            initial_types=[("input", FloatTensorType([None, len(features)]))],
            target_opset=ONNX_OPSET,
        )
        score = _float64_trees(proto, margin)
        return OnnxModel(
            _finish(proto, score, calibrator, method, sigmoid=k),
            list(features),
            categories,
            "LGBMClassifier",
            method,
            "matrix",
            np.float64,
        )
    if calibrator is not None:
        raise OnnxExportError(
            f"calibrated {family}: only a calibrated LightGBM converts (the calibrator of a scikit-learn model "
            "reads its decision function, which the converted graph does not output)"
        )
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    def is_text(f: str) -> bool:
        return isinstance(sample[f].dtype, pd.CategoricalDtype) or sample[f].dtype == object

    per_column = isinstance(base, Pipeline) and isinstance(base.steps[0][1], ColumnTransformer)
    if per_column:
        types: list[tuple[str, Any]] = [
            (f, StringTensorType([None, 1]) if is_text(f) else DoubleTensorType([None, 1])) for f in features
        ]
    else:
        text = [f for f in features if is_text(f)]
        if text:
            raise OnnxExportError(
                f"model family {family} reads categorical column(s) {', '.join(text[:5])} natively; "
                "its ONNX converter takes numbers only"
            )
        types = [("input", DoubleTensorType([None, len(features)]))]
    try:
        proto = convert_sklearn(
            base,
            initial_types=types,
            options={id(_last(base)): {"zipmap": False}},
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises many kinds (MissingShapeCalculator, RuntimeError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise OnnxExportError(
            f"model family {family} cannot be converted to ONNX: {type(exc).__name__}: {reason}"
        ) from exc
    proba = next(o.name for o in proto.graph.output if "prob" in o.name)
    return OnnxModel(
        _finish(proto, _column(proto, proba), None, method, sigmoid=None),
        list(features),
        {},
        family,
        method,
        "columns" if per_column else "matrix",
        np.float64,
    )


def metadata(onx: OnnxModel) -> dict[str, str]:
    """What an edge runtime needs besides the graph (also stored in the ONNX ``metadata_props``)."""
    return {
        "features": json.dumps(onx.features),
        "categories": json.dumps(onx.categories),
        "family": onx.family,
        "calibration": onx.calibration,
        "input": onx.input_kind,
        "output": OUTPUT,
    }


def export_version(settings: Any, version: str | None = None, check_rows: int = 10_000) -> dict[str, Any]:
    """Convert registered version ``version`` of the production model (None = the champion), compare ONNX
    with native scores on up to ``check_rows`` rows of the training set's test split, log the ONNX file as
    an artifact of the version's run and tag the version; returns what was done."""
    from churn_assets.modeling.registry import CHAMPION, ModelRegistry, RegistryError
    from churn_assets.modeling.tracking import load_model
    from churn_assets.modeling.workdir import TrainingWorkdir

    registry = ModelRegistry(settings)
    if version is None:
        mv = registry.version_by_alias(CHAMPION)
        if mv is None:
            raise RegistryError(f"no champion of {registry.name!r} to export: run `churnops train` first")
    else:
        found = [v for v in registry.versions() if str(v.version) == str(version)]
        if not found:
            raise RegistryError(f"{registry.name!r} has no version {version}")
        mv = found[0]
    features = json.loads(mv.tags.get("features", "[]"))
    model = load_model(str(mv.source), mv.tags.get("flavor", "sklearn"))
    splits, _meta = TrainingWorkdir.of(settings).load_splits(("test",), with_train_features=False)
    sample = splits.X_test[features].head(check_rows)
    onx = to_onnx(model, features, sample)
    onx.proto.metadata_props.extend(
        onnx.StringStringEntryProto(key=k, value=v) for k, v in metadata(onx).items()
    )
    native = np.asarray(model.predict_proba(sample))[:, 1]
    max_diff = float(np.max(np.abs(onx.predict(sample) - native))) if len(sample) else 0.0
    with tempfile.TemporaryDirectory(prefix="churnops-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.proto.SerializeToString())
        size = path.stat().st_size
        info = {
            "model_name": registry.name,
            "version": str(mv.version),
            "semver": mv.tags.get("semver"),
            **metadata(onx),
            "features": onx.features,
            "categories": onx.categories,
            "onnx_bytes": size,
            "checked_rows": len(sample),
            "max_abs_diff_vs_native": max_diff,
        }
        (Path(tmp) / "export.json").write_text(json.dumps(info, indent=2))
        registry.client.log_artifact(mv.run_id, str(path), "onnx")
        registry.client.log_artifact(mv.run_id, str(Path(tmp) / "export.json"), "onnx")
    uri = f"runs:/{mv.run_id}/onnx/model.onnx"
    registry.client.set_model_version_tag(registry.name, str(mv.version), "onnx_artifact", uri)
    return {**info, "artifact_uri": uri}


# -- ensembles -------------------------------------------------------------------------------------------


def _tree_base(proto: onnx.ModelProto) -> float:
    """The margin an onnxmltools ``TreeEnsembleClassifier`` adds to its trees' sum (``base_values``)."""
    [node] = [n for n in proto.graph.node if n.op_type == "TreeEnsembleClassifier"]
    base = [helper.get_attribute_value(x) for x in node.attribute if x.name == "base_values"]
    values = list(base[0]) if base else []
    if len(set(values)) > 1:
        raise OnnxExportError(f"XGBoost model with several base values {values}: not converted")
    return float(values[0]) if values else 0.0


@dataclass
class _Member:
    """One converted ensemble member: its graph (names prefixed), the input it reads — ``matrix`` (one
    float64 matrix ``{prefix}input`` of features with category codes ``codes``; ``float32`` rounds it as
    XGBoost does) or ``columns`` (one tensor ``{prefix}{feature}`` per feature) — and the name of its
    (N, 1) float64 probability in the graph."""

    proto: onnx.ModelProto
    kind: str
    probability: str
    codes: dict[str, list[str]]
    float32: bool = False


def _link(
    prefix: str, margin: str, k: float, shift: float = 0.0
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """``sigmoid(k * (margin + shift))`` as nodes; returns (nodes, initializers, output name)."""
    nodes = [
        helper.make_node("Add", [margin, f"{prefix}shift"], [f"{prefix}shifted"]),
        helper.make_node("Mul", [f"{prefix}shifted", f"{prefix}k"], [f"{prefix}ks"]),
        helper.make_node("Sigmoid", [f"{prefix}ks"], [f"{prefix}p"]),
    ]
    return nodes, [_const(f"{prefix}shift", shift), _const(f"{prefix}k", k)], f"{prefix}p"


def _ensemble_member(
    name: str, model: Any, features: list[str], text: list[str], categories: dict[str, list[Any]], prefix: str
) -> _Member:
    """Convert one ensemble member (its graph renamed with ``prefix``); :class:`OnnxExportError` naming the
    member when its family has no converter here."""
    import lightgbm as lgb
    from onnx.compose import add_prefix

    if isinstance(model, lgb.LGBMClassifier):
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = model.booster_
        if list(booster.feature_name()) != list(features):
            raise OnnxExportError(
                f"ensemble member {name!r}: LightGBM feature names differ from the version's"
            )
        codes = _lightgbm_categories(booster, features)
        margin_booster, k = _lightgbm_margin_booster(booster)
        proto = convert_lightgbm(
            margin_booster,
            initial_types=[("input", FloatTensorType([None, len(features)]))],
            target_opset=ONNX_OPSET,
        )
        margin = _float64_trees(proto, margin_booster)
        proto = add_prefix(proto, prefix)
        nodes, inits, out = _link(prefix, prefix + margin, k)
        proto.graph.node.extend(nodes)
        proto.graph.initializer.extend(inits)
        return _Member(proto, "matrix", out, codes)
    if type(model).__module__.startswith("xgboost"):
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        if getattr(model, "objective", None) not in ("binary:logistic", None):
            raise OnnxExportError(
                f"ensemble member {name!r}: only XGBoost's binary:logistic objective converts"
            )
        if getattr(model, "best_iteration", None) is not None:
            raise OnnxExportError(
                f"ensemble member {name!r}: an early-stopped XGBoost model is not converted"
            )
        booster = model.get_booster().copy()
        if list(booster.feature_names or []) != list(features):
            raise OnnxExportError(
                f"ensemble member {name!r}: XGBoost feature names differ from the version's"
            )
        kinds = list(booster.feature_types or [])
        codes = {}
        for f, kind in zip(features, kinds, strict=False):
            if kind == "c":
                if f not in categories:
                    raise OnnxExportError(f"ensemble member {name!r}: no stored categories of {f}")
                codes[f] = [str(v) for v in categories[f]]
        booster.feature_names = [f"f{i}" for i in range(len(features))]  # what onnxmltools reads
        try:
            proto = convert_xgboost(
                booster,
                initial_types=[("input", FloatTensorType([None, len(features)]))],
                target_opset=ONNX_OPSET,
            )
        except Exception as exc:  # onnxmltools raises RuntimeError, ValueError, ...
            raise OnnxExportError(
                f"ensemble member {name!r} (XGBoost) cannot be converted to ONNX: {type(exc).__name__}: {exc}"
            ) from exc
        shift = _tree_base(proto)
        margin = _float64_trees(proto, None)
        proto = add_prefix(proto, prefix)
        nodes, inits, out = _link(prefix, prefix + margin, 1.0, shift)
        proto.graph.node.extend(nodes)
        proto.graph.initializer.extend(inits)
        return _Member(proto, "matrix", out, codes, float32=True)
    return _linear_member(name, model, features, text, prefix)


def _linear_member(name: str, model: Any, features: list[str], text: list[str], prefix: str) -> _Member:
    """``Pipeline(ColumnTransformer(numeric: imputer [+ StandardScaler]; categorical: imputer + one-hot
    encoder ignoring unknowns), LogisticRegression)`` as float64 ONNX operators (imputation with the fitted
    statistics, ``(x - mean) / scale``, one-hot by the encoder's categories, ``sigmoid(x @ coef.T + b)``),
    reading one tensor per feature (missing category = ""). Anything else: :class:`OnnxExportError` naming
    the member. (skl2onnx's graph of this pipeline does not run: no converter for a NaN-missing imputer of
    strings, and onnxruntime has no float64 ``Imputer``.)"""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def refuse(what: str) -> OnnxExportError:
        return OnnxExportError(
            f"ensemble member {name!r} (model family {_family(model)}) cannot be converted to ONNX: {what}; "
            "LightGBM, XGBoost and logistic regression on imputed, scaled and one-hot columns convert"
        )

    if not (isinstance(model, Pipeline) and len(model.steps) == 2):
        raise refuse("not a (column transformer, logistic regression) pipeline")
    prep, final = model.steps[0][1], model.steps[1][1]
    if not isinstance(prep, ColumnTransformer) or not isinstance(final, LogisticRegression):
        raise refuse("not a (column transformer, logistic regression) pipeline")
    if final.coef_.shape[0] != 1 or list(final.classes_) != [0, 1]:
        raise refuse("not a binary logistic regression")
    n = lambda s: f"{prefix}{s}"  # noqa: E731
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    blocks: list[str] = []
    for b, (_, transformer, columns) in enumerate(prep.transformers_):
        if (isinstance(transformer, str) and transformer == "drop") or len(columns) == 0:
            continue
        steps = [s for _, s in getattr(transformer, "steps", [])]
        if not steps or not isinstance(steps[0], SimpleImputer) or steps[0].add_indicator:
            raise refuse(f"column block {b} does not start with a simple imputer")
        imputer = steps[0]
        if all(c in text for c in columns):
            if len(steps) != 2 or not isinstance(steps[1], OneHotEncoder):
                raise refuse(f"categorical block {b} is not imputer + one-hot encoder")
            encoder = steps[1]
            if encoder.drop is not None or encoder.handle_unknown != "ignore" or encoder._infrequent_enabled:
                raise refuse(
                    f"one-hot encoder of block {b} drops, errors on unknowns or groups infrequent values"
                )
            for k, c in enumerate(columns):
                cats = [str(v) for v in encoder.categories_[k]]
                fill = str(imputer.statistics_[k])
                keys = [*cats, ""] if fill in cats else cats
                values = [*range(len(cats)), cats.index(fill)] if fill in cats else list(range(len(cats)))
                inits.append(_const(n(f"range_{c}"), np.arange(len(cats)).reshape(1, -1), np.int64))
                nodes += [
                    helper.make_node(
                        "LabelEncoder",
                        [n(c)],
                        [n(f"idx_{c}")],
                        domain="ai.onnx.ml",
                        keys_strings=keys,
                        values_int64s=values,
                        default_int64=-1,
                    ),
                    helper.make_node("Equal", [n(f"idx_{c}"), n(f"range_{c}")], [n(f"hot_{c}")]),
                    helper.make_node("Cast", [n(f"hot_{c}")], [n(f"onehot_{c}")], to=TensorProto.DOUBLE),
                ]
                blocks.append(n(f"onehot_{c}"))
        elif not any(c in text for c in columns):
            stats = np.asarray(imputer.statistics_, dtype=np.float64)
            if imputer.strategy not in ("mean", "median", "constant") or np.isnan(stats).any():
                raise refuse(f"numeric imputer of block {b} ({imputer.strategy}) has no ONNX form here")
            x = n(f"num{b}")
            nodes += [
                helper.make_node("Concat", [n(c) for c in columns], [x], axis=1),
                helper.make_node("IsNaN", [x], [n(f"nan{b}")]),
                helper.make_node("Where", [n(f"nan{b}"), n(f"fill{b}"), x], [n(f"imp{b}")]),
            ]
            inits.append(_const(n(f"fill{b}"), stats.reshape(1, -1)))
            x = n(f"imp{b}")
            for step in steps[1:]:
                if not isinstance(step, StandardScaler):
                    raise refuse(f"step {type(step).__name__} of block {b} has no ONNX form here")
                if step.with_mean:
                    inits.append(_const(n(f"mean{b}"), step.mean_.reshape(1, -1)))
                    nodes.append(helper.make_node("Sub", [x, n(f"mean{b}")], [n(f"centred{b}")]))
                    x = n(f"centred{b}")
                if step.with_std:
                    inits.append(_const(n(f"scale{b}"), step.scale_.reshape(1, -1)))
                    nodes.append(helper.make_node("Div", [x, n(f"scale{b}")], [n(f"scaled{b}")]))
                    x = n(f"scaled{b}")
            blocks.append(x)
        else:
            raise refuse(f"column block {b} mixes numeric and categorical columns")
    inits += [
        _const(n("coef"), final.coef_.T),
        _const(n("intercept"), final.intercept_.reshape(1, 1)),
    ]
    nodes += [
        helper.make_node("Concat", blocks, [n("x")], axis=1),
        helper.make_node("MatMul", [n("x"), n("coef")], [n("xw")]),
        helper.make_node("Add", [n("xw"), n("intercept")], [n("logit")]),
        helper.make_node("Sigmoid", [n("logit")], [n("p")]),
    ]
    graph = helper.make_graph(nodes, f"{prefix}linear", [], [], initializer=inits)
    return _Member(helper.make_model(graph), "columns", n("p"), {})


def _ensemble_to_onnx(
    blend: Any, calibrator: Any | None, method: str, features: list[str], sample: pd.DataFrame
) -> OnnxModel:
    """ONE graph of an ensemble: per-feature inputs (float64 numbers, strings for categorical columns;
    empty string = missing), each categorical value aligned to XGBoost's training categories (an unseen
    value is missing for every member, as in ``BlendEnsemble.member_proba``), every member converted and
    fed (tree members a float64 matrix of their category codes), ``sum(w_i * p_i)`` clipped to [0, 1],
    then the calibrator."""
    from churn_assets.modeling.categories import training_categories

    text = [
        f for f in features if isinstance(sample[f].dtype, pd.CategoricalDtype) or sample[f].dtype == object
    ]
    categories = training_categories(blend)
    aligned = {f: [str(v) for v in categories[f]] for f in text if f in categories}
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    column: dict[str, str] = {}  # feature -> the graph tensor members read (text: aligned strings)
    for f in features:
        if f in aligned:
            column[f] = f"ens_aligned_{f}"
            nodes.append(
                helper.make_node(
                    "LabelEncoder",
                    [f],
                    [column[f]],
                    domain="ai.onnx.ml",
                    keys_strings=aligned[f],
                    values_strings=aligned[f],
                    default_string="",
                )
            )
        else:
            column[f] = f
    members = [
        _ensemble_member(n, m, features, text, categories, f"m{i}_")
        for i, (n, m) in enumerate(zip(blend.names, blend.members, strict=True))
    ]
    graph_nodes: list[onnx.NodeProto] = []
    for i, member in enumerate(members):
        p = f"m{i}_"
        if member.kind == "matrix":
            parts = []
            for f in features:
                if f in member.codes:
                    nodes += [
                        helper.make_node(
                            "LabelEncoder",
                            [column[f]],
                            [f"{p}code32_{f}"],
                            domain="ai.onnx.ml",
                            keys_strings=member.codes[f],
                            values_floats=[float(k) for k in range(len(member.codes[f]))],
                            default_float=float("nan"),
                        ),
                        helper.make_node("Cast", [f"{p}code32_{f}"], [f"{p}code_{f}"], to=TensorProto.DOUBLE),
                    ]
                    parts.append(f"{p}code_{f}")
                elif f in text:
                    raise OnnxExportError(f"ensemble member {blend.names[i]!r}: categorical {f} has no codes")
                else:
                    parts.append(column[f])
            matrix = f"{p}matrix" if member.float32 else f"{p}input"
            nodes.append(helper.make_node("Concat", parts, [matrix], axis=1))
            if member.float32:  # XGBoost compares float32 features with its float32 thresholds
                nodes += [
                    helper.make_node("Cast", [matrix], [f"{p}matrix32"], to=TensorProto.FLOAT),
                    helper.make_node("Cast", [f"{p}matrix32"], [f"{p}input"], to=TensorProto.DOUBLE),
                ]
        else:
            nodes += [helper.make_node("Identity", [column[f]], [f"{p}{f}"]) for f in features]
        graph_nodes += list(member.proto.graph.node)
        inits += list(member.proto.graph.initializer)
    weighted = []
    for i, (member, w) in enumerate(zip(members, blend.weights, strict=True)):
        inits.append(_const(f"ens_w{i}", float(w)))
        graph_nodes.append(helper.make_node("Mul", [member.probability, f"ens_w{i}"], [f"ens_wp{i}"]))
        weighted.append(f"ens_wp{i}")
    inits += [_const("ens_zero", 0.0), _const("ens_one", 1.0), _const("ens_axis", [1], np.int64)]
    graph_nodes += [
        helper.make_node("Sum", weighted, ["ens_sum"]),
        helper.make_node("Clip", ["ens_sum", "ens_zero", "ens_one"], ["ens_blend"]),
    ]
    score = "ens_blend"
    if calibrator is not None:
        cal_nodes, cal_inits, score = _calibration_nodes(calibrator, method, score, "ens_cal_")
        graph_nodes += cal_nodes
        inits += cal_inits
    graph_nodes.append(helper.make_node("Squeeze", [score, "ens_axis"], [OUTPUT]))
    inputs = [
        helper.make_tensor_value_info(f, TensorProto.STRING if f in text else TensorProto.DOUBLE, [None, 1])
        for f in features
    ]
    graph = helper.make_graph(
        nodes + graph_nodes,
        "churn_ensemble",
        inputs,
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", TREE_OPSET), helper.make_opsetid("ai.onnx.ml", 5)],
        producer_name="churnops",
    )
    proto.ir_version = 10
    onnx.checker.check_model(proto)
    family = (
        "BlendEnsemble("
        + ", ".join(
            f"{n}={_family(m)}:{w:g}"
            for n, m, w in zip(blend.names, blend.members, blend.weights, strict=True)
        )
        + ")"
    )
    return OnnxModel(proto, list(features), aligned, family, method, "columns", np.float64)
