"""Which registered model versions use which features, and the features' lifecycle (``churnops features
usage``, ``churnops features list``, the ``features_not_deprecated`` check).

Joins the dependency records of the warehouse (``feature_store.registry``: written when a version is
registered) with the MLflow registry's aliases of every model recorded there — the production model and any
other model built from the feature store (e.g. ``churn-30d``, ``modeling.horizon_model``) — and judges each
feature with ``feature_store.lifecycle`` at the simulated clock.
"""

from __future__ import annotations

from typing import Any

from churn_assets.feature_store.definitions import FEATURE_GROUPS, all_features, resolve
from churn_assets.feature_store.lifecycle import (
    AliasedVersion,
    FeatureLifecycle,
    feature_clock,
    feature_lifecycle,
    refresh_lifecycle,
)
from churn_assets.feature_store.registry import dependency_rows
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse


def aliased_versions(settings: Settings, model_names: list[str]) -> list[AliasedVersion]:
    """The versions holding an alias now, across ``model_names``."""
    return [v for name in model_names for v in ModelRegistry(settings, name).aliased_versions()]


def _model_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model_name"] for r in rows))


def lifecycle(settings: Settings) -> tuple[str | None, list[FeatureLifecycle]]:
    """``(now, verdicts)`` without writing anything; ``(None, [])`` when there is no warehouse yet."""
    if not settings.warehouse_path.exists():
        return None, []
    with Warehouse.of(settings).connect(read_only=True) as con:
        rows = dependency_rows(con)
        now = feature_clock(con)
        verdicts = feature_lifecycle(
            con,
            aliased_versions(settings, _model_names(rows)),
            now,
            settings.feature_store.deprecate_after_days,
        )
    return now.isoformat(), verdicts


def refresh(settings: Settings) -> tuple[str, list[FeatureLifecycle]]:
    """Observe the aliased versions' features at the simulated clock and store every feature's verdict
    (the ``features_not_deprecated`` check; online materialization retires what it stored as deprecated)."""
    with Warehouse.of(settings).connect() as con:
        rows = dependency_rows(con)
        now = feature_clock(con)
        verdicts = refresh_lifecycle(
            con,
            aliased_versions(settings, _model_names(rows)),
            now,
            settings.feature_store.deprecate_after_days,
        )
    return now.isoformat(), verdicts


def feature_usage(settings: Settings, feature: str | None = None) -> dict[str, Any]:
    """Registered versions using each feature (or only ``feature``: a name or ``group:feature``).

    Returns ``{"now", "deprecate_after_days", "features": [...], "groups": [...]}``. Each feature:
    ``feature, group, status, last_used_at, days_unused, versions`` where each version is ``model_name,
    model_version, semver, aliases, recorded_at``. ``groups``: per feature group, the models whose versions
    use at least one of its features and ``shared`` (more than one model). Unknown features raise
    ``KeyError``.
    """
    wanted = None
    if feature is not None:
        if feature in {g.name for g in FEATURE_GROUPS}:
            raise KeyError(f"{feature!r} is a feature group; name one of its features")
        if ":" not in feature and feature not in {f.name for f in all_features()}:
            raise KeyError(f"unknown feature {feature!r}")
        [names] = resolve([feature]).values()
        wanted = names[0]
    rows: list[dict[str, Any]] = []
    if settings.warehouse_path.exists():
        with Warehouse.of(settings).connect(read_only=True) as con:
            rows = dependency_rows(con)
    now, verdicts = lifecycle(settings)
    registries = {name: ModelRegistry(settings, name) for name in _model_names(rows)}
    aliases: dict[tuple[str, str], list[str]] = {}
    semver: dict[tuple[str, str], str | None] = {}
    for name, registry in registries.items():
        for alias, version in registry.aliases().items():
            aliases.setdefault((name, version), []).append(alias)
        for mv in registry.versions():
            semver[(name, str(mv.version))] = mv.tags.get("semver")
    by_feature: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["model_name"], r["model_version"])
        by_feature.setdefault(r["feature"], []).append(
            {
                "model_name": r["model_name"],
                "model_version": r["model_version"],
                "semver": semver.get(key),
                "aliases": aliases.get(key, []),
                "recorded_at": r["recorded_at"].isoformat(),
            }
        )
    verdict = {v.feature: v for v in verdicts}
    features = []
    for g in FEATURE_GROUPS:
        for f in g.features:
            if wanted is not None and f.name != wanted:
                continue
            v = verdict.get(f.name)
            features.append(
                {
                    "feature": f.name,
                    "group": g.name,
                    "status": v.status if v else None,
                    "last_used_at": v.last_used_at.isoformat() if v and v.last_used_at else None,
                    "days_unused": v.days_unused if v else None,
                    "versions": by_feature.get(f.name, []),
                }
            )
    groups = []
    for g in FEATURE_GROUPS:
        models = list(dict.fromkeys(r["model_name"] for r in rows if r["group_name"] == g.name))
        groups.append({"group": g.name, "models": models, "shared": len(models) > 1})
    return {
        "now": now,
        "deprecate_after_days": settings.feature_store.deprecate_after_days,
        "features": features,
        "groups": groups,
    }
