"""Data drift: the champion's training data (reference) against the current production window.

Tests, per feature:

* **numeric** — two-sample Kolmogorov-Smirnov. :func:`ks_2samp_fast` returns exactly what
  ``scipy.stats.ks_2samp(reference, current)`` (two-sided, ``method="auto"``) returns, but against a
  reference sorted once per champion (:class:`NumericReference`) it visits only the current sample's
  distinct values (:func:`ks_statistic`), instead of two ``searchsorted`` passes over the
  concatenation of both samples. Samples of at most 10,000 rows (where scipy uses its exact
  distribution) are passed to scipy itself.
* **categorical** — chi-square test of the 2 x k contingency table (``scipy.stats.chi2_contingency``);
  nulls are a category of their own.

Alert rule: ``p < drift_p_value / n_tested`` (Bonferroni over the features tested) **and** an effect
size of at least a floor — the KS statistic for numeric features (``ks_floor``, 0.1 = the two CDFs
differ by 10 percentage points somewhere), the population stability index for categorical ones
(``psi_floor``, 0.1). At production sizes (10^5 rows) a bare p-value flags shifts of 1-2 % that no
model notices; the floor keeps the alert for material shifts and the correction keeps 45 tests from
raising a false alarm every few weeks. Severity grows with the effect: LOW below ``medium_factor`` x
floor, MEDIUM below ``high_factor`` x floor, HIGH above (KS 0.10 / 0.15 / 0.25, PSI likewise).
The drift **score** of a feature is that effect size (KS statistic or PSI).

Root cause (:func:`root_cause`): for every drifted feature and every value of the segment columns
(acquisition channel, signup cohort), the effect is recomputed without that segment's rows in the
current window; the segment whose removal shrinks the drift the most is named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from churn_assets.settings import MonitoringSettings

Kind = Literal["numeric", "categorical"]
Severity = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
SEVERITIES: tuple[Severity, ...] = ("NONE", "LOW", "MEDIUM", "HIGH")
NULL = "<null>"
PSI_EPS = 1e-4  # share floor in the PSI (a category absent on one side)
SCIPY_EXACT_MAX_N = 10_000  # scipy's ks_2samp 'auto' is exact up to this size


class DriftInputError(ValueError):
    """A drift input is unusable (names the feature and the rule)."""


# ------------------------------------------------------------------------------------------ KS
@dataclass(frozen=True)
class NumericReference:
    """A numeric reference sample prepared once: its sorted values, plus decile edges and the
    reference's counts per decile bin (PSI, histograms)."""

    values: np.ndarray  # sorted, no NaN
    edges: np.ndarray  # inner decile edges (unique)
    bins: np.ndarray  # reference counts per decile bin
    null_share: float

    @classmethod
    def from_values(cls, values: np.ndarray) -> NumericReference:
        arr = np.asarray(values, dtype=np.float64)
        nan = np.isnan(arr)
        null_share = float(nan.mean()) if arr.size else 0.0
        data = np.sort(arr[~nan]) if nan.any() else np.sort(arr)
        if data.size:  # deciles read off the sorted values (lower order statistic)
            edges = np.unique(data[(np.linspace(0.1, 0.9, 9) * (data.size - 1)).astype(np.int64)])
        else:
            edges = np.array([])
        below = np.searchsorted(data, edges, "left")  # bin k = [edge_{k-1}, edge_k), as for the current
        bins = np.diff(np.concatenate(([0], below, [data.size])))
        return cls(data, edges, bins, null_share)

    @property
    def n(self) -> int:
        return int(self.values.size)


