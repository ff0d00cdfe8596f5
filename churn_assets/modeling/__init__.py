"""Model training, tuning, evaluation, tracking and registry of churnops (see docs/modeling.md).

One module per concern: ``splits`` (train/val/test assignment + input validation), ``candidates``
(LightGBM + scikit-learn baselines), ``tuning`` (Optuna), ``evaluation`` (metrics, threshold,
calibration, SHAP, fairness), ``gates`` (the seven gates' typed measurements and rules), ``plots``,
``tracking`` (MLflow runs), ``registry`` (versions, aliases, promotion), ``audit`` (append-only
decision log), ``workdir`` (the training work folder's files), ``candidate_stage`` and
``challenger_stage`` (the training graph's steps), ``train_table`` (the steps in one call, for a
bring-your-own CSV or frame).

The re-exports below are resolved lazily (PEP 562): importing a light submodule such as
``churn_assets.modeling.paths`` must not pull in scikit-learn (the Dagster code location imports it).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from churn_assets.modeling import splits

        return getattr(splits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
