"""Rollout phase checks (automation/rollout_checks.py): pass -> advance, regression -> rollback."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from churn_assets.automation.rollout_checks import review_phase
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


def test_passing_phase_advances() -> None:
    verdict = review_phase(shadow_week(similar_scores()), "shadow", "1", "2", CFG)
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
    verdict = review_phase(shadow_week(similar_scores(50)), "shadow", "1", "2", CFG)
    assert verdict.action == "hold" and "too few" in verdict.reason


def test_latency_regression_rolls_back() -> None:
    verdict = review_phase(shadow_week(similar_scores(), latency=500.0), "shadow", "1", "2", CFG)
    assert verdict.action == "rollback" and "latency" in verdict.reason


def test_latency_ratio_rolls_back_above_the_floor_only() -> None:
    """Stable 2 ms: a 5 ms candidate (2.5x) rolls back. Batch rows at 0.01 vs 0.07 ms per row (a small
    canary batch amortises less fixed cost) are under the 1 ms floor: no ratio verdict."""
    verdict = review_phase(shadow_week(similar_scores(), latency=5.0), "shadow", "1", "2", CFG)
    assert verdict.action == "rollback" and "latency" in verdict.reason
    stable = rows("champion", "1", similar_scores(), latency=0.01)
    canary = rows("canary", "2", similar_scores(), latency=0.07)
    verdict = review_phase(pl.concat([stable, canary]), "canary_5", "1", "2", CFG)
    latency = next(c for c in verdict.checks if c.name == "latency")
    assert latency.passed and verdict.action == "advance", verdict.reason


def test_invalid_scores_count_as_errors_and_roll_back() -> None:
    scores = similar_scores()
    scores[:10] = np.nan
    verdict = review_phase(shadow_week(scores), "shadow", "1", "2", CFG)
    assert verdict.action == "rollback" and "error_rate" in verdict.reason


def test_shifted_prediction_distribution_rolls_back() -> None:
    broken = np.random.default_rng(3).beta(5, 2, size=2_000)  # a model that calls most customers churners
    verdict = review_phase(shadow_week(broken), "canary_5", "1", "2", CFG)
    assert verdict.action == "rollback" and "score_distribution" in verdict.reason


def test_outcome_regression_rolls_back_once_labels_exist() -> None:
    rng = np.random.default_rng(4)
    n = 2_000
    churned = (rng.random(n) < 0.1).astype(np.int8)
    good = np.clip(0.08 + 0.4 * churned + rng.normal(0, 0.05, n), 0, 1)  # the stable model ranks well
    noise = np.clip(rng.beta(1, 9, n), 0, 1)  # the candidate ranks at random (same distribution family)
    frame = pl.concat([rows("champion", "1", good), rows("shadow", "2", noise)])
    outcomes = pl.DataFrame({"customer_id": np.arange(1, n + 1), "as_of": [AS_OF] * n, "churned": churned})
    cfg = RolloutCheckSettings(max_score_ks=1.0, max_positive_rate_shift=1.0)  # isolate the outcome check
    verdict = review_phase(frame, "canary_25", "1", "2", cfg, outcomes)
    assert verdict.action == "rollback" and "outcomes" in verdict.reason
    same = review_phase(
        pl.concat([rows("champion", "1", good), rows("shadow", "2", good)]),
        "canary_25",
        "1",
        "2",
        cfg,
        outcomes,
    )
    assert same.action == "advance"


def test_no_rollout_means_nothing_to_review() -> None:
    verdict = review_phase(shadow_week(similar_scores()), "none", "1", None, CFG)
    assert verdict.action == "none" and verdict.checks == []
