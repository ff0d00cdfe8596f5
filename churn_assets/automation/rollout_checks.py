"""Rollout phase checks as plain functions: advance, hold or roll back (docs/automation.md).

Input: one production week of the prediction log (``churn_assets.serving.prediction_log`` columns), the
rollout phase and the stable / candidate model versions, optionally realised outcomes. The candidate's
rows are ``variant in {"shadow", "canary"}`` with ``model_version == candidate``; the stable model's are
``variant == "champion"`` with ``model_version == stable``.

Checks (limits in ``settings.automation.rollout``):

* ``volume``: at least ``min_candidate_rows`` candidate predictions (else **hold** — no verdict yet);
* ``latency``: candidate P95 latency <= ``max_latency_p95_ms`` and <= ``max_latency_ratio`` x stable P95,
  on the live service's rows (``source == "http"``) when both sides have some, else on all rows
  (that ratio limit never below ``latency_ratio_floor_ms``: a batch's time per row shrinks with the batch
  size, so a 5 % canary batch looks "slower" per row than the stable 95 % at sub-millisecond values);
* ``error_rate``: share of candidate rows without a valid score (null, NaN, outside [0, 1]) <=
  ``max_error_rate``;
* ``score_distribution``: the candidate's valid scores against **its own** validation-time score
  distribution (the ``score_reference`` registered with the version, ``modeling.score_reference``): KS
  statistic <= ``max_score_ks`` and |positive-decision rate - the reference's| <= ``max_positive_rate_shift``.
  An honest retrain after a concept shift scores customers differently from the old model but like it
  scored its own held-out rows; a broken model or feature pipeline moves the scores away from both. The
  comparison with the stable model's scores (KS, positive rates, mean scores) is reported as information
  only. A version registered without a reference is compared with the stable model instead (said so);
* ``outcomes`` (only once >= ``min_labelled_rows`` candidate predictions have realised labels): the
  spec's rollback trigger "< 2 % improvement or any regression": candidate AUC >= stable AUC x (1 +
  ``min_auc_improvement``) on the same labelled weeks; before that it passes as "not yet available".

Verdict: every check passes -> ``advance``; ``volume`` fails -> ``hold``; any other failure ->
``rollback``. At ``canary_50`` under a manual business review (``serving.rollout_review = manual``) a
passing week is a ``hold`` until the rollout is approved (``churnops rollout approve --by NAME``). The phase ``none`` (no rollout) has nothing to review.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy.stats import ks_2samp, norm
from sklearn.metrics import roc_auc_score

from churn_assets.modeling.score_reference import ScoreReference
from churn_assets.settings import RolloutCheckSettings

Action = Literal["advance", "hold", "rollback", "none"]
CANDIDATE_VARIANTS = ("shadow", "canary")
STABLE_VARIANT = "champion"


@dataclass(frozen=True)
class PhaseCheck:
    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str


@dataclass(frozen=True)
class RolloutVerdict:
    action: Action
    phase: str
    stable_version: str | None
    candidate_version: str | None
    reason: str
    checks: list[PhaseCheck] = field(default_factory=list)
    candidate_rows: int = 0
    stable_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _valid(scores: pl.Series) -> pl.Series:
    return scores.filter(scores.is_not_null() & scores.is_not_nan() & (scores >= 0) & (scores <= 1))


def _mean(values: pl.Series) -> float:
    """Mean of a numeric series as a float (0.0 when empty)."""
    return float(values.to_numpy().mean()) if values.len() else 0.0


def _p95(frame: pl.DataFrame) -> float | None:
    if frame.is_empty():
        return None
    value = frame.get_column("latency_ms").drop_nulls().quantile(0.95)
    return None if value is None else float(value)


def _auc(frame: pl.DataFrame) -> float | None:
    labelled = frame.filter(pl.col("churned").is_not_null() & pl.col("score").is_not_null())
    y = labelled.get_column("churned").to_numpy()
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, labelled.get_column("score").to_numpy()))


def split_variants(
    predictions: pl.DataFrame, stable: str | None, candidate: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(stable rows, candidate rows)`` of a prediction-log frame."""
    cand = predictions.filter(
        pl.col("variant").is_in(CANDIDATE_VARIANTS) & (pl.col("model_version") == str(candidate))
    )
    stab = predictions.filter(
        (pl.col("variant") == STABLE_VARIANT) & (pl.col("model_version") == str(stable))
    )
    return stab, cand


