"""Rollout phase checks (automation/rollout_checks.py): pass -> advance, regression -> rollback."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from churn_assets.automation.rollout_checks import business_impact, review_phase
from churn_assets.modeling.score_reference import ScoreReference
from churn_assets.settings import RolloutCheckSettings

AS_OF = dt.date(2025, 9, 15)
CFG = RolloutCheckSettings()


def rows(
    variant: str, version: str, scores: np.ndarray, latency: float = 2.0, start_id: int = 1
) -> pl.DataFrame:
    n = len(scores)
    return pl.DataFrame(
        {
            "ts": [dt.datetime(2025, 9, 15, tzinfo=dt.UTC)] * n,
            "customer_id": np.arange(start_id, start_id + n, dtype=np.int64),
            "model_version": [version] * n,
            "variant": [variant] * n,
            "score": scores,
            "label": (scores >= 0.3).astype(np.int8),
            "latency_ms": [latency] * n,
            "as_of": [AS_OF] * n,
        }
    )


def shadow_week(candidate_scores: np.ndarray, latency: float = 2.0) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    stable = rng.beta(1, 9, size=len(candidate_scores))
    return pl.concat([rows("champion", "1", stable), rows("shadow", "2", candidate_scores, latency)])


def similar_scores(n: int = 2_000, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).beta(1, 9, size=n)


# The candidate's validation-time scores, as registered with it (same family as `similar_scores`).
REFERENCE = ScoreReference.from_scores(similar_scores(5_000, seed=9), threshold=0.3)


def test_passing_phase_advances() -> None:
    verdict = review_phase(shadow_week(similar_scores()), "shadow", "1", "2", CFG, reference=REFERENCE)
    assert verdict.action == "advance", verdict.reason
    assert {c.name for c in verdict.checks} == {
        "volume",
        "latency",
        "error_rate",
        "score_distribution",
        "outcomes",
    }
    assert verdict.candidate_rows == 2_000


def test_too_few_candidate_rows_hold() -> None:
    verdict = review_phase(shadow_week(similar_scores(50)), "shadow", "1", "2", CFG, reference=REFERENCE)
    assert verdict.action == "hold" and "too few" in verdict.reason


def test_latency_regression_rolls_back() -> None:
    verdict = review_phase(
        shadow_week(similar_scores(), latency=500.0), "shadow", "1", "2", CFG, reference=REFERENCE
    )
    assert verdict.action == "rollback" and "latency" in verdict.reason


def test_latency_ratio_rolls_back_above_the_floor_only() -> None:
    """Stable 8 ms: a 20 ms candidate (2.5x, over the 10-ms floor) rolls back. Stable 2 ms: a 6 ms
    candidate (3x, but under the floor and the absolute limit) advances. Batch rows at 0.01 vs 0.07 ms
    per row (a small canary batch amortises less fixed cost) are under the floor too: no ratio verdict."""
    stable = rows("champion", "1", similar_scores(), latency=8.0)
    slow = rows("shadow", "2", similar_scores(), latency=20.0)
    verdict = review_phase(pl.concat([stable, slow]), "shadow", "1", "2", CFG, reference=REFERENCE)
    assert verdict.action == "rollback" and "latency" in verdict.reason
    verdict = review_phase(
        shadow_week(similar_scores(), latency=6.0), "shadow", "1", "2", CFG, reference=REFERENCE
    )
    assert verdict.action == "advance", verdict.reason
    stable = rows("champion", "1", similar_scores(), latency=0.01)
    canary = rows("canary", "2", similar_scores(), latency=0.07)
    verdict = review_phase(pl.concat([stable, canary]), "canary_5", "1", "2", CFG, reference=REFERENCE)
    latency = next(c for c in verdict.checks if c.name == "latency")
    assert latency.passed and verdict.action == "advance", verdict.reason


def test_invalid_scores_count_as_errors_and_roll_back() -> None:
    scores = similar_scores()
    scores[:10] = np.nan
    verdict = review_phase(shadow_week(scores), "shadow", "1", "2", CFG, reference=REFERENCE)
    assert verdict.action == "rollback" and "error_rate" in verdict.reason


def test_shifted_prediction_distribution_rolls_back() -> None:
    broken = np.random.default_rng(3).beta(5, 2, size=2_000)  # a model that calls most customers churners
    verdict = review_phase(shadow_week(broken), "canary_5", "1", "2", CFG, reference=REFERENCE)
    assert verdict.action == "rollback" and "score_distribution" in verdict.reason


def test_honest_score_shift_vs_the_stable_model_advances() -> None:
    """After a concept shift the retrain scores customers higher than the old model did, exactly as it
    scored its own validation rows: judged against its own reference it advances; the (large) KS against
    the stable model is reported as information."""
    retrained = np.random.default_rng(5).beta(2, 6, size=2_000)
    own = ScoreReference.from_scores(np.random.default_rng(6).beta(2, 6, size=5_000), threshold=0.3)
    verdict = review_phase(shadow_week(retrained), "shadow", "1", "2", CFG, reference=own)
    assert verdict.action == "advance", verdict.reason
    dist = next(c for c in verdict.checks if c.name == "score_distribution")
    assert dist.value is not None and dist.value <= CFG.max_score_ks
    ks_stable = float(dist.detail.split("vs the stable model (information): KS ")[1].split(",")[0])
    assert ks_stable > CFG.max_score_ks, dist.detail  # the old comparison would have rolled it back


def test_score_shift_away_from_its_own_reference_rolls_back_even_when_close_to_stable() -> None:
    """A broken feature pipeline can land the candidate's scores near the old model's while they are far
    from what the candidate produced at validation time: rolled back."""
    own = ScoreReference.from_scores(np.random.default_rng(6).beta(2, 6, size=5_000), threshold=0.3)
    verdict = review_phase(shadow_week(similar_scores()), "shadow", "1", "2", CFG, reference=own)
    assert verdict.action == "rollback" and "score_distribution" in verdict.reason
    assert "vs its own validation scores" in verdict.reason


def test_without_a_registered_reference_the_stable_model_is_the_yardstick() -> None:
    verdict = review_phase(shadow_week(similar_scores()), "shadow", "1", "2", CFG)
    dist = next(c for c in verdict.checks if c.name == "score_distribution")
    assert verdict.action == "advance" and "no score reference registered" in dist.detail
    broken = np.random.default_rng(3).beta(5, 2, size=2_000)
    assert review_phase(shadow_week(broken), "shadow", "1", "2", CFG).action == "rollback"


def test_manual_business_review_holds_at_canary_50() -> None:
    stable = rows("champion", "1", similar_scores())
    canary = rows("canary", "2", similar_scores(seed=2), start_id=10_001)
    week = pl.concat([stable, canary])
    held = review_phase(week, "canary_50", "1", "2", CFG, reference=REFERENCE, manual_review=True)
    assert held.action == "hold" and "churnops rollout approve" in held.reason
    assert all(c.passed for c in held.checks)
    assert review_phase(week, "canary_25", "1", "2", CFG, reference=REFERENCE, manual_review=True).action == (
        "advance"
    )
    auto = review_phase(week, "canary_50", "1", "2", CFG, reference=REFERENCE, manual_review=False)
    assert auto.action == "advance"


def test_outcomes_need_a_2_percent_gain_once_labels_exist() -> None:
    """The spec's rollback trigger: "< 2 % improvement or any regression" (candidate AUC vs the stable
    model's on the same labelled customers), read from the rollout's earlier weeks."""
    rng = np.random.default_rng(4)
    n = 2_000
    churned = (rng.random(n) < 0.1).astype(np.int8)
    noise = rng.normal(0, 0.05, n)
    fair = np.clip(0.08 + 0.15 * churned + 3 * noise, 0, 1)  # the stable model ranks fairly
    good = np.clip(0.08 + 0.4 * churned + noise, 0, 1)  # a model that ranks well
    outcomes = pl.DataFrame({"customer_id": np.arange(1, n + 1), "as_of": [AS_OF] * n, "churned": churned})
    cfg = RolloutCheckSettings(max_score_ks=1.0, max_positive_rate_shift=1.0)  # isolate the outcome check
    this_week = shadow_week(similar_scores())  # no labels yet for the current week

    def verdict(stable: np.ndarray, candidate: np.ndarray) -> tuple[str, str]:
        earlier = pl.concat([rows("champion", "1", stable), rows("shadow", "2", candidate)])
        v = review_phase(
            this_week, "canary_25", "1", "2", cfg, outcomes, reference=REFERENCE, outcome_predictions=earlier
        )
        return v.action, v.reason

    assert verdict(fair, good)[0] == "advance"
    action, reason = verdict(good, good)  # no gain: rolled back
    assert action == "rollback" and "outcomes" in reason and "+0.0%" in reason
    assert verdict(good, fair)[0] == "rollback"  # a regression
    # Before any label window closed, the check waits (passes as "not yet available").
    waiting = review_phase(this_week, "canary_25", "1", "2", cfg, None, reference=REFERENCE)
    outcome = next(c for c in waiting.checks if c.name == "outcomes")
    assert waiting.action == "advance" and "no realised labels yet" in outcome.detail


def test_no_rollout_means_nothing_to_review() -> None:
    verdict = review_phase(shadow_week(similar_scores()), "none", "1", None, CFG)
    assert verdict.action == "none" and verdict.checks == []


def test_business_impact_compares_canary_and_control_churn_with_ci_and_p_value() -> None:
    rng = np.random.default_rng(11)
    n_c, n_s = 3_000, 6_000
    canary = rows("canary", "2", similar_scores(n_c), start_id=1)
    control = rows("champion", "1", similar_scores(n_s), start_id=n_c + 1)
    churned = np.concatenate([rng.random(n_c) < 0.05, rng.random(n_s) < 0.10]).astype(np.int8)
    outcomes = pl.DataFrame(
        {"customer_id": np.arange(1, n_c + n_s + 1), "as_of": [AS_OF] * (n_c + n_s), "churned": churned}
    )
    impact = business_impact(pl.concat([canary, control]), "1", "2", outcomes)
    assert (impact.canary_customers, impact.control_customers) == (n_c, n_s)
    assert impact.difference is not None and impact.ci_low is not None and impact.ci_high is not None
    assert impact.ci_low < impact.difference < impact.ci_high < 0  # the canary group churns less
    assert impact.p_value is not None and impact.p_value < 0.001
    same = np.concatenate([rng.random(n_c) < 0.08, rng.random(n_s) < 0.08]).astype(np.int8)
    null = business_impact(pl.concat([canary, control]), "1", "2", outcomes.with_columns(churned=same))
    assert null.ci_low is not None and null.ci_high is not None and null.ci_low < 0 < null.ci_high
    assert business_impact(pl.concat([canary, control]), "1", "2", None).note == "no realised labels yet"
