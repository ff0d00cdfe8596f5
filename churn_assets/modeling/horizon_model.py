"""A second model built from the same feature store: churn within 30 days (``churn-30d``).

It reuses three of the production model's feature groups (account, usage, engagement) — the feature
sharing of the spec's feature governance: both models' versions are recorded as dependents of those
groups' features (``churnops features usage``), and its Dagster asset ``churn_30d/model`` depends on
those three feature assets only (the lineage). It is trained like a bring-your-own table
(:func:`~churn_assets.modeling.train_table.train_and_register`: tuned LightGBM vs baselines, calibration,
gates, promotion on its own registered model): labels "cancelled within 30 days of the as-of date" over
the same monthly snapshots and split periods as the production model, features read point-in-time from
the offline store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from churn_assets.feature_store.definitions import feature_group
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline

if TYPE_CHECKING:
    from churn_assets.modeling.train_table import TrainingReport

# The training library is imported inside train_shared_feature_model: the Dagster code location imports
# this module for the model's declaration only (docs/automation.md, "Where the time goes").


@dataclass(frozen=True)
class SharedFeatureModel:
    """A registered model other than the production one, trained on some of the store's feature groups."""

    name: str
    horizon_days: int
    groups: tuple[str, ...]
    description: str

    @property
    def features(self) -> list[str]:
        return [f for g in self.groups for f in feature_group(g).feature_names]


CHURN_30D = SharedFeatureModel(
    name="churn-30d",
    horizon_days=30,
    groups=("customer_account", "customer_usage", "customer_engagement"),
    description="Churn within 30 days (early-warning horizon) from the account, usage and engagement groups.",
)


def train_shared_feature_model(
    settings: Settings,
    model: SharedFeatureModel = CHURN_30D,
    n_trials: int | None = None,
    baselines: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    actor: str = "system",
) -> TrainingReport:
    """Build ``model``'s training set from the offline store, train, register and decide its promotion.

    ``n_trials`` / ``baselines``: default ``modeling.n_trials`` / ``modeling.baselines``."""
    from churn_assets.modeling.splits import build_splits
    from churn_assets.modeling.train_table import no_progress, train_and_register
    from churn_assets.modeling.training_set import build_training_table, check_training_set, model_inputs

    timeline = Timeline.from_settings(settings.simulation)
    with Warehouse.of(settings).connect() as con:
        table, meta = build_training_table(con, timeline, settings, horizon_days=model.horizon_days)
    check_training_set(meta)
    X, y, assignment = model_inputs(table.to_pandas())
    splits = build_splits(X, y, assignment, features=model.features)
    return train_and_register(
        splits,
        settings,
        meta["sha256"],
        n_trials=n_trials,
        baselines=tuple(settings.modeling.baselines if baselines is None else baselines),
        study_name=f"{settings.modeling.study_name}-{model.name}-{meta['sha256'][:8]}",
        progress=progress or no_progress,
        actor=actor,
        model_name=model.name,
    )
