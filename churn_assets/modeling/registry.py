"""The MLflow model registry of churnops: versions, tags, aliases, promotion, approval, rollback.

One :class:`ModelRegistry` handles one registered model. The PRODUCTION model is
``settings.modeling.registered_model_name`` (``churn-model``): the Dagster training graph registers
there and serving deploys its champion. Any other name is a model of its own, e.g. the one
``churnops train-table`` registers for a bring-your-own table (named after the file, or
``--model-name``); its versions, aliases and audit entries never touch the production model's.

Every version carries tags: ``semver`` (major.minor.patch), ``artifact_sha256`` (the model file),
``data_sha256`` (the training-data snapshot), ``eval_sha256`` (the holdout its metrics were measured
on, :func:`holdout_sha256`), ``features`` (JSON list — the feature → model dependency), ``flavor``,
``gates_passed`` and ``metric.<name>`` for each metric (6 decimals; ``metric.threshold``, the decision
threshold serving applies, with every digit: :func:`metric_tag`). A version whose features are all feature-store
features (any registered model's, e.g. the production model and ``churn-30d``) also has them recorded in
the warehouse's ``features.model_dependencies`` at the simulated clock, and the features of this model's
aliased versions are stamped as used (``feature_store.lifecycle``): ``churnops features usage``.

The production model serves from the online feature store, so a version whose features are not all
declared in the feature store (``feature_store.definitions``) is refused under the production name
(:func:`check_registrable`, a :class:`RegistryError` naming the features).

Semantic version: the first version is 1.0.0; a version whose feature list differs from the latest
one bumps MAJOR (consumers must supply other features); the same features with a new artifact bump
MINOR (a retrain, e.g. 1.0.0 → 1.1.0); re-registering an identical artifact bumps PATCH.

Aliases: ``challenger`` — the latest registered candidate; ``champion`` — the model to serve;
``previous`` — the champion before the current one (rollback target).

Promotion (:meth:`ModelRegistry.consider`): with no champion, a challenger that passes every gate is
promoted. Otherwise it is promoted only if every gate passed AND its AUC on the SAME holdout beats
the champion's by MORE than ``min_auc_gain``; else the champion stays. The champion's AUC is always
measured by scoring it on the challenger's holdout (:meth:`ModelRegistry.holdout_auc`); a champion
that cannot score that holdout (its features are not columns of it: it was evaluated on other data)
is not compared — the challenger is kept, never promoted on a figure measured elsewhere. In
``manual`` mode a promotable challenger is marked ``promotion=pending`` and waits for
:meth:`ModelRegistry.approve`, which records the approver. :meth:`ModelRegistry.rollback` swaps
``champion`` and ``previous``: the rolled-back model becomes ``previous`` (and is tagged
``rolled_back``), so a second rollback undoes the first. Every decision — including "kept" — is
appended to the audit log (``audit.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from churn_assets.feature_store.definitions import all_features, unknown_features
from churn_assets.feature_store.lifecycle import AliasedVersion, feature_clock, observe_usage
from churn_assets.feature_store.registry import record_model_features
from churn_assets.modeling.audit import AuditEntry, AuditLog
from churn_assets.modeling.categories import align_categories, training_categories
from churn_assets.modeling.evaluation import GateResult
from churn_assets.modeling.paths import audit_url
from churn_assets.modeling.tracking import LoggedRun, configure, load_model
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
LIGHTGBM_PARAMS_TAG = "lightgbm_params"  # search-space params of a LightGBM version (retraining)


def metric_tag(name: str, value: float) -> str:
    """The ``metric.<name>`` tag value: 6 decimals, except the decision threshold, kept exactly (``repr``).

    Serving labels a row positive when its score is at or above the tag's threshold, and the rollout
    review compares those labels with the positive rate the version had at validation at the exact
    threshold. An ``isotonic_ranked`` calibration (``evaluation.RankedIsotonic``) breaks its plateaus by
    a 1e-5 share of the raw score, so the scores of one plateau differ from the 7th decimal on and the
    F1-best threshold usually sits inside a plateau: rounded to 6 decimals it moves a slice of rows across
    the threshold."""
    return repr(float(value)) if name == "threshold" else f"{value:.6f}"


class RegistryError(RuntimeError):
    """A registry operation is not possible (e.g. nothing to approve or roll back to)."""


class HoldoutMismatch(RegistryError):
    """The champion cannot be scored on the challenger's holdout: their AUCs are not comparable."""


