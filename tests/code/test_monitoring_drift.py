"""The drift rule on generic data: fast KS == scipy, stable -> no alert, shifted -> caught, root cause."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp

from churn_assets.monitoring import history
from churn_assets.monitoring.drift import (
    DriftInputError,
    NumericReference,
    detect_drift,
    ks_2samp_fast,
    profile_reference,
    root_cause,
    severity,
)
from churn_assets.settings import MonitoringSettings

CFG = MonitoringSettings(exclude_features=[])


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (lambda r: r.normal(size=60_000), lambda r: r.normal(0.02, 1, 12_000)),  # asymptotic branch
        (lambda r: r.integers(0, 12, 80_000), lambda r: r.integers(0, 13, 15_000)),  # heavy ties
        (lambda r: r.poisson(1.5, 4_000), lambda r: r.poisson(1.6, 3_000)),  # scipy's exact branch
    ],
)
def test_fast_ks_equals_scipy(ref, cur) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    a, b = ref(rng).astype(float), cur(rng).astype(float)
    expected = ks_2samp(a, b)
    stat, p = ks_2samp_fast(NumericReference.from_values(a), b)
    assert stat == expected.statistic and p == expected.pvalue


def _frames(n_ref: int, n_cur: int, shifts: dict[str, float], n_stable: int = 25, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    ref, cur = {}, {}
    for i in range(n_stable):
        ref[f"stable_{i}"] = rng.normal(size=n_ref)
        cur[f"stable_{i}"] = rng.normal(size=n_cur)
    for name, shift in shifts.items():
        ref[name] = rng.normal(size=n_ref)
        cur[name] = rng.normal(shift, 1, n_cur)
    channels = ["online", "retail", "partner"]
    ref["channel"] = rng.choice(channels, n_ref)
    cur["channel"] = rng.choice(channels, n_cur)
    return pl.DataFrame(ref), pl.DataFrame(cur)


def test_stable_columns_raise_no_alert_and_shifted_ones_are_caught() -> None:
    ref, cur = _frames(200_000, 20_000, {"big": 0.5, "medium": 0.3})
    profile = profile_reference(ref, ref.columns)
    report = detect_drift(profile, cur, CFG)
    assert report.alpha_adjusted == pytest.approx(0.01 / len(ref.columns))
    assert set(report.drifted_features) == {"big", "medium"}
    assert report.drifted[0].feature == "big"  # most severe first
    assert {f.severity for f in report.drifted} <= {"LOW", "MEDIUM", "HIGH"}
    assert report.max_severity in ("MEDIUM", "HIGH")
    table = report.table()
    assert table[0]["feature"] == "big" and table[0]["status"] != "✓ OK"
    assert [r["status"] for r in table[2:]] == ["✓ OK"] * (len(table) - 2)


def test_a_significant_but_trivial_shift_is_not_an_alert() -> None:
    # 0.04 sd at 200k vs 50k rows: p ~ 1e-10 (far below the Bonferroni alpha), KS ~ 0.016 < 0.1.
    ref, cur = _frames(200_000, 50_000, {"tiny": 0.04}, n_stable=2)
    report = detect_drift(profile_reference(ref, ref.columns), cur, CFG)
    tiny = next(f for f in report.features if f.feature == "tiny")
    assert tiny.p_value < report.alpha_adjusted and tiny.effect < CFG.ks_floor
    assert not tiny.drifted and report.drifted_features == []


def test_a_new_category_is_caught_by_chi_square_and_psi() -> None:
    ref, cur = _frames(50_000, 20_000, {}, n_stable=1)
    rng = np.random.default_rng(1)
    cur = cur.with_columns(
        pl.when(pl.Series(rng.random(cur.height) < 0.15))
        .then(pl.lit("campaign"))
        .otherwise(pl.col("channel"))
        .alias("channel")
    )
    report = detect_drift(profile_reference(ref, ref.columns), cur, CFG)
    [channel] = [f for f in report.features if f.feature == "channel"]
    assert channel.test == "chi-square" and channel.drifted and channel.effect >= CFG.psi_floor


def test_severity_grows_with_the_effect() -> None:
    assert [severity(x, 0.1, CFG) for x in (0.05, 0.1, 0.149, 0.15, 0.249, 0.25)] == [
        "NONE", "LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH",
    ]  # fmt: skip


def test_importance_gives_the_impact_and_exclusions_are_reported() -> None:
    ref, cur = _frames(30_000, 10_000, {"big": 0.6}, n_stable=3)
    cfg = MonitoringSettings(exclude_features=["stable_0"])
    importance = {"big": 5.0, "stable_1": 3.0, "stable_2": 1.0, "channel": 1.0}
    report = detect_drift(profile_reference(ref, ref.columns), cur, cfg, importance)
    big = report.drifted[0]
    assert big.importance_rank == 1 and big.importance == pytest.approx(0.5)
    assert "high model impact" in big.impact and "rank 1" in big.impact
    assert report.excluded == ["stable_0"] and "stable_0" not in [f.feature for f in report.features]


def test_root_cause_names_the_segment_the_shift_comes_from() -> None:
    rng = np.random.default_rng(5)
    n_ref, n_cur = 40_000, 10_000
    ref = pl.DataFrame(
        {"amount": rng.normal(50, 10, n_ref), "channel": rng.choice(["online", "retail"], n_ref)}
    )
    campaign = rng.random(n_cur) < 0.2
    amount = np.where(campaign, rng.normal(90, 10, n_cur), rng.normal(50, 10, n_cur))
    channel = np.where(campaign, "campaign", rng.choice(["online", "retail"], n_cur))
    cur = pl.DataFrame({"amount": amount, "channel": channel})
    profile = profile_reference(ref, ["amount"])
    report = detect_drift(profile, cur, CFG)
    cause = root_cause(ref, profile, cur, report, ["channel"])
    assert cause is not None and cause["explains"]
    assert (cause["segment"], cause["value"]) == ("channel", "campaign")
    assert cause["share_reference"] == 0.0 and cause["share_current"] == pytest.approx(0.2, abs=0.02)
    assert cause["explained"] > 0.8 and "channel = campaign" in cause["hint"]


def test_bad_inputs_name_the_feature() -> None:
    ref, cur = _frames(1_000, 500, {}, n_stable=2)
    profile = profile_reference(ref, ref.columns)
    with pytest.raises(DriftInputError, match="stable_1"):
        detect_drift(profile, cur.drop("stable_1"), CFG)
    with pytest.raises(DriftInputError, match="empty"):
        detect_drift(profile, cur.head(0), CFG)
    with pytest.raises(DriftInputError, match="missing_col"):
        profile_reference(ref, ["missing_col"])


def test_drift_history_keeps_one_set_of_rows_per_week() -> None:
    ref, cur = _frames(5_000, 2_000, {"big": 0.8}, n_stable=2)
    report = detect_drift(profile_reference(ref, ref.columns), cur, CFG)
    con = duckdb.connect()
    week = dt.date(2025, 9, 8)
    history.save_drift(con, week, week + dt.timedelta(days=7), "3", report)
    history.save_drift(con, week, week + dt.timedelta(days=7), "3", report)  # recomputed: replaced
    history.save_drift(con, week + dt.timedelta(days=7), week + dt.timedelta(days=14), "3", report)
    rows = history.drift_history(con)
    assert rows.height == 2 * len(report.features)
    runs = history.drift_runs(con)
    assert runs.get_column("n_drifted").to_list() == [1, 1]
    assert history.drift_history(con, "big").get_column("drifted").to_list() == [True, True]