def review_phase(
    predictions: pl.DataFrame,
    phase: str,
    stable: str | None,
    candidate: str | None,
    cfg: RolloutCheckSettings,
    outcomes: pl.DataFrame | None = None,
    reference: ScoreReference | None = None,
    outcome_predictions: pl.DataFrame | None = None,
    manual_review: bool = False,
) -> RolloutVerdict:
    """Run the phase checks on one week of ``predictions``. ``outcomes``: ``customer_id, as_of, churned``
    (realised labels of complete windows only), matched against ``outcome_predictions`` (the rollout's
    earlier weeks; default: ``predictions``). ``reference``: the candidate's registered validation-time
    score distribution. ``manual_review``: the business review at 50 % is manual (a passing ``canary_50``
    week holds)."""
    if phase == "none" or candidate is None:
        return RolloutVerdict("none", phase, stable, candidate, "no rollout in progress")
    stab, cand = split_variants(predictions, stable, candidate)
    checks: list[PhaseCheck] = []
    n_cand, n_stab = cand.height, stab.height
    volume_ok = n_cand >= cfg.min_candidate_rows and n_stab > 0
    checks.append(
        PhaseCheck(
            "volume",
            volume_ok,
            float(n_cand),
            f">= {cfg.min_candidate_rows} candidate rows and >= 1 stable row",
            f"{n_cand:,} candidate / {n_stab:,} stable predictions",
        )
    )
    if not volume_ok:
        return RolloutVerdict(
            "hold",
            phase,
            stable,
            candidate,
            f"too few predictions to judge ({checks[0].detail})",
            checks,
            n_cand,
            n_stab,
        )

    # Live requests (source http) measure latency; batch rows only when the service scored none of a side.
    live_c, live_s = (
        f.filter(pl.col("source") == "http") if "source" in f.columns else f for f in (cand, stab)
    )
    timed_c, timed_s = (live_c, live_s) if live_c.height and live_s.height else (cand, stab)
    p95_c, p95_s = _p95(timed_c), _p95(timed_s)
    latency_limit = cfg.max_latency_p95_ms
    if p95_s is not None and p95_s > 0:
        latency_limit = min(latency_limit, max(cfg.max_latency_ratio * p95_s, cfg.latency_ratio_floor_ms))
    lat_ok = p95_c is not None and p95_c <= latency_limit
    checks.append(
        PhaseCheck(
            "latency",
            lat_ok,
            p95_c,
            f"P95 <= {latency_limit:.2f} ms",
            f"candidate P95 {p95_c if p95_c is None else round(p95_c, 2)} ms, stable P95 "
            f"{p95_s if p95_s is None else round(p95_s, 2)} ms",
        )
    )

    valid = _valid(cand.get_column("score"))
    error_rate = 1.0 - valid.len() / n_cand
    checks.append(
        PhaseCheck(
            "error_rate",
            error_rate <= cfg.max_error_rate,
            error_rate,
            f"<= {cfg.max_error_rate}",
            f"{n_cand - valid.len():,} of {n_cand:,} candidate predictions without a valid score",
        )
    )

    checks.append(_distribution_check(stab, cand, valid, reference, cfg))
    labelled = (
        split_variants(outcome_predictions, stable, candidate) if outcome_predictions is not None else None
    )
    checks.append(_outcome_check(*(labelled or (stab, cand)), outcomes, cfg))
    failed = [c.name for c in checks if not c.passed]
    if failed:
        return RolloutVerdict(
            "rollback",
            phase,
            stable,
            candidate,
            "regression: " + "; ".join(f"{c.name} ({c.detail})" for c in checks if not c.passed),
            checks,
            n_cand,
            n_stab,
        )
    passed = f"all {len(checks)} checks passed"
    if phase == "canary_50" and manual_review:
        return RolloutVerdict(
            "hold",
            phase,
            stable,
            candidate,
            f"{passed}; awaiting the business review at 50 % (churnops rollout approve --by NAME)",
            checks,
            n_cand,
            n_stab,
        )
    return RolloutVerdict("advance", phase, stable, candidate, passed, checks, n_cand, n_stab)


def _distribution_check(
    stab: pl.DataFrame,
    cand: pl.DataFrame,
    valid: pl.Series,
    reference: ScoreReference | None,
    cfg: RolloutCheckSettings,
) -> PhaseCheck:
    """Candidate scores vs its own reference (the verdict); vs the stable model's (information)."""
    if not valid.len():
        return PhaseCheck("score_distribution", False, None, "valid candidate scores", "no valid scores")
    limit = f"KS <= {cfg.max_score_ks}, |positive-rate shift| <= {cfg.max_positive_rate_shift}"
    pos_c = _mean(cand.get_column("label").cast(pl.Float64))
    stable_scores = _valid(stab.get_column("score"))
    vs_stable = "no stable scores"
    ks_stable: float | None = None
    if stable_scores.len():
        ks_stable = float(ks_2samp(valid.to_numpy(), stable_scores.to_numpy()).statistic)
        pos_s = _mean(stab.get_column("label").cast(pl.Float64))
        vs_stable = (
            f"KS {ks_stable:.3f}, positive rate {pos_c:.3f} vs {pos_s:.3f}, mean score "
            f"{_mean(valid):.3f} vs {_mean(stable_scores):.3f}"
        )
    if reference is None:
        if ks_stable is None:
            return PhaseCheck("score_distribution", False, None, limit, "no reference and no stable scores")
        pos_s = _mean(stab.get_column("label").cast(pl.Float64))
        shift = abs(pos_c - pos_s)
        ok = ks_stable <= cfg.max_score_ks and shift <= cfg.max_positive_rate_shift
        detail = f"no score reference registered with the candidate: vs the stable model {vs_stable}"
        return PhaseCheck("score_distribution", ok, ks_stable, limit, detail)
    ks_own = reference.ks(valid.to_numpy())
    shift = abs(pos_c - reference.positive_rate)
    ok = ks_own <= cfg.max_score_ks and shift <= cfg.max_positive_rate_shift
    detail = (
        f"vs its own validation scores: KS {ks_own:.3f}, positive rate {pos_c:.3f} vs "
        f"{reference.positive_rate:.3f} (|shift| {shift:.3f}); vs the stable model (information): {vs_stable}"
    )
    return PhaseCheck("score_distribution", ok, ks_own, limit, detail)


