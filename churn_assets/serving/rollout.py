"""Gradual rollout of a newly promoted model: shadow -> canary 5 % -> 25 % -> 50 % -> full.

The registry decides promotion first (alias ``champion`` = new version, ``previous`` = old). The rollout
then moves traffic from ``stable_version`` (the old model: variant ``champion`` in responses) to
``candidate_version`` (the new one: variant ``canary``). In ``shadow`` the candidate scores every
request, logged as variant ``shadow`` and never returned. Advancing from ``canary_50`` reaches ``full``:
the candidate becomes the stable version and the phase returns to ``none`` (the history records the
``full`` step). A rollback restores stable traffic and rolls the registry back (champion <- previous).

Business review at 50 % (``serving.rollout_review``): in ``manual`` mode the rollout cannot advance from
``canary_50`` until someone approves it (:meth:`RolloutStore.approve`, ``churnops rollout approve --by
NAME``), which records the approver and completes the rollout; in ``auto`` mode the advance from
``canary_50`` records an approval by ``auto-review``. Either way the approval is in the registry audit
log (action ``rollout_approved``) and the rollout history.

Retention: a full rollout keeps the old stable version as ``retained_version`` until ``retained_until``
(the full rollout's date + ``serving.previous_retention_days``); until then ``churnops rollout rollback``
restores it. :meth:`RolloutStore.retire_expired` (run by each production week's rollout review) then
retires it: the registry alias ``previous`` is removed and the audit log says so.

State location (``settings.serving.rollout_backend``):

* ``file`` (default): JSON at ``home/serving/rollout.json``, replaced atomically; readers re-read it when
  its modification time (ns) changes.
* ``redis``: the JSON string at key ``{serving.redis_key_prefix}:rollout``; readers re-read it at most
  every ``serving.rollout_refresh_seconds``. The service reads it once at start, then re-reads it in a
  background thread (a request never waits for Redis), through a circuit breaker over a fail-fast client;
  when Redis is unavailable it keeps routing by the last state it read (logged once when the state goes
  stale and once when it is fresh again).

Routing (:func:`route`) is a deterministic hash of ``customer_id`` (SplitMix64 finaliser) into 10,000
buckets: the same customer always gets the same variant within a phase, and raising the share only moves
customers from stable to candidate, never back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from churn_assets.settings import Settings

if TYPE_CHECKING:
    from churn_assets.serving.resilience import RateBreaker

log = logging.getLogger(__name__)

PHASES: tuple[str, ...] = ("none", "shadow", "canary_5", "canary_25", "canary_50", "full")
CANDIDATE_SHARE: dict[str, float] = {
    "none": 0.0,
    "shadow": 0.0,
    "canary_5": 0.05,
    "canary_25": 0.25,
    "canary_50": 0.50,
    "full": 1.0,
}
BUCKETS = 10_000
_MASK = (1 << 64) - 1


class RolloutError(RuntimeError):
    """A rollout transition is not possible from the current state (the message says why)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RolloutState:
    phase: str = "none"
    stable_version: str | None = None
    candidate_version: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    approved_by: str | None = None  # the business review of the active rollout (manual or auto-review)
    retained_version: str | None = None  # the stable version a full rollout replaced, kept for rollback
    retained_until: str | None = None  # ISO date: retire ``retained_version`` from this date on
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase not in ("none", "full") and self.candidate_version is not None

    @property
    def candidate_share(self) -> float:
        return CANDIDATE_SHARE[self.phase] if self.active else 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> RolloutState:
        data = orjson.loads(raw)
        if data.get("phase") not in PHASES:
            raise RolloutError(f"rollout state: phase {data.get('phase')!r} is not one of {PHASES}")
        return cls(**{f.name: data.get(f.name, f.default) for f in dataclasses.fields(cls) if f.name in data})


def bucket(customer_id: int) -> int:
    """Deterministic bucket in [0, BUCKETS) of a customer id (SplitMix64 finaliser, process-independent)."""
    z = (int(customer_id) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) % BUCKETS


def route(customer_id: int, state: RolloutState) -> Literal["champion", "canary"]:
    """``canary`` for the candidate's share of customers in a canary phase, else ``champion``."""
    share = state.candidate_share
    if share <= 0.0:
        return "champion"
    return "canary" if bucket(customer_id) < share * BUCKETS else "champion"


