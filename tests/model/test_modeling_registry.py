"""Registry: semantic versions + tags, promotion rule, manual approval, rollback, audit log."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from churn_assets.modeling.evaluation import GateResult
from churn_assets.modeling.registry import (
    HoldoutMismatch,
    ModelRegistry,
    RegistryError,
    decide,
    holdout_sha256,
)
from churn_assets.modeling.tracking import LoggedRun, configure, log_candidate_run
from churn_assets.modeling.training_set import feature_names
from tests.modeling_helpers import modeling_settings

PASS = [GateResult("min_test_auc", 0.8, 0.7, True)]
FAIL = [GateResult("min_test_auc", 0.8, 0.7, True), GateResult("max_auc_gap", 0.2, 0.08, False)]
_names = itertools.count()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("registry-home")


@pytest.fixture(scope="module")
def logged(home) -> dict[str, LoggedRun]:
    """Three logged models: two on features [x1, x2] (different artifacts), one on [x1]."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    y = (X["x1"] + 0.5 * rng.normal(size=300) > 0).astype(int)
    tracking = configure(modeling_settings(home))
    runs = {}
    for key, features, c in (("a", ["x1", "x2"], 1.0), ("b", ["x1", "x2"], 0.01), ("c", ["x1"], 1.0)):
        model = LogisticRegression(C=c).fit(X[features], y)
        runs[key] = log_candidate_run(tracking, f"lr-{key}", model, "sklearn", {"C": c}, {"auc": 0.8})
    return runs


def _registry(home, **modeling) -> ModelRegistry:
    """A registry on the shared tracking DB with a registered model of its own (not the production
    one: x1, x2 are not feature-store features)."""
    return ModelRegistry(modeling_settings(home, **modeling), name=f"churn-model-t{next(_names)}")


def _register(reg: ModelRegistry, run: LoggedRun, features=("x1", "x2"), auc: float = 0.8, gates=PASS):
    return reg.register(run, list(features), data_hash="d" * 64, metrics={"auc": auc}, gates=gates)


def test_decide_rule() -> None:
    assert decide(0.83, 0.80, PASS, 0.02)[0]
    assert not decide(0.81, 0.80, PASS, 0.02)[0]
    assert not decide(0.82, 0.80, PASS, 0.02 + 1e-9)[0]  # must beat by MORE than the gain
    assert not decide(0.90, 0.80, FAIL, 0.02)[0]
    assert decide(0.75, None, PASS, 0.02) == (True, "no champion yet and every gate passed")


def test_versions_carry_semver_hashes_features_and_metrics(home, logged) -> None:
    reg = _registry(home)
    v1 = _register(reg, logged["a"])
    v2 = _register(reg, logged["b"])
    v3 = _register(reg, logged["b"])
    v4 = _register(reg, logged["c"], features=["x1"])
    assert [v.semver for v in (v1, v2, v3, v4)] == ["1.0.0", "1.1.0", "1.1.1", "2.0.0"]
    tags = reg.tags(v1.version)
    assert tags["artifact_sha256"] == logged["a"].artifact_hash and len(tags["artifact_sha256"]) == 64
    assert tags["data_sha256"] == "d" * 64
    assert json.loads(tags["features"]) == ["x1", "x2"]
    assert float(tags["metric.auc"]) == pytest.approx(0.8)
    assert reg.aliases() == {"challenger": v4.version}


def test_promotion_by_more_than_min_gain(home, logged) -> None:
    reg = _registry(home)
    v1 = _register(reg, logged["a"])
    first = reg.consider(v1.version, 0.80, None, PASS)
    assert first.promoted and reg.aliases()["champion"] == v1.version

    v2 = _register(reg, logged["b"], auc=0.83)
    better = reg.consider(v2.version, 0.83, 0.80, PASS)
    assert better.promoted
    assert reg.aliases() == {"champion": v2.version, "previous": v1.version}

    v3 = _register(reg, logged["a"], auc=0.84)
    kept = reg.consider(v3.version, 0.84, 0.83, PASS)
    assert kept.outcome == "kept" and "not > 0.02" in kept.reason
    assert reg.aliases()["champion"] == v2.version and reg.aliases()["challenger"] == v3.version

    with pytest.raises(RegistryError, match="same holdout"):
        reg.consider(v3.version, 0.84, None, PASS)  # a champion exists: its AUC is required

    v4 = _register(reg, logged["a"], auc=0.95, gates=FAIL)
    gated = reg.consider(v4.version, 0.95, 0.83, FAIL)
    assert gated.outcome == "kept" and "max_auc_gap" in gated.reason
    assert reg.aliases()["champion"] == v2.version

    actions = [(e.action, e.version) for e in reg.read_audit()]
    assert actions == [
        ("register", v1.version),
        ("promoted", v1.version),
        ("register", v2.version),
        ("promoted", v2.version),
        ("register", v3.version),
        ("kept", v3.version),
        ("register", v4.version),
        ("kept", v4.version),
    ]
    last = reg.read_audit()[-1]
    assert last.metrics["challenger_auc"] == 0.95 and last.metrics["champion_auc"] == 0.83
    assert last.actor == "system" and last.at.endswith("+00:00")


