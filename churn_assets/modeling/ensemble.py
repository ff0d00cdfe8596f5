"""The ENSEMBLE candidate family: a weighted blend of the best candidates, weights chosen on validation.

:func:`choose_blend` takes the validation probabilities the candidates already computed, keeps the
``max_members`` candidates with the highest validation AUC and chooses between two weightings of
``sum(w_i * p_i)`` on validation only (the test split is never looked at):

* **equal** weights — nothing is fitted, so the blend's validation AUC is an honest estimate;
* **grid** weights — the point of the weight simplex (steps of ``WEIGHT_STEP``) with the highest
  validation AUC. Weights chosen on the rows they are scored on look better than they are, so the grid
  rule is also scored out-of-fold: the validation split is cut into ``FOLDS`` stratified folds, the
  weights chosen on four score the fifth.

The grid weights are used only when their out-of-fold AUC beats the equal weights' AUC (on a small
validation split the fitted weights mostly fit noise: the "forecast combination puzzle"). The blend's
validation AUC — what the candidate stage compares with the single candidates, whose own validation AUC
was tuned on validation too (early stopping, Optuna) — is the equal weights' AUC, or the grid weights'
in-sample AUC; a grid blend is selectable only when its out-of-fold AUC is at most ``OOF_TOLERANCE``
below the best single candidate's validation AUC.

:class:`BlendEnsemble` is the fitted model: scikit-learn compatible (``predict_proba``), holding its
members, their weights and names; serving scores it member by member
(``churn_assets.serving.scoring``). A grid blend that puts all its weight on one candidate is no
ensemble: :func:`choose_blend` then returns None.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from churn_assets.modeling.categories import align_categories, training_categories

ENSEMBLE = "ensemble"
WEIGHT_STEP = 0.1
FOLDS = 5
OOF_TOLERANCE = 0.005  # selectable only if its out-of-fold val AUC is at most this below the best single


class BlendEnsemble(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A weighted average of fitted binary classifiers' ``predict_proba[:, 1]`` (weights sum to 1)."""

    def __init__(self, names: Sequence[str], members: Sequence[Any], weights: Sequence[float]) -> None:
        self.names = list(names)
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        if not (len(self.names) == len(self.members) == len(self.weights)) or len(self.names) < 2:
            raise ValueError("an ensemble needs two or more members, each with a name and a weight")
        if any(w < 0 for w in self.weights) or not np.isclose(sum(self.weights), 1.0):
            raise ValueError(f"ensemble weights must be >= 0 and sum to 1, got {self.weights}")
        self.classes_ = np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: Any, y: Any) -> BlendEnsemble:
        """Members are fitted before they are blended; fitting the blend again is refused."""
        raise NotImplementedError("BlendEnsemble blends fitted members; build a new one to refit")

    def member_proba(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each member's ``predict_proba[:, 1]`` on ``X``."""
        # Categories XGBoost members never saw are missing for every member (as in the served ensemble).
        X = align_categories(training_categories(self), X)
        return {
            n: np.asarray(m.predict_proba(X))[:, 1] for n, m in zip(self.names, self.members, strict=True)
        }

    def blend(self, member_scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities from its members' probabilities."""
        return np.sum(
            [w * np.asarray(member_scores[n]) for n, w in zip(self.names, self.weights, strict=True)], axis=0
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.clip(self.blend(self.member_proba(X)), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


@dataclass(frozen=True)
class Blend:
    """The chosen blend: member names, weights, the weight rule (``equal`` / ``grid``), its validation AUC
    (see module docstring) and out-of-fold validation AUC (= the validation AUC for equal weights)."""

    names: list[str]
    weights: list[float]
    rule: str
    val_auc: float
    val_auc_oof: float

    def params(self) -> dict[str, Any]:
        return {
            "members": ",".join(self.names),
            "weights": ",".join(f"{w:.2f}" for w in self.weights),
            "weight_rule": self.rule,
            "weight_rules": f"equal, or max val AUC over a {WEIGHT_STEP} simplex grid if its {FOLDS}-fold "
            "OOF val AUC is higher",
        }


def simplex_grid(k: int, step: float = WEIGHT_STEP) -> np.ndarray:
    """Every weight vector of ``k`` non-negative multiples of ``step`` summing to 1 (rows)."""
    n = round(1 / step)
    rows = [
        [b - a - 1 for a, b in zip((-1, *cuts), (*cuts, n + k - 1), strict=True)]
        for cuts in itertools.combinations(range(n + k - 1), k - 1)
    ]
    return np.asarray(rows, dtype=float) / n


def _best_weights(P: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, float]:
    """The grid row maximising the AUC of ``P @ w`` (ties: the first row)."""
    aucs = [roc_auc_score(y, P @ w) for w in grid]
    best = int(np.argmax(aucs))
    return grid[best], float(aucs[best])


def choose_blend(
    val_scores: Mapping[str, np.ndarray],
    val_auc: Mapping[str, float],
    y_val: Any,
    max_members: int,
    seed: int = 42,
) -> Blend | None:
    """The blend of the ``max_members`` best candidates (by ``val_auc``) with equal or grid weights,
    chosen on validation (see module docstring); None when fewer than two candidates, or when the grid
    weights win and pick a single candidate."""
    names = sorted(val_scores, key=lambda n: -val_auc[n])[:max_members]
    if len(names) < 2:
        return None
    y = np.asarray(y_val).astype(int)
    P = np.column_stack([np.asarray(val_scores[n], dtype=float) for n in names])
    equal = np.full(len(names), 1.0 / len(names))
    equal_auc = float(roc_auc_score(y, P @ equal))
    grid = simplex_grid(len(names))[::-1]  # most weight on the best candidate first: ties go there
    weights, in_sample = _best_weights(P, y, grid)
    oof = np.empty(len(y), dtype=float)
    for fit_rows, held_out in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(P, y):
        w, _ = _best_weights(P[fit_rows], y[fit_rows], grid)
        oof[held_out] = P[held_out] @ w
    oof_auc = float(roc_auc_score(y, oof))
    if equal_auc >= oof_auc:
        return Blend(names, [float(w) for w in equal], "equal", equal_auc, equal_auc)
    if np.count_nonzero(weights) < 2:
        return None
    kept = [i for i, w in enumerate(weights) if w > 0]
    return Blend(
        names=[names[i] for i in kept],
        weights=[float(weights[i]) for i in kept],
        rule="grid",
        val_auc=in_sample,
        val_auc_oof=oof_auc,
    )
