"""Feature governance: dependencies recorded at registration, `churnops features usage`, deprecation after
`feature_store.deprecate_after_days` at the simulated clock (the newest offline snapshot), the WARN check
and the retirement of deprecated features from online-store materialization.

The feature store is synthetic (random snapshots written to a real DuckDB offline store); the registry is
the real MLflow registry of a temporary home; the clock advances by writing newer snapshots.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from churn_assets.defs.assets.features import online_features
from churn_assets.defs.feature_checks import features_not_deprecated
from churn_assets.defs.keys import FEATURES_NOT_DEPRECATED
from churn_assets.defs.resources import build_resources
from churn_assets.feature_store.definitions import FEATURE_GROUPS, feature_group
from churn_assets.feature_store.lifecycle import (
    DEPRECATED,
    IN_USE,
    UNTRACKED,
    AliasedVersion,
    deprecated_features,
    feature_lifecycle,
    refresh_lifecycle,
)
from churn_assets.feature_store.offline import OfflineStore
from churn_assets.feature_store.online import make_online_store
from churn_assets.feature_store.registry import record_model_features
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.training_set import feature_names
from churn_assets.settings import FeatureStoreSettings, Settings, SimulationSettings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline
from tests.code.test_cli import assert_one_line_error, churnops, json_document
from tests.feature_helpers import random_group_frame

COHORT = feature_group("customer_cohort").feature_names
ALL = feature_names()
WITHOUT_COHORT = [f for f in ALL if f not in COHORT]
CUSTOMERS = list(range(1, 21))
T0 = dt.datetime.combine(
    Timeline.from_settings(SimulationSettings()).week_start(60), dt.time()
)  # a Monday of the simulated history


def test_lifecycle_rule_on_a_simulated_clock() -> None:
    """v1 uses every feature, v2 drops the cohort group; once v1 holds no alias its cohort features are
    deprecated exactly `deprecate_after_days` after they were last used."""
    import duckdb

    con = duckdb.connect()
    assert {v.status for v in feature_lifecycle(con, [], T0, 90)} == {UNTRACKED}
    record_model_features(con, "m", "1", ALL, recorded_at=T0)
    record_model_features(con, "m", "2", WITHOUT_COHORT, recorded_at=T0 + dt.timedelta(days=7))
    week = dt.timedelta(days=7)
    refresh_lifecycle(con, [AliasedVersion("m", "1", ("champion",))], T0, 90)
    refresh_lifecycle(
        con, [AliasedVersion("m", "2", ("champion",)), AliasedVersion("m", "1", ("previous",))], T0 + week, 90
    )
    last_used = T0 + 2 * week
    refresh_lifecycle(
        con, [AliasedVersion("m", "2", ("champion",)), AliasedVersion("m", "1", ("previous",))], last_used, 90
    )
    now_aliased = [AliasedVersion("m", "3", ("champion",)), AliasedVersion("m", "2", ("previous",))]
    record_model_features(con, "m", "3", WITHOUT_COHORT, recorded_at=last_used)
    before = refresh_lifecycle(con, now_aliased, last_used + dt.timedelta(days=89), 90)
    assert {v.status for v in before if v.feature in COHORT} == {"active"}
    assert deprecated_features(con) == {}
    at = refresh_lifecycle(con, now_aliased, last_used + dt.timedelta(days=90), 90)
    by = {v.feature: v for v in at}
    assert {by[f].status for f in COHORT} == {DEPRECATED}
    assert {by[f].status for f in WITHOUT_COHORT} == {IN_USE}
    assert by[COHORT[0]].last_used_at == last_used and by[COHORT[0]].days_unused == 90
    assert by[WITHOUT_COHORT[0]].used_by == ("m v3 (champion)", "m v2 (previous)")
    assert deprecated_features(con) == {"customer_cohort": sorted(COHORT)}
    # A version using them again brings them back into use.
    back = refresh_lifecycle(
        con, [AliasedVersion("m", "1", ("challenger",))], last_used + dt.timedelta(days=91), 90
    )
    assert {v.status for v in back if v.feature in COHORT} == {IN_USE}


def _write_snapshot(settings: Settings, at: dt.datetime) -> None:
    with Warehouse.of(settings).connect() as con:
        store = OfflineStore(con)
        for i, group in enumerate(FEATURE_GROUPS):
            store.write(group.name, random_group_frame(group, CUSTOMERS, [at], seed=i + at.toordinal()))


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Three production versions (v1: all features; v2, v3: no cohort group) promoted one after the other
    as the simulated clock advances a week each, and a second model (`churn-30d`) on two shared groups."""
    home = tmp_path_factory.mktemp("governance")
    settings = Settings(home=home, feature_store=FeatureStoreSettings(retire_deprecated=True))
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200)})
    y = (X["x"] + rng.normal(size=200) > 0).astype(int)
    tracking = configure(settings)
    registry = ModelRegistry(settings)
    for week, (features, auc) in enumerate(((ALL, 0.80), (WITHOUT_COHORT, 0.85), (WITHOUT_COHORT, 0.90))):
        _write_snapshot(settings, T0 + dt.timedelta(days=7 * week))
        model = LogisticRegression(C=1.0 + week).fit(X, y)
        logged = log_candidate_run(tracking, f"lr-{week}", model, "sklearn", {}, {"auc": auc})
        v = registry.register(logged, features, "d" * 64, {"auc": auc}, [])
        champion = registry.version_by_alias("champion")
        registry.consider(v.version, auc, None if champion is None else auc - 0.1, [])
    shared = feature_group("customer_usage").feature_names + feature_group("customer_account").feature_names
    logged = log_candidate_run(
        tracking, "lr-30d", LogisticRegression().fit(X, y), "sklearn", {}, {"auc": 0.7}
    )
    other = ModelRegistry(settings, name="churn-30d")
    v30 = other.register(logged, shared, "e" * 64, {"auc": 0.7}, [])
    other.consider(v30.version, 0.7, None, [])
    return settings


