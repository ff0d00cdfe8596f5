"""Rollout phases, canary split and stickiness, state backends (file, Redis)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from churn_assets.serving.rollout import PHASES, RolloutError, RolloutState, RolloutStore, bucket, route
from churn_assets.settings import ServingSettings, Settings


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
    store = RolloutStore(_settings(tmp_path))
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
        ("advance", "full"),
        ("complete", "none"),
    ]
    assert set(PHASES) >= {a[1] for a in actions}


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
