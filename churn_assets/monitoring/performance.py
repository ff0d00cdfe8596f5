"""Model performance: realised metrics on labelled predictions, a label-free estimate, the trend.

* :func:`realised_metrics` — AUC, recall, precision, F1 at the model's threshold (the modeling
  library's ``binary_metrics``).
* :func:`estimate_performance` — confidence-based performance estimation (CBPE, after NannyML):
  with calibrated scores ``p``, each prediction is a positive with probability ``p``. The expected
  confusion matrix at threshold ``t`` is ``TP = sum p [p >= t]``, ``FP = sum (1 - p) [p >= t]``,
  ``FN = sum p [p < t]``, and the expected AUC is the probability that a positive outranks a
  negative with the scores as soft labels::

      AUC = sum_{i != j} p_i (1 - p_j) 1[s_i > s_j] (+ 1/2 on ties)  /  sum_{i != j} p_i (1 - p_j)

  computed in O(n log n) from one sort and cumulative sums (:func:`expected_auc`). It is exact for
  calibrated scores and *covariate* shift; under *concept* shift (P(y | x) changes, as in the
  simulator's price war) the scores are no longer calibrated and CBPE cannot see the decay — so the
  realised value is shown next to it once labels arrive. Written here (30 lines of numpy) rather than
  depending on nannyml, which pins its own pandas/scikit-learn ranges and pulls in a plotting stack.
* :func:`trend_table` — the spec's table (week, AUC, recall, precision, F1, trend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from churn_assets.modeling.evaluation import binary_metrics


class PerformanceInputError(ValueError):
    """Scores or labels are unusable (names the field and the rule)."""


def _scores(p: Any, name: str = "score") -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise PerformanceInputError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
        raise PerformanceInputError(f"{name}: probabilities must be finite and within [0, 1]")
    return arr


def expected_auc(p: Any) -> float:
    """Expected ROC AUC of calibrated probabilities ``p`` scored by themselves (CBPE)."""
    s = _scores(p)
    n = s.size
    if n < 2:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ps = s[order]
    neg = 1.0 - ps
    # Ties: group equal scores; a pair inside a group counts 1/2.
    starts = np.flatnonzero(np.r_[True, np.diff(ps) > 0])
    group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
    neg_cum = np.cumsum(neg)
    neg_group = np.add.reduceat(neg, starts)
    below = (neg_cum - neg)[starts][group]  # negative mass strictly below each score
    same = neg_group[group] - neg  # other rows with the same score
    numerator = float(np.sum(ps * (below + 0.5 * same)))
    denominator = float(np.sum(ps) * np.sum(neg) - np.sum(ps * neg))
    return numerator / denominator if denominator > 0 else float("nan")


def estimate_performance(p: Any, threshold: float) -> dict[str, float]:
    """CBPE estimates: ``auc``, ``recall``, ``precision``, ``f1`` at ``threshold``, ``positive_rate``."""
    s = _scores(p)
    flagged = s >= threshold
    tp = float(s[flagged].sum())
    fp = float((1 - s[flagged]).sum())
    fn = float(s[~flagged].sum())
    return {
        "auc": expected_auc(s),
        "recall": tp / (tp + fn) if tp + fn > 0 else float("nan"),
        "precision": tp / (tp + fp) if tp + fp > 0 else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else float("nan"),
        "positive_rate": float(s.mean()) if s.size else float("nan"),
        "n": float(s.size),
    }


def realised_metrics(y: Any, p: Any, threshold: float) -> dict[str, float]:
    """AUC, recall, precision, F1 (at ``threshold``), Brier and positive rate on labelled rows."""
    s = _scores(p)
    yv = np.asarray(y)
    if yv.shape != s.shape:
        raise PerformanceInputError(f"labels: {yv.shape[0]} labels for {s.shape[0]} scores")
    if yv.size and not np.isin(yv, (0, 1)).all():
        raise PerformanceInputError("labels: values must be 0 or 1")
    if yv.size == 0:
        raise PerformanceInputError("labels: no labelled rows")
    return binary_metrics(yv, s, threshold)


@dataclass
class WeekPerformance:
    """One row of the trend: a prediction week with its estimate and (once labelled) realised values."""

    week: str  # landing week key of the predictions
    as_of: str
    model_version: str
    rows: int
    estimated_auc: float
    estimated_recall: float
    estimated_precision: float
    estimated_f1: float
    auc: float | None = None
    recall: float | None = None
    precision: float | None = None
    f1: float | None = None
    positives: int | None = None

    @property
    def labelled(self) -> bool:
        return self.auc is not None and not math.isnan(self.auc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trend_labels(aucs: Sequence[float | None], threshold: float, decay_warning: float) -> list[str]:
    """Trend words per row: Baseline, Stable, Slight decay, Decay accelerating ⚠, Below threshold 🔴.

    The first row is the baseline; a later row is 'Below threshold' under ``threshold``, 'Decay
    accelerating' when its drop from the baseline exceeds ``decay_warning`` and grew faster than the
    previous step's, 'Slight decay' when it dropped by more than half of ``decay_warning``, else 'Stable'.
    """
    out: list[str] = []
    base = None
    prev_drop = 0.0
    for auc in aucs:
        if auc is None or math.isnan(auc):
            out.append("—")
            continue
        if base is None:
            base = auc
            out.append("Baseline" if auc >= threshold else "Below threshold 🔴")
            continue
        drop = base - auc
        if auc < threshold:
            word = "Below threshold 🔴"
        elif drop > decay_warning and drop - prev_drop > decay_warning / 2:
            word = "Decay accelerating ⚠"
        elif drop > decay_warning / 2:
            word = "Slight decay"
        else:
            word = "Stable"
        prev_drop = drop
        out.append(word)
    return out


def trend_table(
    weeks: Sequence[WeekPerformance], threshold: float, decay_warning: float
) -> list[dict[str, Any]]:
    """Rows (week, AUC, est. AUC, recall, precision, F1, trend) ordered by week; the trend uses the
    realised AUC when labelled, the CBPE estimate otherwise (marked ``(est.)``)."""
    ordered = sorted(weeks, key=lambda w: w.week)
    basis = [w.auc if w.labelled else w.estimated_auc for w in ordered]
    words = trend_labels(basis, threshold, decay_warning)
    rows = []
    for w, word in zip(ordered, words, strict=True):

        def fmt(v: float | None) -> str:
            return "—" if v is None or math.isnan(v) else f"{v:.3f}"

        rows.append(
            {
                "week": w.week,
                "model": w.model_version,
                "AUC": fmt(w.auc),
                "est. AUC (CBPE)": fmt(w.estimated_auc),
                "recall": fmt(w.recall if w.labelled else w.estimated_recall),
                "precision": fmt(w.precision if w.labelled else w.estimated_precision),
                "F1": fmt(w.f1 if w.labelled else w.estimated_f1),
                "trend": word if w.labelled else f"{word} (est.)",
            }
        )
    return rows
