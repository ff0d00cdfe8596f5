"""MLflow registry -> BentoML model store -> bento, offline.

* :func:`sync_rollout` — align the rollout state with the registry: first deployment sets the champion
  stable; a new champion (promoted by the registry) starts a rollout in ``shadow`` from the old stable.
  A champion with features the feature store does not declare is refused (the service could not read
  them), before the rollout state changes.
* :func:`export_version` — copy a registered version's MLflow model into the BentoML model store
  (``settings.bentoml_home``) as ``<registered name>:v<version>`` with ``serving.json`` (features, threshold,
  flavor, semver, calibrator, ensemble members and weights) beside it.
* :func:`write_manifest` — ``<BentoML home>/serving_models.json``: the BentoML tags of the stable and
  (during a rollout) candidate models, read by ``bento/service.py`` to declare its ``BentoModel``
  attributes. It lives with the settings' BentoML home, never in the source tree: two homes (two users,
  two test processes) serve and build from one checkout without touching each other's models.
* :func:`build_bento` — the above, then ``bentoml build`` (``python.lock_packages: false``: no package
  index needed) in a subprocess with ``BENTOML_HOME`` from the settings, from a build context of its own
  (the sources the bentofile includes, copied under the BentoML home, with the manifest beside
  ``service.py`` as ``bundled_serving_models.json``, where the built bento's service reads it); the bento tag is recorded on the
  registry version (tag ``bento_tag``). Versions other than stable / candidate / previous are removed from
  the model store once older than ``serving.previous_retention_days``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn_assets.feature_store.definitions import unknown_features
from churn_assets.serving.rollout import RolloutState, RolloutStore
from churn_assets.settings import Settings, child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
BENTO_DIR = REPO_ROOT / "bento"
MANIFEST_NAME = "serving_models.json"
# The manifest a built bento carries beside its service.py (a name the source tree never holds, so a
# service run from source never mistakes a leftover file for its home's manifest).
BUNDLED_MANIFEST_NAME = "bundled_serving_models.json"
# What the bentofile includes (bento/bentofile.yaml), copied into each build's own context.
BUILD_SOURCES = ("bento", "churn_assets", "data_contracts")
META_FILE = "serving.json"


class BentoBuildError(RuntimeError):
    """The bento cannot be built (no champion, failed build...)."""


def bentoml_env(settings: Settings) -> dict[str, str]:
    """Environment of a BentoML subprocess: its home under settings.home, no telemetry, and ``settings``
    (``CHURNOPS_*``) -- not whatever this process's environment holds."""
    env = {k: v for k, v in child_env(settings, os.environ).items() if not k.startswith("BENTOML_HOME")}
    env.update(BENTOML_HOME=str(settings.bentoml_home), BENTOML_DO_NOT_TRACK="True")
    return env


def model_store(settings: Settings) -> Any:
    from bentoml._internal.models.model import ModelStore

    path = settings.bentoml_home / "models"
    path.mkdir(parents=True, exist_ok=True)
    return ModelStore(str(path))


def bento_tag_of(settings: Settings, version: str) -> str:
    return f"{settings.modeling.registered_model_name}:v{version}"


def sync_rollout(settings: Settings, by: str = "champion_bento") -> RolloutState:
    """Make the rollout state follow the registry's champion (see module docstring)."""
    from churn_assets.modeling.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(settings)
    champion_version = registry.version_by_alias(CHAMPION)
    if champion_version is None:
        raise BentoBuildError("the registry has no champion: run `churnops train` first")
    champion = str(champion_version.version)
    unknown = unknown_features(json.loads(champion_version.tags.get("features", "[]")))
    if unknown:
        raise BentoBuildError(
            f"champion v{champion} of {registry.name!r} uses feature(s) the feature store does not have "
            f"({', '.join(unknown[:12])}): the service could not score it; nothing deployed. Roll the "
            "registry back (`churnops rollback`)."
        )
    store = RolloutStore(settings)
    state = store.load()
    if state.stable_version is None:
        return store.set_stable(champion, by=by, reason="first deployment of the champion")
    if champion in (state.stable_version, state.candidate_version):
        return state
    if state.active:
        raise BentoBuildError(
            f"champion is v{champion} but a rollout to v{state.candidate_version} is active: "
            "finish or roll it back first (`churnops rollout advance|rollback`)"
        )
    return store.start(champion, state.stable_version, by=by, reason=f"registry promoted v{champion}")


