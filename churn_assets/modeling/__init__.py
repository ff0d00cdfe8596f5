"""Model training, tuning, evaluation, tracking and registry of churnops (see docs/modeling.md).

One module per concern: ``splits`` (train/val/test assignment + input validation), ``candidates``
(LightGBM + scikit-learn baselines), ``tuning`` (Optuna), ``evaluation`` (metrics, threshold,
calibration, SHAP, fairness, stress slices, gates), ``plots``, ``tracking`` (MLflow runs),
``registry`` (versions, aliases, promotion), ``audit`` (append-only decision log), ``pipeline`` (one
training run end to end), ``train_table`` (bring-your-own CSV).
"""

from churn_assets.modeling.splits import (
    Splits,
    TrainingDataError,
    assign_by_period,
    assign_by_time_share,
    assign_stratified,
    build_splits,
)

__all__ = [
    "Splits",
    "TrainingDataError",
    "assign_by_period",
    "assign_by_time_share",
    "assign_stratified",
    "build_splits",
]