def _cli(settings: Settings, *args: str) -> Any:
    return json_document(churnops(*args, "--json", home=settings.home))


def test_registration_records_dependencies_and_usage_shows_versions_and_aliases(governed) -> None:  # type: ignore[no-untyped-def]
    settings = governed
    usage = _cli(settings, "features", "usage", "tenure_days")
    [f] = usage["features"]
    assert f["feature"] == "tenure_days" and f["group"] == "customer_account" and f["status"] == IN_USE
    versions = {(v["model_name"], v["model_version"]): v for v in f["versions"]}
    assert set(versions) == {
        ("churn-model", "1"),
        ("churn-model", "2"),
        ("churn-model", "3"),
        ("churn-30d", "1"),
    }
    assert versions[("churn-model", "3")]["aliases"] == ["champion"]
    assert versions[("churn-model", "2")]["aliases"] == ["previous"]
    assert (
        versions[("churn-model", "1")]["aliases"] == []
        and versions[("churn-model", "1")]["semver"] == "1.0.0"
    )
    assert versions[("churn-30d", "1")]["aliases"] == ["champion"]
    cohort = _cli(settings, "features", "usage", COHORT[0])["features"][0]
    assert [(v["model_name"], v["model_version"]) for v in cohort["versions"]] == [("churn-model", "1")]
    groups = {g["group"]: g for g in _cli(settings, "features", "usage")["groups"]}
    assert groups["customer_usage"] == {
        "group": "customer_usage",
        "models": ["churn-30d", "churn-model"],
        "shared": True,
    }
    assert groups["customer_cohort"]["models"] == ["churn-model"] and not groups["customer_cohort"]["shared"]
    bad = churnops("features", "usage", "no_such_feature", home=settings.home)
    assert_one_line_error(bad, 2, "unknown feature 'no_such_feature'")


def _online_cohort(settings: Settings) -> list[object]:
    with Warehouse.of(settings).connect() as con:
        now = max(OfflineStore(con).snapshot_times("customer_account"))
    store = make_online_store(settings)
    try:
        return [c.values[COHORT[0]] for c in store.read(CUSTOMERS, COHORT, now=now)]
    finally:
        store.close()