def _outcome_check(
    stab: pl.DataFrame, cand: pl.DataFrame, outcomes: pl.DataFrame | None, cfg: RolloutCheckSettings
) -> PhaseCheck:
    gain = cfg.min_auc_improvement
    limit = f"candidate AUC >= stable AUC x {1 + gain:g} once >= {cfg.min_labelled_rows} labelled"
    if outcomes is None or outcomes.is_empty():
        return PhaseCheck("outcomes", True, None, limit, "no realised labels yet (label window still open)")
    keys = ["customer_id", "as_of"]
    o = outcomes.select(*keys, pl.col("churned").cast(pl.Int8))
    lc = cand.join(o, on=keys, how="inner")
    # The stable model on the same labelled weeks as the candidate (in shadow: the same customers).
    ls = stab.join(o, on=keys, how="inner").filter(
        pl.col("as_of").is_in(lc.get_column("as_of").unique().implode())
    )
    if lc.height < cfg.min_labelled_rows:
        return PhaseCheck(
            "outcomes", True, None, limit, f"only {lc.height:,} labelled candidate predictions so far"
        )
    auc_c, auc_s = _auc(lc), _auc(ls)
    if auc_c is None or auc_s is None:
        return PhaseCheck("outcomes", True, None, limit, "labelled rows hold a single class")
    improvement = auc_c / auc_s - 1.0
    ok = improvement >= gain
    return PhaseCheck(
        "outcomes",
        ok,
        auc_c,
        limit,
        f"AUC candidate {auc_c:.3f} vs stable {auc_s:.3f} ({improvement:+.1%}) on {lc.height:,} labelled "
        "candidate predictions",
    )


@dataclass(frozen=True)
class BusinessImpact:
    """A/B test of business impact: realised churn of the customers the candidate served (canary) against
    the customers the stable model served (control) in the same canary weeks, once labels exist. Each
    group's flagged customers got the retention offer (simulated), so a model that flags the right
    customers lowers its group's churn. ``difference`` = canary - control rate, with a normal-approximation
    95 % confidence interval and the two-sided p-value of the two-proportion z-test (pooled)."""

    canary_customers: int
    control_customers: int
    canary_churn_rate: float | None
    control_churn_rate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def business_impact(
    predictions: pl.DataFrame, stable: str | None, candidate: str | None, outcomes: pl.DataFrame | None
) -> BusinessImpact:
    """Canary vs control realised churn on the labelled weeks of ``predictions`` that had canary traffic."""
    keys = ["customer_id", "as_of"]
    if outcomes is None or outcomes.is_empty() or candidate is None:
        return BusinessImpact(0, 0, None, None, None, None, None, None, "no realised labels yet")
    canary = predictions.filter((pl.col("variant") == "canary") & (pl.col("model_version") == str(candidate)))
    weeks = canary.get_column("as_of").unique()
    control = predictions.filter(
        (pl.col("variant") == STABLE_VARIANT)
        & (pl.col("model_version") == str(stable))
        & pl.col("as_of").is_in(weeks.implode())
    )
    o = outcomes.select(*keys, pl.col("churned").cast(pl.Int8))
    groups = [
        f.unique(subset=keys).join(o, on=keys, how="inner").get_column("churned") for f in (canary, control)
    ]
    n_c, n_s = (g.len() for g in groups)
    if n_c == 0 or n_s == 0:
        return BusinessImpact(n_c, n_s, None, None, None, None, None, None, "no labelled canary weeks yet")
    k_c, k_s = (int(g.sum()) for g in groups)
    p_c, p_s = k_c / n_c, k_s / n_s
    diff = p_c - p_s
    se = float(np.sqrt(p_c * (1 - p_c) / n_c + p_s * (1 - p_s) / n_s))
    pooled = (k_c + k_s) / (n_c + n_s)
    se0 = float(np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_s)))
    p_value = float(2 * norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    z = float(norm.ppf(0.975))
    return BusinessImpact(
        n_c,
        n_s,
        p_c,
        p_s,
        diff,
        diff - z * se,
        diff + z * se,
        p_value,
        f"canary churn {p_c:.2%} ({n_c:,}) vs control {p_s:.2%} ({n_s:,}): {diff:+.2%} "
        f"[95 % CI {diff - z * se:+.2%}, {diff + z * se:+.2%}], p = {p_value:.3g}",
    )
