"""Rollout phases, canary split and stickiness, state backends (file, Redis)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from churn_assets.modeling.registry import ModelRegistry
from churn_assets.serving.rollout import PHASES, RolloutError, RolloutState, RolloutStore, bucket, route
from churn_assets.settings import ServingSettings, Settings
from tests.serving_helpers import register_models, serving_settings


def _settings(tmp_path: Path, **serving: object) -> Settings:
    return Settings(home=tmp_path, serving=ServingSettings(**serving))  # type: ignore[arg-type]


@pytest.mark.parametrize(("phase", "share"), [("canary_5", 0.05), ("canary_25", 0.25), ("canary_50", 0.50)])
def test_canary_split_is_within_tolerance_over_10000_ids(phase: str, share: float) -> None:
    state = RolloutState(phase=phase, stable_version="1", candidate_version="2")
    ids = range(1_000_000, 1_010_000)
    canary = sum(route(i, state) == "canary" for i in ids)
    # Binomial standard error at n = 10,000 is <= 0.005; allow 3 of them.
    assert abs(canary / 10_000 - share) < 0.015
    # Sticky: the same customer gets the same answer every time; raising the share never moves back.
    assert all(route(i, state) == route(i, state) for i in range(2_000))
    wider = RolloutState(phase="canary_50", stable_version="1", candidate_version="2")
    assert all(route(i, wider) == "canary" for i in ids if route(i, state) == "canary")


def test_no_canary_outside_canary_phases() -> None:
    for phase in ("none", "shadow"):
        state = RolloutState(phase=phase, stable_version="1", candidate_version="2")
        assert {route(i, state) for i in range(5_000)} == {"champion"}
    assert bucket(12345) == bucket(12345) and 0 <= bucket(-7) < 10_000


def test_phase_transitions_and_history(tmp_path: Path) -> None:
    store = RolloutStore(_settings(tmp_path, rollout_review="auto"))
    assert store.load().phase == "none"
    store.set_stable("1")
    with pytest.raises(RolloutError, match="no rollout is active"):
        store.advance()
    state = store.start("2", "1", by="alice", reason="retrain beat champion")
    assert (state.phase, state.stable_version, state.candidate_version) == ("shadow", "1", "2")
    with pytest.raises(RolloutError, match="already active"):
        store.start("3", "1")
    seen = [store.advance(by="bob").phase for _ in range(3)]
    assert seen == ["canary_5", "canary_25", "canary_50"]
    done = store.advance(by="bob")
    assert (done.phase, done.stable_version, done.candidate_version) == ("none", "2", None)
    actions = [(h["action"], h["phase"]) for h in store.load().history]
    assert actions == [
        ("set_stable", "none"),
        ("start", "shadow"),
        ("advance", "canary_5"),
        ("advance", "canary_25"),
        ("advance", "canary_50"),
        ("approve", "canary_50"),
        ("advance", "full"),
        ("complete", "none"),
    ]
    assert set(PHASES) >= {a[1] for a in actions}
    assert store.load().history[-3]["by"] == "auto-review"  # the business review, passed automatically


def test_manual_business_review_holds_at_canary_50_until_approved(tmp_path: Path) -> None:
    """serving.rollout_review = manual (the default): canary_50 -> full only through an approval, which
    is recorded in the rollout history and the registry audit log; the old version is retained."""
    settings = serving_settings(tmp_path)
    assert settings.serving.rollout_review == "manual"
    previous, champion = register_models(settings)
    store = RolloutStore(settings)
    with pytest.raises(RolloutError, match="business review happens at canary_50"):
        store.approve(by="dana")
    store.start(champion, previous)
    for _ in range(3):
        store.advance()
    with pytest.raises(RolloutError, match="awaits the business review"):
        store.advance()
    with pytest.raises(RolloutError, match="approver's name"):
        store.approve(by=" ")
    assert store.load().phase == "canary_50"
    day = dt.date(2025, 9, 15)
    done = store.approve(by="dana", reason="retention offer numbers reviewed", on=day)
    assert (done.phase, done.stable_version, done.candidate_version) == ("none", champion, None)
    assert (done.retained_version, done.retained_until) == (previous, "2025-09-29")
    assert [h["action"] for h in done.history[-3:]] == ["approve", "advance", "complete"]
    [entry] = [e for e in ModelRegistry(settings).read_audit() if e.action == "rollout_approved"]
    assert entry.actor == "dana" and entry.version == champion and "retention offer" in entry.reason


def test_previous_version_is_retained_for_rollback_then_retired(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path, rollout_review="auto")
    previous, champion = register_models(settings)
    store = RolloutStore(settings)
    store.set_stable(previous)
    store.start(champion, previous)
    day = dt.date(2025, 9, 15)
    for _ in range(4):
        store.advance(on=day)
    assert store.load().retained_until == (day + dt.timedelta(days=14)).isoformat()
    assert store.retire_expired(day + dt.timedelta(days=13)) is None  # still within the retention
    assert ModelRegistry(settings).aliases()["previous"] == previous
    assert store.retire_expired(day + dt.timedelta(days=14)) == previous
    registry = ModelRegistry(settings)
    assert "previous" not in registry.aliases() and registry.tags(previous)["retired"] == "true"
    assert store.load().retained_version is None and store.load().history[-1]["action"] == "retire"
    assert [e.action for e in registry.read_audit()][-2:] == ["rollout_approved", "retired"]
    with pytest.raises(RolloutError, match="registry rollback failed"):
        store.rollback(by="erin")  # no previous version to return to any more


def test_rollback_within_the_retention_restores_the_previous_version(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path, rollout_review="auto")
    previous, champion = register_models(settings)
    store = RolloutStore(settings)
    store.start(champion, previous)
    for _ in range(4):
        store.advance()
    state = store.rollback(by="erin", reason="complaints after full rollout")
    assert (state.stable_version, state.retained_version) == (previous, None)
    assert ModelRegistry(settings).aliases()["champion"] == previous


def test_rollback_without_registry_restores_stable(tmp_path: Path) -> None:
    store = RolloutStore(_settings(tmp_path))
    store.start("2", "1")
    store.advance()
    state = store.rollback(by="carol", reason="error rate", registry=False)
    assert (state.phase, state.stable_version, state.candidate_version) == ("none", "1", None)
    assert state.history[-1]["by"] == "carol"


def test_service_side_reader_sees_changes_without_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writer, reader = RolloutStore(settings), RolloutStore(settings)
    assert reader.current().phase == "none"
    writer.start("2", "1")
    assert reader.current().phase == "shadow"
    writer.advance()
    assert reader.current().phase == "canary_5"


def test_redis_backend(tmp_path: Path, redis_url: str) -> None:
    prefix = f"churnops-test:{uuid.uuid4().hex}"
    settings = _settings(
        tmp_path,
        rollout_backend="redis",
        redis_url=redis_url,
        redis_key_prefix=prefix,
        rollout_refresh_seconds=0.01,
    )
    store = RolloutStore(settings)
    try:
        store.start("5", "4")
        store.advance()
        other = RolloutStore(settings)
        assert other.current().phase == "canary_5"
        assert not (tmp_path / "serving" / "rollout.json").exists()
    finally:
        store._client().delete(store.key)