def _distinct_right(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and, for each, the count of values <= it."""
    if sorted_values.size == 0:
        return sorted_values, np.array([], dtype=np.int64)
    ends = np.flatnonzero(np.r_[sorted_values[1:] != sorted_values[:-1], True])
    return sorted_values[ends], ends + 1


def ks_statistic(reference: NumericReference, current_sorted: np.ndarray) -> float:
    """max |F_ref - F_cur| over every observed value — the ``ks_2samp`` statistic, bit for bit.

    Only the current sample's distinct values ``c_k`` are visited: on ``[c_k, c_{k+1})`` the current
    ECDF is constant and the reference ECDF grows, so the difference is smallest at ``c_k`` and largest
    at the last reference value before ``c_{k+1}``, where ``F_ref = #(ref < c_{k+1}) / n1``. Both are
    integer counts over the same ``n1``, ``n2`` as scipy's, so the floats are identical.
    """
    n1, n2 = reference.n, current_sorted.size
    distinct, cur_right = _distinct_right(current_sorted)
    ref = reference.values
    at = np.searchsorted(ref, distinct, "right") / n1 - cur_right / n2
    cur_before = np.concatenate(([0], cur_right[:-1]))
    before = np.searchsorted(ref, distinct, "left") / n1 - cur_before / n2
    max_s = max(float(at.max()), float(before.max()))
    min_s = float(np.clip(-min(float(at.min()), float(before.min())), 0, 1))
    return min_s if min_s > max_s else max_s


def ks_2samp_fast(reference: NumericReference, current: np.ndarray) -> tuple[float, float]:
    """``(statistic, p_value)`` equal to ``scipy.stats.ks_2samp(reference.values, current)``."""
    cur = np.asarray(current, dtype=np.float64)
    cur = np.sort(cur[~np.isnan(cur)])
    n1, n2 = reference.n, cur.size
    if min(n1, n2) == 0:
        raise DriftInputError(f"KS test needs non-empty samples (reference {n1}, current {n2} non-null rows)")
    if max(n1, n2) <= SCIPY_EXACT_MAX_N:
        res = stats.ks_2samp(reference.values, cur)
        return float(res.statistic), float(res.pvalue)
    d = ks_statistic(reference, cur)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = float(np.clip(stats.distributions.kstwo.sf(d, np.round(en)), 0, 1))
    return float(d), p


def numeric_psi(reference: NumericReference, current: np.ndarray) -> float:
    """PSI over the reference's decile bins (nulls ignored)."""
    cur = np.asarray(current, dtype=np.float64)
    cur = cur[~np.isnan(cur)]
    if reference.n == 0 or cur.size == 0:
        return float("nan")
    bins_cur = np.bincount(np.searchsorted(reference.edges, cur, "right"), minlength=len(reference.edges) + 1)
    return psi(reference.bins, bins_cur)


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index sum((c - r) ln(c / r)) of two count vectors over the same bins."""
    r = np.maximum(ref_counts / max(ref_counts.sum(), 1), PSI_EPS)
    c = np.maximum(cur_counts / max(cur_counts.sum(), 1), PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


# ------------------------------------------------------------------------------------ categorical
@dataclass(frozen=True)
class CategoricalReference:
    counts: dict[str, int]

    @classmethod
    def from_values(cls, values: pl.Series) -> CategoricalReference:
        return cls(category_counts(values))

    @property
    def n(self) -> int:
        return sum(self.counts.values())


def category_counts(values: pl.Series) -> dict[str, int]:
    counted = values.cast(pl.String).fill_null(NULL).value_counts()
    name = counted.columns[0]
    return dict(zip(counted[name].to_list(), counted["count"].to_list(), strict=True))


def chi2_test(reference: Mapping[str, int], current: Mapping[str, int]) -> tuple[float, float, float]:
    """``(chi2, p_value, psi)`` of two category count maps."""
    cats = sorted(set(reference) | set(current))
    table = np.array([[reference.get(c, 0) for c in cats], [current.get(c, 0) for c in cats]], dtype=float)
    if table[0].sum() == 0 or table[1].sum() == 0:
        raise DriftInputError("chi-square test needs non-empty samples")
    table = table[:, table.sum(axis=0) > 0]
    value = psi(table[0], table[1])
    if table.shape[1] < 2:
        return 0.0, 1.0, value
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue), value


# ------------------------------------------------------------------------------------ reference
@dataclass(frozen=True)
class ReferenceProfile:
    """Everything the drift tests need from the reference, computed once per champion."""

    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    n_rows: int

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def is_categorical(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Utf8) or isinstance(dtype, pl.Enum | pl.Categorical)


def profile_reference(frame: pl.DataFrame, features: Sequence[str]) -> ReferenceProfile:
    """Prepare the reference: numeric columns sorted once, categorical columns counted."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DriftInputError(f"reference frame lacks feature column(s) {missing}")
    numeric: dict[str, NumericReference] = {}
    categorical: dict[str, CategoricalReference] = {}
    for name in features:
        col = frame.get_column(name)
        if is_categorical(col.dtype):
            categorical[name] = CategoricalReference.from_values(col)
        elif col.dtype.is_numeric() or col.dtype == pl.Boolean:
            numeric[name] = NumericReference.from_values(col.cast(pl.Float64).fill_null(np.nan).to_numpy())
        else:
            raise DriftInputError(f"feature {name!r}: dtype {col.dtype} is neither numeric nor categorical")
    return ReferenceProfile(numeric, categorical, frame.height)


# ------------------------------------------------------------------------------------ the report
@dataclass
class FeatureDrift:
    feature: str
    kind: Kind
    test: str
    statistic: float
    p_value: float
    effect: float  # the drift score: KS statistic (numeric) or PSI (categorical)
    psi: float
    n_reference: int
    n_current: int
    null_share_reference: float
    null_share_current: float
    drifted: bool = False
    severity: Severity = "NONE"
    importance: float | None = None  # share of the champion's importance
    importance_rank: int | None = None

    @property
    def status(self) -> str:
        return {"NONE": "✓ OK", "LOW": "⚠ LOW", "MEDIUM": "⚠ MEDIUM", "HIGH": "🔴 HIGH"}[self.severity]

    @property
    def impact(self) -> str:
        """Impact assessment: the shift and how much the champion relies on the feature."""
        if self.importance_rank is None:
            weight = "importance unknown"
        else:
            level = "high" if self.importance_rank <= 5 else "medium" if self.importance_rank <= 15 else "low"
            weight = f"{level} model impact (importance rank {self.importance_rank}, {self.importance:.0%})"
        if not self.drifted:
            return f"Stable; {weight}"
        words = {
            "LOW": "Minor shift",
            "MEDIUM": "Distribution shifted",
            "HIGH": "Significant drift — investigate",
        }
        return f"{words[self.severity]}; {weight}"


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    alpha: float
    alpha_adjusted: float
    n_reference: int
    n_current: int
    excluded: list[str] = field(default_factory=list)
    root_cause: dict[str, Any] | None = None

    @property
    def drifted(self) -> list[FeatureDrift]:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(
            (f for f in self.features if f.drifted), key=lambda f: (-order[f.severity], -f.effect, f.feature)
        )

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.drifted]

    @property
    def max_severity(self) -> Severity:
        return max((f.severity for f in self.features), key=SEVERITIES.index, default="NONE")

    def table(self, only_drifted: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows like the spec's: feature, drift score, status, impact (+ test, p-value), drifted first."""
        rest = sorted((f for f in self.features if not f.drifted), key=lambda f: -f.effect)
        rows = self.drifted + ([] if only_drifted else rest)
        out = [
            {
                "feature": f.feature,
                "drift score": round(f.effect, 4),
                "status": f.status,
                "impact": f.impact,
                "test": f.test,
                "p-value": f"{f.p_value:.1e}",
            }
            for f in rows
        ]
        return out[:limit] if limit else out

    def summary(self) -> dict[str, Any]:
        return {
            "n_tested": len(self.features),
            "n_drifted_features": len(self.drifted),
            "drifted_features": self.drifted_features,
            "max_severity": self.max_severity,
            "alpha_adjusted": self.alpha_adjusted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "excluded": self.excluded,
            "root_cause": self.root_cause,
        }

    def records(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.features]


def severity(effect: float, floor: float, cfg: MonitoringSettings) -> Severity:
    """NONE below the floor, then LOW / MEDIUM (>= medium_factor x floor) / HIGH (>= high_factor x floor)."""
    tol = 1e-12  # 1.5 * 0.1 is 0.15000000000000002 in floating point
    if not effect >= floor - tol:
        return "NONE"
    if effect >= cfg.high_factor * floor - tol:
        return "HIGH"
    if effect >= cfg.medium_factor * floor - tol:
        return "MEDIUM"
    return "LOW"


def _null_share(col: pl.Series) -> float:
    if col.len() == 0:
        return 0.0
    nulls = col.null_count() + (int(col.is_nan().sum()) if col.dtype.is_float() else 0)
    return nulls / col.len()


def compare_feature(reference: ReferenceProfile, name: str, current: pl.Series) -> FeatureDrift:
    """One feature's test, effect size and PSI (no alert decision yet)."""
    if name in reference.numeric:
        ref = reference.numeric[name]
        if not (current.dtype.is_numeric() or current.dtype == pl.Boolean):
            raise DriftInputError(
                f"feature {name!r}: numeric in the reference, {current.dtype} in the current window"
            )
        values = current.cast(pl.Float64).fill_null(np.nan).to_numpy()
        stat, p = ks_2samp_fast(ref, values)
        return FeatureDrift(
            name, "numeric", "KS", stat, p, stat, numeric_psi(ref, values), ref.n,
            int((~np.isnan(values)).sum()), ref.null_share, _null_share(current),
        )  # fmt: skip
    cref = reference.categorical[name]
    counts = category_counts(current)
    chi2, p, value = chi2_test(cref.counts, counts)
    return FeatureDrift(
        name, "categorical", "chi-square", chi2, p, value, value, cref.n, sum(counts.values()),
        cref.counts.get(NULL, 0) / max(cref.n, 1), counts.get(NULL, 0) / max(sum(counts.values()), 1),
    )  # fmt: skip


def detect_drift(
    reference: ReferenceProfile,
    current: pl.DataFrame,
    cfg: MonitoringSettings,
    importance: Mapping[str, float] | None = None,
    features: Sequence[str] | None = None,
) -> DriftReport:
    """Test every reference feature (minus ``cfg.exclude_features``) and apply the alert rule."""
    names = [f for f in (features or reference.features) if f not in cfg.exclude_features]
    excluded = [f for f in (features or reference.features) if f in cfg.exclude_features]
    missing = [f for f in names if f not in current.columns]
    if missing:
        raise DriftInputError(f"current window lacks feature column(s) {missing}")
    if current.height == 0:
        raise DriftInputError("current window is empty: no rows to compare with the reference")
    unknown = [f for f in names if f not in reference.numeric and f not in reference.categorical]
    if unknown:
        raise DriftInputError(f"feature(s) {unknown} are not in the reference profile")
    results = [compare_feature(reference, name, current.get_column(name)) for name in names]
    return alert_report(results, cfg, importance, reference.n_rows, current.height, excluded)


def alert_report(
    results: list[FeatureDrift],
    cfg: MonitoringSettings,
    importance: Mapping[str, float] | None,
    n_reference: int,
    n_current: int,
    excluded: list[str],
) -> DriftReport:
    """The alert rule (module doc) applied to every feature's test result, with its importance rank."""
    alpha_adj = cfg.drift_p_value / max(len(results), 1)
    ranks = _ranks(importance)
    for res in results:
        floor = cfg.ks_floor if res.kind == "numeric" else cfg.psi_floor
        res.drifted = bool(res.p_value < alpha_adj and res.effect >= floor)
        res.severity = severity(res.effect, floor, cfg) if res.drifted else "NONE"
        if importance is not None and res.feature in ranks:
            res.importance, res.importance_rank = ranks[res.feature]
    return DriftReport(results, cfg.drift_p_value, alpha_adj, n_reference, n_current, excluded)


def _ranks(importance: Mapping[str, float] | None) -> dict[str, tuple[float, int]]:
    if not importance:
        return {}
    total = sum(max(v, 0.0) for v in importance.values()) or 1.0
    ordered = sorted(importance.items(), key=lambda kv: -kv[1])
    return {name: (max(v, 0.0) / total, i + 1) for i, (name, v) in enumerate(ordered)}


# ------------------------------------------------------------------------------------ root cause
def _effect(reference: ReferenceProfile, name: str, current: pl.Series) -> float:
    if current.len() == 0:
        return float("nan")
    if name in reference.numeric:
        values = current.cast(pl.Float64).fill_null(np.nan).to_numpy()
        values = np.sort(values[~np.isnan(values)])
        return ks_statistic(reference.numeric[name], values) if values.size else float("nan")
    return chi2_test(reference.categorical[name].counts, category_counts(current))[2]


def root_cause(
    reference_frame: pl.DataFrame | None,
    reference: ReferenceProfile,
    current: pl.DataFrame,
    report: DriftReport,
    segment_columns: Sequence[str],
    max_features: int = 5,
    max_values: int = 8,
    min_explained: float = 0.25,
) -> dict[str, Any] | None:
    """Which segment the shift comes from: the (column, value) whose removal from the current
    window shrinks the drifted features' effect the most (mean relative reduction).

    Returns ``None`` without drifted features or segment columns; else the best segment with its
    share in the current window and in the reference (when ``reference_frame`` has the column), the
    per-feature effect with and without it, and a one-line ``hint``.
    """
    drifted = report.drifted[:max_features]
    columns = [c for c in segment_columns if c in current.columns]
    if not drifted or not columns:
        return None
    candidates: list[dict[str, Any]] = []
    for column in columns:
        seg = current.get_column(column).cast(pl.String).fill_null(NULL)
        top = seg.value_counts(sort=True).head(max_values)
        for value in top[top.columns[0]].to_list():
            keep = seg != value
            if int(keep.sum()) < 50:  # removing (almost) everything explains nothing
                continue
            rest = current.filter(keep)
            per_feature = {}
            reductions = []
            for f in drifted:
                without = _effect(reference, f.feature, rest.get_column(f.feature))
                per_feature[f.feature] = {"with": round(f.effect, 4), "without": round(without, 4)}
                if math.isfinite(without) and f.effect > 0:
                    reductions.append((f.effect - without) / f.effect)
            share_cur = float((~keep).mean())
            share_ref = None
            if reference_frame is not None and column in reference_frame.columns:
                ref_seg = reference_frame.get_column(column).cast(pl.String).fill_null(NULL)
                share_ref = float((ref_seg == value).mean()) if ref_seg.len() else None
            candidates.append(
                {
                    "segment": column,
                    "value": value,
                    "share_current": share_cur,
                    "share_reference": share_ref,
                    "explained": float(np.mean(reductions)) if reductions else 0.0,
                    "effects": per_feature,
                }
            )
    if not candidates:
        return None
    best = max(candidates, key=lambda c: c["explained"])
    best["ranking"] = [
        {k: c[k] for k in ("segment", "value", "share_current", "explained")}
        for c in sorted(candidates, key=lambda c: -c["explained"])[:5]
    ]
    names = ", ".join(f.feature for f in drifted)
    if best["explained"] < min_explained:
        best["hint"] = (
            f"no single segment explains the drift of {names} (best: {best['segment']} = {best['value']}, "
            f"{best['explained']:.0%})"
        )
        best["explains"] = False
        return best
    best["explains"] = True
    ref_txt = "n/a" if best["share_reference"] is None else f"{best['share_reference']:.1%}"
    best["hint"] = (
        f"{best['segment']} = {best['value']} ({best['share_current']:.1%} of the current window vs "
        f"{ref_txt} of the reference) explains {best['explained']:.0%} of the drift of "
        f"{names}"
    )
    return best