def export_version(settings: Settings, version: str) -> str:
    """Export registry version ``version`` into the BentoML model store (idempotent); returns the tag."""
    import bentoml
    import mlflow.artifacts
    from bentoml.exceptions import NotFound

    from churn_assets.modeling.registry import ModelRegistry

    store = model_store(settings)
    tag = bento_tag_of(settings, version)
    try:
        store.get(tag)
        return tag
    except NotFound:
        pass
    registry = ModelRegistry(settings)
    mv = registry.client.get_model_version(registry.name, str(version))
    tags = dict(mv.tags)
    meta = {
        "name": registry.name,
        "version": str(version),
        "semver": tags.get("semver"),
        "flavor": tags.get("flavor", "sklearn"),
        "features": json.loads(tags["features"]),
        "threshold": float(tags["metric.threshold"]),
        "calibration": tags.get("calibration"),
        "ensemble_members": json.loads(tags.get("ensemble_members", "{}")),
        "source": str(mv.source),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="churnops-export-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=str(mv.source), dst_path=tmp)
        with bentoml.models.create(
            tag,
            labels={"registry_version": str(version), "semver": str(meta["semver"])},
            metadata={k: v for k, v in meta.items() if k != "features" and v is not None},
            _model_store=store,
        ) as bento_model:
            shutil.copytree(local, bento_model.path_of("mlflow_model"))
            Path(bento_model.path_of(META_FILE)).write_text(json.dumps(meta, indent=1))
    return tag


def load_exported(path: str | Path) -> Any:
    """A :class:`~churn_assets.serving.scoring.ScoringModel` from an exported BentoML model directory."""
    from churn_assets.modeling.tracking import load_model
    from churn_assets.serving.scoring import ScoringModel

    root = Path(path)
    meta = json.loads((root / META_FILE).read_text())
    model = load_model(str(root / "mlflow_model"), meta["flavor"])
    return ScoringModel(
        name=meta["name"],
        version=meta["version"],
        model=model,
        features=meta["features"],
        threshold=meta["threshold"],
        flavor=meta["flavor"],
        semver=meta.get("semver"),
    )


def manifest_path(settings: Settings) -> Path:
    """Where ``settings``' serving manifest lives: in its BentoML home (the service run from source reads
    it there; a built bento carries its own copy beside ``service.py``)."""
    return settings.bentoml_home / MANIFEST_NAME


def write_manifest(settings: Settings, state: RolloutState) -> dict[str, str | None]:
    """Export stable (+ candidate) and write the manifest the service declares its models from."""
    if state.stable_version is None:
        raise BentoBuildError("rollout state has no stable version")
    manifest = {
        "stable": export_version(settings, state.stable_version),
        "candidate": export_version(settings, state.candidate_version) if state.active else None,  # type: ignore[arg-type]
    }
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)  # a service starting meanwhile reads the old manifest or the new one, never half
    return manifest


def build_context(settings: Settings) -> Path:
    """A fresh copy of the sources the bentofile includes, under the BentoML home, with the serving
    manifest beside ``service.py``: what ``bentoml build`` packs (the source tree is only read)."""
    context = settings.bentoml_home / "build-context"
    shutil.rmtree(context, ignore_errors=True)
    for name in BUILD_SOURCES:
        shutil.copytree(
            REPO_ROOT / name,
            context / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", MANIFEST_NAME, BUNDLED_MANIFEST_NAME),
        )
    shutil.copy2(manifest_path(settings), context / BENTO_DIR.name / BUNDLED_MANIFEST_NAME)
    return context


def prune(settings: Settings, keep: set[str]) -> list[str]:
    """Delete exported versions not in ``keep`` that are older than ``previous_retention_days``."""
    store = model_store(settings)
    limit = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.serving.previous_retention_days)
    removed = []
    for model in store.list(settings.modeling.registered_model_name):
        created = model.info.creation_time
        created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
        if str(model.tag) not in keep and created < limit:
            store.delete(model.tag)
            removed.append(str(model.tag))
    return removed


@dataclass(frozen=True)
class BentoBuild:
    bento_tag: str
    stable: str
    candidate: str | None
    phase: str
    removed: list[str]


def build_bento(settings: Settings) -> BentoBuild:
    """Sync the rollout, export its models, ``bentoml build`` offline, tag the registry version."""
    from churn_assets.modeling.registry import PREVIOUS, ModelRegistry

    state = sync_rollout(settings)
    manifest = write_manifest(settings, state)
    registry = ModelRegistry(settings)
    previous = registry.aliases().get(PREVIOUS)
    keep = {t for t in manifest.values() if t}
    if previous is not None:
        keep.add(export_version(settings, previous))
    context = build_context(settings)
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "build",
            str(context),
            "-f",
            str(context / BENTO_DIR.name / "bentofile.yaml"),
            "--output",
            "tag",
        ],
        env=bentoml_env(settings),
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BentoBuildError(f"bentoml build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("__tag__:")]
    if not lines:
        raise BentoBuildError(f"bentoml build printed no tag: {proc.stdout[-1000:]}")
    bento_tag = lines[-1].removeprefix("__tag__:").strip()
    served = state.candidate_version if state.active else state.stable_version
    registry.client.set_model_version_tag(registry.name, str(served), "bento_tag", bento_tag)
    return BentoBuild(
        bento_tag=bento_tag,
        stable=str(manifest["stable"]),
        candidate=manifest["candidate"],
        phase=state.phase,
        removed=prune(settings, keep),
    )


def kept_bento(decided: bool, decision_path: Path, settings: Settings) -> str | None:
    """The existing bento's tag when this run's promotion decision kept the champion, else None (build).

    A kept (or pending) champion changes neither the served models nor the rollout, so rebuilding would
    reproduce the bento already there; a promotion, a run without a decision, or no bento yet -> build.
    """
    if not decided or not decision_path.exists():
        return None
    if json.loads(decision_path.read_text()).get("outcome") == "promoted":
        return None
    return latest_bento(settings)


def latest_bento(settings: Settings) -> str | None:
    """The newest built bento's tag in this settings' BentoML home (None when none was built)."""
    root = settings.bentoml_home / "bentos" / "churn_service"
    if not root.exists():
        return None
    versions = [p for p in root.iterdir() if p.is_dir() and p.name != "latest"]
    if not versions:
        return None
    newest = max(versions, key=lambda p: p.stat().st_mtime)
    return f"churn_service:{newest.name}"