def check_registrable(settings: Settings, name: str, features: Sequence[str]) -> None:
    """Refuse (:class:`RegistryError`) features the feature store lacks under the production name."""
    if name != settings.modeling.registered_model_name:
        return
    unknown = unknown_features(features)
    if not unknown:
        return
    shown = ", ".join(unknown[:12]) + (f", … ({len(unknown)} in all)" if len(unknown) > 12 else "")
    raise RegistryError(
        f"refusing to register a version under {name!r}, the production model: serving reads its features "
        f"from the feature store, which has no feature(s) {shown} (it declares {len(all_features())} "
        "features: churnops features list). Register this model under its own name "
        "(churnops train-table --model-name NAME; the default is the file's name)."
    )


def holdout_sha256(X: pd.DataFrame, y: Any) -> str:
    """Fingerprint of an evaluation holdout: its column names, feature values and labels (row order
    matters, the index does not)."""
    digest = hashlib.sha256(json.dumps([str(c) for c in X.columns]).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(np.asarray(y).astype("int64").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version: MLflow version number and semantic version."""

    name: str
    version: str
    semver: str


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of a promotion check: ``promoted`` / ``kept`` / ``pending``, why, and the numbers."""

    outcome: str
    reason: str
    challenger: str
    champion_before: str | None
    champion_after: str | None
    challenger_auc: float
    champion_auc: float | None

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"


def decide(
    challenger_auc: float, champion_auc: float | None, gates: Sequence[GateResult], min_auc_gain: float
) -> tuple[bool, str]:
    """Pure promotion rule: ``(promote?, reason)``."""
    failed = [g.name for g in gates if not g.passed]
    if failed:
        return False, f"gate(s) failed: {', '.join(failed)}"
    if champion_auc is None:
        return True, "no champion yet and every gate passed"
    gain = challenger_auc - champion_auc
    if gain > min_auc_gain:
        return True, f"AUC gain {gain:+.4f} > {min_auc_gain} and every gate passed"
    return False, f"AUC gain {gain:+.4f} not > {min_auc_gain}; champion stays"


def next_semver(latest: str | None, same_features: bool, same_artifact: bool) -> str:
    """The semantic version of a new registration (see module docstring)."""
    if latest is None:
        return "1.0.0"
    major, minor, patch = (int(x) for x in latest.split("."))
    if not same_features:
        return f"{major + 1}.0.0"
    if same_artifact:
        return f"{major}.{minor}.{patch + 1}"
    return f"{major}.{minor + 1}.0"


class ModelRegistry:
    """Registry operations for one registered model, with every decision appended to the audit log."""

    def __init__(self, settings: Settings, name: str | None = None) -> None:
        """The registered model ``name``; None = the production model
        (``settings.modeling.registered_model_name``)."""
        self.settings = settings
        self.tracking = configure(settings)
        self.client = self.tracking.client
        self.name = name or settings.modeling.registered_model_name
        self.audit = AuditLog(audit_url(settings))

    # -- reading -------------------------------------------------------------------------------
    def version_by_alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def versions(self) -> list[ModelVersion]:
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        """alias → version number."""
        out = {}
        for alias in (CHAMPION, CHALLENGER, PREVIOUS):
            mv = self.version_by_alias(alias)
            if mv is not None:
                out[alias] = str(mv.version)
        return out

    def aliased_versions(self) -> list[AliasedVersion]:
        """The versions of this model that hold an alias now, with their aliases."""
        held: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            held.setdefault(version, []).append(alias)
        return [AliasedVersion(self.name, v, tuple(a)) for v, a in held.items()]

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)

    @property
    def is_production(self) -> bool:
        return self.name == self.settings.modeling.registered_model_name

    def holdout_auc(self, alias: str, X: pd.DataFrame, y: Any) -> float | None:
        """AUC of the model behind ``alias`` scored on the given holdout; None when there is no such alias.

        Raises :class:`HoldoutMismatch` when the model cannot score the holdout (some of its features
        are not columns of ``X``): it was evaluated on other data, and a recorded AUC from there is
        never compared with one measured here.
        """
        mv = self.version_by_alias(alias)
        if mv is None:
            return None
        features = json.loads(mv.tags.get("features", "[]"))
        missing = [f for f in features if f not in X.columns]
        if missing:
            shown = ", ".join(missing[:8]) + (f", … ({len(missing)} in all)" if len(missing) > 8 else "")
            raise HoldoutMismatch(
                f"{alias} version {mv.version} of {self.name!r} cannot be scored on this holdout: its "
                f"feature(s) {shown} are not in it (the {alias} was evaluated on other data, "
                f"eval_sha256 {mv.tags.get('eval_sha256', 'unknown')[:12]}); AUCs measured on different "
                "data are not compared"
            )
        model = load_model(str(mv.source), mv.tags.get("flavor", "sklearn"))
        frame = align_categories(training_categories(model), X[features] if features else X)
        p = np.asarray(model.predict_proba(frame))[:, 1]
        return float(roc_auc_score(np.asarray(y).astype(int), p))

    def lightgbm_params(self, alias: str = CHAMPION) -> dict[str, Any] | None:
        """The LightGBM search-space parameters (tag ``lightgbm_params``) of the version behind ``alias``;
        None when there is no such version or it is not a LightGBM model."""
        mv = self.version_by_alias(alias)
        if mv is None or LIGHTGBM_PARAMS_TAG not in mv.tags:
            return None
        return dict(json.loads(mv.tags[LIGHTGBM_PARAMS_TAG]))

    def read_audit(self, limit: int | None = None) -> list[AuditEntry]:
        return self.audit.read(self.name, limit)

    # -- writing -------------------------------------------------------------------------------
    def register(
        self,
        logged: LoggedRun,
        features: Sequence[str],
        data_hash: str,
        metrics: Mapping[str, float],
        gates: Sequence[GateResult],
        actor: str = "system",
        extra_tags: Mapping[str, str] | None = None,
    ) -> RegisteredVersion:
        """Register a logged model as a new version, tag it (plus ``extra_tags``), and point
        ``challenger`` at it. Under the production name, features the feature store lacks are refused
        (:func:`check_registrable`)."""
        check_registrable(self.settings, self.name, features)
        existing = self.versions()
        latest = existing[-1] if existing else None
        semver = next_semver(
            latest.tags.get("semver") if latest else None,
            same_features=latest is not None
            and json.loads(latest.tags.get("features", "[]")) == list(features),
            same_artifact=latest is not None and latest.tags.get("artifact_sha256") == logged.artifact_hash,
        )
        tags = {
            "semver": semver,
            "artifact_sha256": logged.artifact_hash,
            "data_sha256": data_hash,
            "features": json.dumps(list(features)),
            "flavor": logged.flavor,
            "run_id": logged.run_id,
            "gates_passed": str(all(g.passed for g in gates)).lower(),
            "gates": json.dumps(
                {g.name: {"value": g.value, "limit": g.limit, "passed": g.passed} for g in gates}
            ),
            **{f"metric.{k}": metric_tag(k, v) for k, v in metrics.items()},
            **dict(extra_tags or {}),
        }
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(
                self.name, description="Customer churn classifier (churnops)."
            )
        mv = self.client.create_model_version(self.name, logged.model_uri, run_id=logged.run_id, tags=tags)
        version = str(mv.version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        self.record_feature_dependencies(version, features)
        self.audit.append(
            "register",
            self.name,
            actor,
            f"new version {semver} from run {logged.run_id}",
            version=version,
            semver=semver,
            champion_before=self.aliases().get(CHAMPION),
            champion_after=self.aliases().get(CHAMPION),
            metrics=dict(metrics),
        )
        return RegisteredVersion(self.name, version, semver)

    def record_feature_dependencies(self, version: str, features: Sequence[str]) -> bool:
        """Record ``version``'s features in the warehouse's dependency table and stamp the features of this
        model's aliased versions as used, at the simulated clock. A model with features the feature store
        does not declare (a bring-your-own table) was not built from it: nothing is recorded (False)."""
        if not features or unknown_features(features):
            return False
        with Warehouse.of(self.settings).connect() as con:
            now = feature_clock(con)
            record_model_features(con, self.name, version, features, recorded_at=now)
            observe_usage(con, self.aliased_versions(), now)
        return True

    def consider(
        self,
        version: str,
        challenger_auc: float,
        champion_auc: float | None,
        gates: Sequence[GateResult],
        actor: str = "system",
        not_compared: str | None = None,
        eval_sha256: str | None = None,
    ) -> PromotionDecision:
        """Apply the promotion rule to ``version`` (AUCs measured on the same holdout) and log it.

        ``not_compared``: why the champion could not be measured on the challenger's holdout
        (:class:`HoldoutMismatch`); with a champion present the challenger is then kept, whatever its
        AUC. ``eval_sha256``: the holdout's fingerprint, recorded with the decision's numbers.
        """
        champion = self.aliases().get(CHAMPION)
        if champion == version:
            raise RegistryError(f"version {version} already is the champion")
        if champion is None or not_compared is not None:
            champion_auc = None
        elif champion_auc is None:
            raise RegistryError(f"champion {champion} exists: pass its AUC on the same holdout (holdout_auc)")
        if champion is not None and not_compared is not None:
            promote, reason = False, f"not compared with the champion: {not_compared}; champion stays"
        else:
            promote, reason = decide(challenger_auc, champion_auc, gates, self.settings.modeling.min_auc_gain)
        numbers = {
            "challenger_auc": challenger_auc,
            "champion_auc": champion_auc,
            "min_auc_gain": self.settings.modeling.min_auc_gain,
            **({"eval_sha256": eval_sha256} if eval_sha256 else {}),
            **{f"gate.{g.name}": g.value for g in gates},
        }
        if promote and self.settings.modeling.promotion_mode == "manual":
            self.client.set_model_version_tag(self.name, version, "promotion", "pending")
            self.client.set_model_version_tag(self.name, version, "promotion_reason", reason)
            self.client.set_model_version_tag(self.name, version, "promotion_numbers", json.dumps(numbers))
            outcome, after = "pending", champion
            reason = f"{reason}; manual mode: waiting for approval"
        elif promote:
            self._promote(version)
            outcome, after = "promoted", version
        else:
            self.client.set_model_version_tag(self.name, version, "promotion", "rejected")
            outcome, after = "kept", champion
        self.audit.append(
            outcome,
            self.name,
            actor,
            reason,
            version=version,
            semver=self.tags(version).get("semver"),
            champion_before=champion,
            champion_after=after,
            metrics=numbers,
        )
        return PromotionDecision(outcome, reason, version, champion, after, challenger_auc, champion_auc)

    def approve(self, by: str) -> PromotionDecision:
        """Manual mode: promote the pending challenger and record the approver."""
        if not by.strip():
            raise RegistryError("approve needs the approver's name (--by NAME)")
        challenger = self.version_by_alias(CHALLENGER)
        if challenger is None or challenger.tags.get("promotion") != "pending":
            raise RegistryError("no challenger is waiting for approval")
        version = str(challenger.version)
        champion = self.aliases().get(CHAMPION)
        numbers = json.loads(challenger.tags.get("promotion_numbers", "{}"))
        self._promote(version)
        self.client.set_model_version_tag(self.name, version, "approved_by", by)
        reason = f"approved by {by}: {challenger.tags.get('promotion_reason', '')}"
        self.audit.append(
            "approved",
            self.name,
            by,
            reason,
            version=version,
            semver=challenger.tags.get("semver"),
            champion_before=champion,
            champion_after=version,
            metrics=numbers,
        )
        return PromotionDecision(
            "promoted",
            reason,
            version,
            champion,
            version,
            float(numbers.get("challenger_auc") or float("nan")),
            numbers.get("champion_auc"),
        )

    def rollback(self, by: str = "system", reason: str = "manual rollback") -> PromotionDecision:
        """Make ``previous`` the champion again; the rolled-back champion becomes ``previous``."""
        current, previous = self.version_by_alias(CHAMPION), self.version_by_alias(PREVIOUS)
        if current is None or previous is None:
            raise RegistryError("rollback needs both a champion and a previous version")
        cur, prev = str(current.version), str(previous.version)
        self.client.set_registered_model_alias(self.name, CHAMPION, prev)
        self.client.set_registered_model_alias(self.name, PREVIOUS, cur)
        self.client.set_model_version_tag(self.name, cur, "rolled_back", "true")
        self.client.set_model_version_tag(self.name, prev, "promotion", "promoted")
        metrics = {
            "rolled_back_auc": current.tags.get("metric.auc"),
            "restored_auc": previous.tags.get("metric.auc"),
        }
        self.audit.append(
            "rollback",
            self.name,
            by,
            reason,
            version=prev,
            semver=previous.tags.get("semver"),
            champion_before=cur,
            champion_after=prev,
            metrics=metrics,
        )
        return PromotionDecision("rolled_back", reason, prev, cur, prev, float("nan"), None)

    def retire_previous(self, version: str, by: str = "system") -> None:
        """End the retention of ``version`` after a full rollout: alias ``previous`` is removed when it
        points at it (rollback to it is no longer offered); tag ``retired`` and an audit entry record it."""
        if self.aliases().get(PREVIOUS) == str(version):
            self.client.delete_registered_model_alias(self.name, PREVIOUS)
        self.client.set_model_version_tag(self.name, str(version), "retired", "true")
        champion = self.aliases().get(CHAMPION)
        self.audit.append(
            "retired",
            self.name,
            by,
            f"v{version}: retention after the full rollout ended",
            version=str(version),
            champion_before=champion,
            champion_after=champion,
        )

    def _promote(self, version: str) -> None:
        champion = self.aliases().get(CHAMPION)
        if champion is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, champion)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        if self.aliases().get(CHALLENGER) == version:
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        self.client.set_model_version_tag(self.name, version, "promotion", "promoted")
