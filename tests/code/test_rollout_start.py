"""What a promotion decision does to the rollout (``automation.rollout_start.start_rollout``), on a real
file-backed rollout store."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn_assets.automation.rollout_start import start_rollout
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> RolloutStore:
    return RolloutStore(Settings(home=tmp_path))


def decision(outcome: str, after: str, before: str | None, reason: str = "r") -> dict[str, object]:
    return {"outcome": outcome, "champion_after": after, "champion_before": before, "reason": reason}


def test_a_kept_champion_leaves_the_rollout_unchanged(store: RolloutStore) -> None:
    store.set_stable("1")
    started = start_rollout(store, decision("kept", "1", "1", "AUC gain 0.001 <= 0.02"), "drift")
    assert started.action == "none: champion v1 kept (AUC gain 0.001 <= 0.02)"
    assert (started.state.phase, started.state.stable_version) == ("none", "1")
    assert len(store.load().history) == 1  # nothing recorded beyond the first deployment


def test_the_first_champion_is_deployed_directly_once(store: RolloutStore) -> None:
    first = start_rollout(store, decision("promoted", "1", None), "bootstrap")
    assert first.action == "deployed first champion v1"
    assert (store.load().phase, store.load().stable_version) == ("none", "1")
    again = start_rollout(store, decision("promoted", "1", None), "bootstrap")  # e.g. a re-run
    assert again.state.stable_version == "1" and len(store.load().history) == 1


def test_a_promoted_challenger_starts_its_rollout_in_shadow(store: RolloutStore) -> None:
    store.set_stable("1")
    started = start_rollout(store, decision("promoted", "2", "1"), "performance")
    assert started.action == "rollout of v2 started in shadow (stable v1)"
    state = store.load()
    assert (state.phase, state.stable_version, state.candidate_version) == ("shadow", "1", "2")
    assert state.history[-1]["reason"] == "promoted by the performance retraining"


def test_a_rollout_the_bento_build_started_is_kept(store: RolloutStore) -> None:
    store.set_stable("1")
    store.start("2", "1", reason="bento build")
    started = start_rollout(store, decision("promoted", "2", "1"), "drift")
    assert started.action == "rollout of v2 started in shadow (stable v1)"
    assert store.load().history[-1]["reason"] == "bento build"  # not started twice


def test_a_newer_champion_supersedes_a_candidate_under_review(store: RolloutStore) -> None:
    store.set_stable("1")
    store.start("2", "1")
    store.advance()  # v2 in canary_5
    started = start_rollout(store, decision("promoted", "3", "2"), "new_labels")
    state = store.load()
    assert (state.phase, state.stable_version, state.candidate_version) == ("shadow", "2", "3")
    actions = [h["action"] for h in state.history]
    assert actions[-2:] == ["rollback", "start"]
    assert state.history[-2]["reason"] == "superseded by a newer champion"
    assert started.action == "rollout of v3 started in shadow (stable v2)"


def test_a_decision_without_its_outcome_is_refused_naming_the_field(store: RolloutStore) -> None:
    with pytest.raises(ValueError, match="'outcome' is missing"):
        start_rollout(store, {"champion_after": "2"}, "drift")
