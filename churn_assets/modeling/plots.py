"""PNG plots of a trained model (matplotlib, Agg backend — no display needed).

Each function writes one file and returns its path: ROC curve, calibration (reliability) curve,
feature importance (LightGBM gain or permutation-free model importances) and a SHAP summary bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import RocCurveDisplay

from churn_assets.modeling.evaluation import reliability_curve


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_plot(y: Any, p: Any, path: Path, label: str = "model") -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(np.asarray(y), np.asarray(p), name=label, ax=ax, plot_chance_level=True)
    ax.set_title("ROC curve (test)")
    return _save(fig, path)


def calibration_plot(y: Any, p: Any, path: Path, label: str = "model") -> Path:
    curve = reliability_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    ax.plot(curve.mean_predicted, curve.observed_rate, "o-", label=label)
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title="Reliability (test)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def importance_plot(
    importance: pd.Series, path: Path, title: str = "Feature importance", top: int = 20
) -> Path:
    data = importance.sort_values(ascending=False).iloc[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.3 * len(data) + 1)))
    ax.barh(data.index.astype(str), data.to_numpy())
    ax.set_title(title)
    return _save(fig, path)


def shap_bar_plot(mean_abs_shap: pd.Series, path: Path, top: int = 20) -> Path:
    return importance_plot(mean_abs_shap, path, title="SHAP summary: mean |SHAP value| (test)", top=top)
