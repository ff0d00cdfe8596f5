"""Performance monitoring: CBPE against realised AUC on calibrated scores, trend words, history."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churn_assets.monitoring import history
from churn_assets.monitoring.performance import (
    PerformanceInputError,
    WeekPerformance,
    estimate_performance,
    expected_auc,
    realised_metrics,
    trend_labels,
    trend_table,
)
from tests.monitoring_helpers import scores_and_labels


def _pairwise(p: np.ndarray) -> float:
    w = p[:, None] * (1 - p)[None, :]
    np.fill_diagonal(w, 0)
    wins = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    return float((w * wins).sum() / w.sum())


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_expected_auc_equals_the_pairwise_definition_with_ties(decimals: int | None) -> None:
    p = np.random.default_rng(2).beta(1.0, 6.0, 800)
    if decimals is not None:
        p = np.round(p, decimals)
    assert expected_auc(p) == pytest.approx(_pairwise(p), abs=1e-12)


def test_cbpe_matches_the_realised_auc_of_calibrated_scores() -> None:
    p, y = scores_and_labels(40_000, seed=11)
    threshold = 0.2
    est = estimate_performance(p, threshold)
    real = realised_metrics(y, p, threshold)
    assert real["auc"] == pytest.approx(roc_auc_score(y, p))
    # Standard error of an AUC on ~5,000 positives is ~0.004; of recall/precision ~0.007.
    assert est["auc"] == pytest.approx(real["auc"], abs=0.015)
    for key in ("recall", "precision", "f1"):
        assert est[key] == pytest.approx(real[key], abs=0.03), key


def test_cbpe_misses_concept_shift_which_the_realised_auc_shows() -> None:
    p, _ = scores_and_labels(20_000, seed=4)
    y_shifted = (np.random.default_rng(9).random(p.size) < np.sqrt(p) * 0.3).astype(int)  # P(y|score) changed
    est = estimate_performance(p, 0.2)["auc"]
    real = realised_metrics(y_shifted, p, 0.2)["auc"]
    assert est - real > 0.05


def test_bad_scores_or_labels_are_named() -> None:
    with pytest.raises(PerformanceInputError, match="within \\[0, 1\\]"):
        estimate_performance(np.array([0.2, 1.4]), 0.5)
    with pytest.raises(PerformanceInputError, match="0 or 1"):
        realised_metrics(np.array([0, 2]), np.array([0.1, 0.9]), 0.5)
    with pytest.raises(PerformanceInputError, match="2 labels for 3 scores"):
        realised_metrics(np.array([0, 1]), np.array([0.1, 0.9, 0.3]), 0.5)


def test_trend_words_follow_the_decay() -> None:
    words = trend_labels([0.84, 0.835, 0.825, 0.79, 0.76], threshold=0.78, decay_warning=0.02)
    assert words == ["Baseline", "Stable", "Slight decay", "Decay accelerating ⚠", "Below threshold 🔴"]


def _week(i: int, est: float, auc: float | None = None) -> WeekPerformance:
    week = dt.date(2025, 9, 8) + dt.timedelta(days=7 * i)
    return WeekPerformance(
        week.isoformat(), (week + dt.timedelta(days=7)).isoformat(), "1", 1000, est, 0.5, 0.4, 0.44,
        auc, None if auc is None else 0.6, None if auc is None else 0.5, None if auc is None else 0.55, 80,
    )  # fmt: skip


def test_trend_table_uses_realised_values_when_labelled() -> None:
    rows = trend_table([_week(1, 0.835), _week(0, 0.85, 0.84)], threshold=0.78, decay_warning=0.02)
    assert [r["week"] for r in rows] == ["2025-09-08", "2025-09-15"]
    assert rows[0]["AUC"] == "0.840" and rows[0]["trend"] == "Baseline" and rows[0]["recall"] == "0.600"
    assert rows[1]["AUC"] == "—" and rows[1]["trend"] == "Stable (est.)" and rows[1]["recall"] == "0.500"


def test_performance_history_round_trip_replaces_a_week() -> None:
    con = duckdb.connect()
    history.save_performance(con, _week(0, 0.85))
    history.save_performance(con, _week(0, 0.85, 0.81), labelled_in_week=dt.date(2025, 12, 15))
    history.save_performance(con, _week(1, 0.83))
    stored = history.performance_history(con)
    assert [(w.week, w.labelled) for w in stored] == [("2025-09-08", True), ("2025-09-15", False)]
    assert stored[0].auc == pytest.approx(0.81) and stored[0].positives == 80
