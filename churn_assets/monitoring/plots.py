"""Monitoring plots (PNG, matplotlib Agg): overlay histograms of drifted features, the AUC trend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from churn_assets.modeling.plots import _save
from churn_assets.monitoring.drift import NULL, FeatureDrift
from churn_assets.monitoring.performance import WeekPerformance


def drift_histograms(
    reference: pl.DataFrame, current: pl.DataFrame, drifted: Sequence[FeatureDrift], path: Path
) -> Path | None:
    """One panel per drifted feature: reference vs current, as shares (numeric: shared bins over the
    pooled 1st-99th percentiles; categorical: the top 12 categories). None when nothing drifted."""
    if not drifted:
        return None
    cols = min(3, len(drifted))
    rows = math.ceil(len(drifted) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, f in zip(axes.flat, drifted, strict=False):
        ref, cur = reference.get_column(f.feature), current.get_column(f.feature)
        if f.kind == "numeric":
            r = ref.cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            c = cur.cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            lo, hi = np.quantile(np.r_[r, c], [0.01, 0.99]) if r.size + c.size else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
            ax.hist(r, bins=bins, weights=np.full(r.size, 1 / max(r.size, 1)), alpha=0.5, label="reference")
            ax.hist(c, bins=bins, weights=np.full(c.size, 1 / max(c.size, 1)), alpha=0.5, label="current")
        else:
            rs = ref.cast(pl.String).fill_null(NULL).value_counts(normalize=True)
            cs = cur.cast(pl.String).fill_null(NULL).value_counts(normalize=True)
            name = rs.columns[0]
            shares = rs.join(cs, on=name, how="full", coalesce=True, suffix="_cur").fill_null(0)
            shares = shares.sort(pl.max_horizontal("proportion", "proportion_cur"), descending=True).head(12)
            x = np.arange(shares.height)
            ax.bar(x - 0.2, shares["proportion"].to_numpy(), 0.4, label="reference")
            ax.bar(x + 0.2, shares["proportion_cur"].to_numpy(), 0.4, label="current")
            ax.set_xticks(x, shares[name].to_list(), rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{f.feature} ({f.severity}, score {f.effect:.3f})", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(drifted) :]:
        ax.axis("off")
    return _save(fig, path)


def auc_trend(weeks: Sequence[WeekPerformance], threshold: float, path: Path) -> Path | None:
    """Realised and estimated AUC per prediction week, with the retraining threshold."""
    if not weeks:
        return None
    ordered = sorted(weeks, key=lambda w: w.week)
    x = [w.week for w in ordered]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(x, [w.estimated_auc for w in ordered], "o--", label="estimated (CBPE)")
    realised = [w.auc if w.auc is not None and w.labelled else np.nan for w in ordered]
    ax.plot(x, realised, "o-", label="realised")
    ax.axhline(threshold, color="red", lw=1, label=f"threshold {threshold}")
    ax.set(ylabel="AUC", title="Champion AUC by prediction week")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend(fontsize=8)
    return _save(fig, path)