class RolloutStore:
    """Load and change the rollout state (file or Redis, see the module docstring).

    ``breaker`` (the service's read path): Redis reads of :meth:`current` go through it, over a fail-fast
    client (``serving.redis_timeout_seconds`` / ``redis_connect_timeout_seconds``, no retried timeouts).
    """

    def __init__(self, settings: Settings, breaker: RateBreaker | None = None) -> None:
        self.settings = settings
        self.backend = settings.serving.rollout_backend
        self.path: Path = settings.serving_dir / "rollout.json"
        self.key = f"{settings.serving.redis_key_prefix}:rollout"
        self.breaker = breaker
        self._redis: Any = None
        self._cached: RolloutState | None = None
        self._cached_marker: Any = None
        self._checked_at = 0.0
        self.stale = False  # the service routes by a state it could not refresh
        self._failed: str | None = None  # the last failed refresh
        self._lock = threading.Lock()
        self._refreshing = False

    # -- storage ----------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._redis is None:
            import redis

            if self.breaker is not None:
                from churn_assets.feature_store.online import fail_fast_redis_options

                cfg = self.settings.serving
                options = fail_fast_redis_options(
                    cfg.redis_timeout_seconds, cfg.redis_connect_timeout_seconds
                )
                self._redis = redis.Redis.from_url(cfg.redis_url.get_secret_value(), **options)
            else:
                self._redis = redis.Redis.from_url(
                    self.settings.serving.redis_url.get_secret_value(), socket_timeout=2
                )
        return self._redis

    def _refresh(self, now: float) -> RolloutState:
        """Re-read the Redis state (through the breaker); on failure keep the last one read, if any."""
        self._checked_at = now  # a failed read is retried after rollout_refresh_seconds, not per request
        try:
            state = self.breaker.call(self.load) if self.breaker is not None else self.load()
        except Exception as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            if self._cached is None:
                raise
            if not self.stale:
                self.stale = True
                log.warning("rollout state unavailable (%s): routing by the last state read", exc)
            return self._cached
        if self.stale:
            self.stale = False
            log.warning("rollout state readable again")
        self._cached, self._failed = state, None
        return state

    def _refresh_in_background(self, now: float) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing, self._checked_at = True, now

        def run() -> None:
            try:
                self._refresh(time.monotonic())
            except Exception as exc:  # pragma: no cover - _refresh keeps the cached state on failures
                log.warning("rollout state refresh failed: %s", exc)
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="rollout-refresh", daemon=True).start()

    def load(self) -> RolloutState:
        """The current state (``phase="none"`` with no versions when nothing was stored yet)."""
        if self.backend == "redis":
            raw = self._client().get(self.key)
            return RolloutState.from_json(raw) if raw else RolloutState()
        try:
            return RolloutState.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return RolloutState()

    def current(self) -> RolloutState:
        """The state, re-read only when it changed (file mtime) or after ``rollout_refresh_seconds`` (Redis).

        The hot path of the service calls this per request.
        """
        if self.backend == "redis":
            now = time.monotonic()
            due = now - self._checked_at >= self.settings.serving.rollout_refresh_seconds
            if self._cached is None:
                if not due and self._failed is not None:
                    raise RolloutError(f"rollout state unavailable: {self._failed}")
                return self._refresh(now)
            if due and self.breaker is not None:
                self._refresh_in_background(now)
            elif due:
                return self._refresh(now)
            return self._cached
        try:
            marker: Any = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            marker = None
        if self._cached is None or marker != self._cached_marker:
            self._cached, self._cached_marker = self.load(), marker
        return self._cached

    def save(self, state: RolloutState) -> None:
        if self.backend == "redis":
            self._client().set(self.key, state.to_json())
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".rollout-", suffix=".json")
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.to_json())
        os.replace(tmp, self.path)

    # -- transitions ------------------------------------------------------------------------------
    @staticmethod
    def _event(state: RolloutState, action: str, by: str, reason: str) -> None:
        now = _now()
        state.updated_at = now
        state.history.append(
            {
                "at": now,
                "action": action,
                "phase": state.phase,
                "stable_version": state.stable_version,
                "candidate_version": state.candidate_version,
                "by": by,
                "reason": reason,
            }
        )

    def set_stable(
        self, version: str, by: str = "system", reason: str = "initial deployment"
    ) -> RolloutState:
        """Serve ``version`` with no rollout (first deployment or an explicit reset)."""
        state = self.load()
        if state.active:
            raise RolloutError(f"a rollout to version {state.candidate_version} is active ({state.phase})")
        state.phase, state.stable_version, state.candidate_version = "none", str(version), None
        self._event(state, "set_stable", by, reason)
        self.save(state)
        return state

    def start(
        self, candidate_version: str, stable_version: str, by: str = "system", reason: str = ""
    ) -> RolloutState:
        """Begin a rollout in ``shadow``: the candidate scores every request, logged only."""
        state = self.load()
        if state.active:
            raise RolloutError(
                f"a rollout to version {state.candidate_version} is already active ({state.phase}); "
                "advance or roll it back first"
            )
        if str(candidate_version) == str(stable_version):
            raise RolloutError(f"candidate and stable are the same version ({candidate_version})")
        state.phase = "shadow"
        state.stable_version, state.candidate_version = str(stable_version), str(candidate_version)
        state.started_at, state.approved_by = _now(), None
        self._event(state, "start", by, reason or "new champion promoted")
        self.save(state)
        return state

    def advance(self, by: str = "system", reason: str = "", on: dt.date | None = None) -> RolloutState:
        """Next phase; from ``canary_50`` to ``full``, which makes the candidate stable (phase ``none``)
        and retains the old stable version until ``on`` (default: today, UTC) + the retention.

        From ``canary_50`` in ``manual`` review mode the rollout must have been approved
        (:meth:`approve`); in ``auto`` mode this step records the approval (``auto-review``)."""
        state = self.load()
        if not state.active:
            raise RolloutError("no rollout is active: nothing to advance")
        if state.phase == "canary_50" and state.approved_by is None:
            if self.settings.serving.rollout_review == "manual":
                raise RolloutError(
                    f"the rollout of v{state.candidate_version} awaits the business review at 50 %: "
                    "`churnops rollout approve --by NAME` (serving.rollout_review = manual)"
                )
            self._approve(state, "auto-review", reason or "all rollout checks passed at canary_50")
        nxt = PHASES[PHASES.index(state.phase) + 1]
        state.phase = nxt
        self._event(state, "advance", by, reason or f"advance to {nxt}")
        if nxt == "full":
            self._complete(state, by, on)
        self.save(state)
        return state

    def approve(self, by: str, reason: str = "", on: dt.date | None = None) -> RolloutState:
        """The business-stakeholder review at 50 %: record ``by`` as approver and complete the rollout."""
        if not by.strip():
            raise RolloutError("approve needs the approver's name (--by NAME)")
        state = self.load()
        if not state.active or state.phase != "canary_50":
            raise RolloutError(
                f"nothing to approve: the business review happens at canary_50 (phase is {state.phase})"
            )
        self._approve(state, by, reason or "business review at 50 %")
        state.phase = "full"
        self._event(state, "advance", by, "approved: advance to full")
        self._complete(state, by, on)
        self.save(state)
        return state

    def _approve(self, state: RolloutState, by: str, reason: str) -> None:
        state.approved_by = by
        self._event(state, "approve", by, reason)
        self._audit("rollout_approved", by, f"v{state.candidate_version} at canary_50: {reason}", state)

    def _complete(self, state: RolloutState, by: str, on: dt.date | None) -> None:
        day = on or dt.datetime.now(dt.UTC).date()
        keep = dt.timedelta(days=self.settings.serving.previous_retention_days)
        state.retained_version, state.retained_until = state.stable_version, (day + keep).isoformat()
        state.phase, state.stable_version, state.candidate_version = "none", state.candidate_version, None
        state.approved_by = None
        self._event(
            state,
            "complete",
            by,
            f"candidate serves all traffic and becomes stable; v{state.retained_version} retained until "
            f"{state.retained_until}",
        )

    def retire_expired(self, on: dt.date, by: str = "system") -> str | None:
        """Retire the retained previous version once ``on`` reached ``retained_until``: the registry alias
        ``previous`` no longer points at it (no rollback to it). Returns the retired version, if any."""
        state = self.load()
        if state.retained_version is None or state.retained_until is None:
            return None
        if on < dt.date.fromisoformat(state.retained_until):
            return None
        from churn_assets.modeling.registry import ModelRegistry

        retired = state.retained_version
        ModelRegistry(self.settings).retire_previous(retired, by=by)
        state.retained_version, state.retained_until = None, None
        self._event(state, "retire", by, f"v{retired}: retention ended on {on.isoformat()}")
        self.save(state)
        return retired

    def _audit(self, action: str, by: str, reason: str, state: RolloutState) -> None:
        from churn_assets.modeling.registry import ModelRegistry

        registry = ModelRegistry(self.settings)
        champion = registry.aliases().get("champion")
        registry.audit.append(
            action,
            registry.name,
            by,
            reason,
            version=state.candidate_version,
            champion_before=champion,
            champion_after=champion,
        )

    def rollback(self, by: str = "system", reason: str = "", registry: bool = True) -> RolloutState:
        """Stop the rollout (all traffic to the stable version) and roll the registry back.

        Without an active rollout this rolls back the last completed one: registry champion <- previous,
        and the restored version becomes the stable one. ``registry=False`` leaves MLflow untouched.
        """
        state = self.load()
        reason = reason or "rollout rollback"
        restored: str | None = state.stable_version
        if registry:
            from churn_assets.modeling.registry import CHAMPION, ModelRegistry, RegistryError

            reg = ModelRegistry(self.settings)
            champion = reg.aliases().get(CHAMPION)
            rollback_target = state.candidate_version if state.active else state.stable_version
            if champion is not None and champion == rollback_target:
                try:
                    restored = reg.rollback(by=by, reason=reason).champion_after
                except RegistryError as exc:
                    raise RolloutError(f"registry rollback failed: {exc}") from exc
        elif not state.active:
            raise RolloutError("no rollout is active and registry=False: nothing to roll back")
        state.phase, state.candidate_version, state.stable_version = "none", None, restored
        state.approved_by = None
        if restored == state.retained_version:
            state.retained_version, state.retained_until = None, None
        self._event(state, "rollback", by, reason)
        self.save(state)
        return state