def test_deprecation_check_and_retirement_follow_the_simulated_clock(governed) -> None:  # type: ignore[no-untyped-def]
    settings = governed
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(settings)
    last_used = T0 + dt.timedelta(days=14)  # v3 registered: v1 (all features) still held `previous`

    def materialize() -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [online_features, features_not_deprecated], instance=instance, resources=resources
        )
        assert result.success  # a WARN check never fails the run
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.asset_check_key == FEATURES_NOT_DEPRECATED
        return evaluation

    _write_snapshot(settings, last_used + dt.timedelta(days=89))
    early = materialize()
    assert early.passed and early.severity == dg.AssetCheckSeverity.WARN
    assert all(v is not None for v in _online_cohort(settings))
    _write_snapshot(settings, last_used + dt.timedelta(days=90))
    late = materialize()
    assert not late.passed and late.severity == dg.AssetCheckSeverity.WARN
    assert sorted(late.metadata["deprecated"].value) == sorted(COHORT)  # type: ignore[arg-type]
    listed = {r["feature"]: r for r in _cli(settings, "features", "list")}
    assert {listed[f]["status"] for f in COHORT} == {DEPRECATED}
    assert {listed[f]["status"] for f in WITHOUT_COHORT} == {IN_USE}
    assert listed[COHORT[0]]["last_used_at"] == last_used.isoformat()
    # The materialization before the verdict still served them; the next one retires them.
    assert all(v is not None for v in _online_cohort(settings))
    materialize()
    assert _online_cohort(settings) == [None] * len(CUSTOMERS)
    with (
        make_online_store(settings) as store,
        Warehouse.of(settings).connect() as con,
    ):
        now = max(OfflineStore(con).snapshot_times("customer_account"))
        assert all(
            c.values["tenure_days"] is not None for c in store.read(CUSTOMERS, ["tenure_days"], now=now)
        )


def test_churn_30d_lineage_depends_on_the_shared_feature_groups_only() -> None:
    from churn_assets.defs.keys import CHURN_30D_MODEL, TRAINING_SET, feature_asset_key
    from churn_assets.modeling.horizon_model import CHURN_30D
    from churn_assets.orchestration import load_definitions

    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    parents = graph.get(CHURN_30D_MODEL).parent_keys
    assert parents == {feature_asset_key(g) for g in CHURN_30D.groups}
    assert parents < graph.get(TRAINING_SET).parent_keys  # the production model's groups, shared
    assert defs.resolve_job_def("shared_models").asset_layer.selected_asset_keys == {CHURN_30D_MODEL}


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_churn_30d_is_trained_from_the_feature_store_and_shares_its_groups(tmp_path, history_cache) -> None:  # type: ignore[no-untyped-def]
    """A tiny world, the production champion, then the 30-day model trained from the same offline store:
    `features usage` lists both models on the shared groups, only the production one on the others."""
    from churn_assets.modeling.horizon_model import CHURN_30D, train_shared_feature_model
    from tests.monitoring_helpers import register_quick_champion, tiny_settings

    settings = tiny_settings(tmp_path)
    history_cache.history(settings, dg.DagsterInstance.ephemeral())  # simulated history + main job
    production = register_quick_champion(settings)
    report = train_shared_feature_model(settings, n_trials=2, baselines=["logistic_regression"])
    assert report.model_name == "churn-30d" and 0.5 < report.test_auc <= 1
    registry = ModelRegistry(settings, name="churn-30d")
    # Promoted, or kept as the challenger when a gate fails on this tiny world: an alias either way.
    held = tuple(a for a, v in registry.aliases().items() if v == report.model_version)
    assert held == (("champion",) if report.promotion == "promoted" else ("challenger",))
    tags = registry.tags(report.model_version)
    assert json.loads(tags["features"]) == CHURN_30D.features
    usage = _cli(settings, "features", "usage")
    groups = {g["group"]: g["models"] for g in usage["groups"]}
    for group in CHURN_30D.groups:
        assert groups[group] == ["churn-30d", "churn-model"]
    assert groups["customer_billing"] == groups["customer_cohort"] == ["churn-model"]
    tenure = next(f for f in usage["features"] if f["feature"] == "tenure_days")
    assert {(v["model_name"], v["model_version"], tuple(v["aliases"])) for v in tenure["versions"]} == {
        ("churn-model", production, ("champion",)),
        ("churn-30d", report.model_version, held),
    }