def test_manual_mode_waits_for_approval_and_records_the_approver(home, logged) -> None:
    reg = _registry(home, promotion_mode="manual")
    v1 = _register(reg, logged["a"])
    pending = reg.consider(v1.version, 0.80, None, PASS)
    assert pending.outcome == "pending" and "champion" not in reg.aliases()
    with pytest.raises(RegistryError, match="approver"):
        reg.approve(by=" ")
    approved = reg.approve(by="alice")
    assert approved.promoted and reg.aliases()["champion"] == v1.version
    assert reg.tags(v1.version)["approved_by"] == "alice"
    entry = reg.read_audit()[-1]
    assert (entry.action, entry.actor, entry.version) == ("approved", "alice", v1.version)
    with pytest.raises(RegistryError, match="no challenger is waiting"):
        reg.approve(by="alice")

    v2 = _register(reg, logged["b"])
    assert reg.consider(v2.version, 0.81, 0.80, PASS).outcome == "kept"  # not enough gain: nothing to approve
    with pytest.raises(RegistryError):
        reg.approve(by="bob")


def test_rollback_swaps_champion_and_previous(home, logged) -> None:
    reg = _registry(home)
    with pytest.raises(RegistryError, match="previous"):
        reg.rollback(by="ops")
    v1 = _register(reg, logged["a"])
    reg.consider(v1.version, 0.80, None, PASS)
    v2 = _register(reg, logged["b"])
    reg.consider(v2.version, 0.85, 0.80, PASS)
    decision = reg.rollback(by="ops", reason="latency regression")
    assert (decision.champion_before, decision.champion_after) == (v2.version, v1.version)
    assert reg.aliases() == {"champion": v1.version, "previous": v2.version}
    assert reg.tags(v2.version)["rolled_back"] == "true"
    entry = reg.read_audit()[-1]
    assert (entry.action, entry.actor, entry.reason) == ("rollback", "ops", "latency regression")
    reg.rollback(by="ops", reason="undo")  # a second rollback undoes the first
    assert reg.aliases()["champion"] == v2.version


def test_champion_auc_is_measured_on_the_given_holdout(home, logged) -> None:
    reg = _registry(home)
    assert reg.holdout_auc("champion", pd.DataFrame({"x1": [0.0, 1.0]}), pd.Series([0, 1])) is None
    v1 = _register(reg, logged["a"])
    reg.consider(v1.version, 0.80, None, PASS)
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x1": rng.normal(size=200), "x2": rng.normal(size=200)})
    y = (X["x1"] > 0).astype(int)
    assert reg.holdout_auc("champion", X, y) > 0.9


def test_audit_log_is_append_only(home, logged) -> None:
    reg = _registry(home)
    _register(reg, logged["a"])
    with reg.audit.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.exec_driver_sql("UPDATE registry_audit SET actor = 'mallory'")
    with reg.audit.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.exec_driver_sql("DELETE FROM registry_audit")
    assert len(reg.read_audit()) == 1


def test_production_name_refuses_features_the_feature_store_lacks(home, logged) -> None:
    settings = modeling_settings(home, registered_model_name=f"churn-model-prod{next(_names)}")
    production = ModelRegistry(settings)
    assert production.is_production
    with pytest.raises(RegistryError, match=r"production model.*no feature\(s\) x1, x2"):
        _register(production, logged["a"])
    assert production.versions() == [] and production.read_audit() == []
    names = feature_names()[:2]  # the feature store's own features are accepted
    assert _register(production, logged["a"], features=names).semver == "1.0.0"
    own = ModelRegistry(settings, name=f"table-{next(_names)}")
    assert not own.is_production and _register(own, logged["a"]).semver == "1.0.0"
    assert [int(v.version) for v in production.versions()] == [1]


def test_a_champion_evaluated_on_other_data_is_not_compared(home, logged) -> None:
    reg = _registry(home)
    v1 = _register(reg, logged["a"], auc=0.60)
    reg.consider(v1.version, 0.60, None, PASS)
    other = pd.DataFrame({"f0": [0.1, 0.9, 0.3, 0.7], "f1": [1.0, 0.0, 1.0, 0.0]})
    labels = pd.Series([0, 1, 0, 1])
    with pytest.raises(HoldoutMismatch, match=r"feature\(s\) x1, x2 are not in it"):
        reg.holdout_auc("champion", other, labels)
    v2 = _register(reg, logged["b"], auc=0.95)
    fingerprint = holdout_sha256(other, labels)
    decision = reg.consider(
        v2.version, 0.95, None, PASS, not_compared="champion scored elsewhere", eval_sha256=fingerprint
    )
    assert decision.outcome == "kept" and decision.reason.startswith("not compared with the champion")
    assert reg.aliases()["champion"] == v1.version
    assert reg.read_audit()[-1].metrics["eval_sha256"] == fingerprint


def test_holdout_fingerprint_follows_the_data_not_the_index() -> None:
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": pd.Categorical(["x", "y", "x"])})
    y = pd.Series([0, 1, 0])
    same = holdout_sha256(X.set_axis([7, 8, 9]), y.set_axis([7, 8, 9]))
    assert holdout_sha256(X, y) == same and len(same) == 64
    assert holdout_sha256(X, pd.Series([1, 1, 0])) != same
    assert holdout_sha256(X.assign(a=[1.0, 2.0, 4.0]), y) != same
    assert holdout_sha256(X.rename(columns={"a": "c"}), y) != same
