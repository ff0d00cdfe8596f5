"""What a retraining's promotion decision does to the rollout (the ``rollout/start`` asset calls it).

* kept (or pending) champion: the rollout is left unchanged (the decision is in the audit log);
* the first champion (no champion before): deployed directly as the stable version;
* a promoted challenger: its rollout starts in ``shadow`` with the previous champion as stable -- unless
  the bento build already started it (``serving.bento_build.sync_rollout``); a candidate still under
  review is rolled back first (superseded by the newer champion, registry untouched).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from churn_assets.serving.rollout import RolloutState, RolloutStore


@dataclass(frozen=True)
class RolloutStart:
    """The rollout state after the decision, and one line saying what happened."""

    state: RolloutState
    action: str


def start_rollout(store: RolloutStore, decision: Mapping[str, Any], trigger: str) -> RolloutStart:
    """Apply a promotion ``decision`` (``outcome``, ``reason``, ``champion_before``, ``champion_after``,
    as ``training/champion`` records it) to the rollout in ``store``; ``trigger`` names the retraining."""
    for field in ("outcome", "champion_after"):
        if field not in decision:
            raise ValueError(f"promotion decision: field {field!r} is missing (got {sorted(decision)})")
    before = store.load()
    new = str(decision["champion_after"])
    if decision["outcome"] != "promoted":
        return RolloutStart(before, f"none: champion v{new} kept ({decision.get('reason', '')})")
    if not decision.get("champion_before"):
        # First champion: deployed directly (the bento build may already have recorded it).
        state = (
            before
            if before.stable_version == new
            else store.set_stable(new, by="retraining", reason="first champion")
        )
        return RolloutStart(state, f"deployed first champion v{new}")
    if before.active and before.candidate_version == new:  # the bento build already started it
        return RolloutStart(
            before, f"rollout of v{new} started in {before.phase} (stable v{before.stable_version})"
        )
    if before.active:  # a newer champion supersedes a candidate still under review
        store.rollback(by="retraining", reason="superseded by a newer champion", registry=False)
    state = store.start(
        new,
        str(decision["champion_before"]),
        by="retraining",
        reason=f"promoted by the {trigger} retraining",
    )
    return RolloutStart(state, f"rollout of v{new} started in {state.phase} (stable v{state.stable_version})")
