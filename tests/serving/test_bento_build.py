"""The champion_bento asset: MLflow champion -> BentoML model store -> `bentoml build` offline."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.defs.assets.serving import champion_bento
from churn_assets.defs.keys import CHAMPION_BENTO
from churn_assets.defs.resources import build_resources
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.serving.bento_build import REPO_ROOT, kept_bento, latest_bento, load_exported, model_store
from churn_assets.serving.rollout import RolloutStore
from tests.serving_helpers import feature_frame, register, register_models, serving_settings, train_model

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]


def test_champion_bento_exports_the_champion_and_builds_offline(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path)
    previous, champion = register_models(settings)
    result = dg.materialize([champion_bento], resources=build_resources(settings))
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == CHAMPION_BENTO]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    # First deployment: the champion becomes the stable version, no rollout yet.
    assert meta["rollout_phase"] == "none" and meta["candidate_model"] == "none"
    assert meta["stable_model"] == f"churn-model:v{champion}"
    bento_tag = str(meta["bento_tag"])
    assert bento_tag.startswith("churn_service:") and latest_bento(settings) == bento_tag
    assert ModelRegistry(settings).tags(champion)["bento_tag"] == bento_tag
    bento_dir = settings.bentoml_home / "bentos" / "churn_service" / bento_tag.split(":")[1]
    assert (bento_dir / "src" / "bento" / "service.py").exists()
    # The bento carries the manifest it was built with; the source tree is left alone.
    bundled = json.loads((bento_dir / "src" / "bento" / "bundled_serving_models.json").read_text())
    assert bundled == {"stable": f"churn-model:v{champion}", "candidate": None}
    assert not list((REPO_ROOT / "bento").glob("*serving_models.json"))
    assert (bento_dir / "src" / "churn_assets" / "serving" / "app.py").exists()
    assert "churn-model" in (bento_dir / "bento.yaml").read_text()
    # The exported model scores like the registry version.
    stored = model_store(settings).get(f"churn-model:v{champion}")
    exported = load_exported(stored.path)
    assert (exported.version, exported.threshold) == (champion, 0.5)

    # A retraining that KEPT the champion reuses this bento; a promotion (or a run that decided
    # nothing, like this standalone materialization) builds.
    decision = tmp_path / "champion.json"
    decision.write_text('{"outcome": "kept"}')
    assert kept_bento(True, decision, settings) == bento_tag
    assert kept_bento(False, decision, settings) is None
    decision.write_text('{"outcome": "promoted"}')
    assert kept_bento(True, decision, settings) is None

    # `churnops serve` serves that bento (not the source tree).
    _serve_the_built_bento(settings, bento_tag, champion)

    # A retrain the registry promotes: the next build starts a rollout and ships both models.
    newer = register(settings, train_model(feature_frame(range(1, 301)), 3, n_estimators=5), 0.45, 0.99)
    again = dg.materialize([champion_bento], resources=build_resources(settings))
    [event] = [e for e in again.get_asset_materialization_events() if e.asset_key == CHAMPION_BENTO]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["rollout_phase"] == "shadow"
    assert (meta["stable_model"], meta["candidate_model"]) == (
        f"churn-model:v{champion}",
        f"churn-model:v{newer}",
    )
    state = RolloutStore(settings).load()
    assert (state.stable_version, state.candidate_version) == (champion, newer)
    assert previous  # v1 was never the served champion in this test


def _serve_the_built_bento(settings, bento_tag: str, champion: str) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    import httpx

    from churn_assets.serving.bento_build import bentoml_env
    from tests.serving.conftest import CHURNOPS, free_port, stop_service, wait_ready
    from tests.serving_helpers import feature_frame

    port = free_port()
    log_path = settings.logs_dir / "churnops-serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    key = "bento-build-test-key"
    env = {**bentoml_env(settings), "CHURNOPS_SERVING__AS_OF": "2025-06-02", "CHURNOPS_SERVING__API_KEY": key}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(CHURNOPS), "serve", "--port", str(port)],
            env=env,
            cwd=settings.home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
        assert f"serving bento {bento_tag}" in log_path.read_text()
        row = feature_frame([1]).astype(object).iloc[0].to_dict()
        row = {k: (None if v != v else v) for k, v in row.items()}  # NaN -> null
        url = f"http://127.0.0.1:{port}/predict_features"
        r = httpx.post(url, json={"rows": [row]}, headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["model_version"] == champion
    finally:
        stop_service(proc)


def test_prune_keeps_the_previous_model_for_the_retention_period(tmp_path: Path) -> None:
    """An exported version outside the bento stays in the store until it is older than the retention."""
    from churn_assets.serving.bento_build import export_version, prune

    settings = serving_settings(tmp_path)  # previous_retention_days = 14 by default
    previous, champion = register_models(settings, n=300)
    old_tag, new_tag = export_version(settings, previous), export_version(settings, champion)
    stored = {str(m.tag) for m in model_store(settings).list("churn-model")}
    assert {old_tag, new_tag} <= stored

    # Within 14 days nothing is removed, even what the bento no longer ships.
    assert prune(settings, keep={new_tag}) == []
    assert {str(m.tag) for m in model_store(settings).list("churn-model")} == stored

    # Past the retention the version outside `keep` goes; the kept one stays.
    expired = serving_settings(tmp_path, previous_retention_days=0)
    assert prune(expired, keep={new_tag}) == [old_tag]
    assert {str(m.tag) for m in model_store(settings).list("churn-model")} == {new_tag}


def test_kept_champion_without_a_bento_still_builds(tmp_path: Path) -> None:
    settings = serving_settings(tmp_path)
    decision = tmp_path / "champion.json"
    assert kept_bento(True, decision, settings) is None  # no decision recorded
    decision.write_text('{"outcome": "kept"}')
    assert kept_bento(True, decision, settings) is None  # nothing built yet


def test_a_champion_with_features_the_store_lacks_is_not_deployed(tmp_path: Path) -> None:
    """A production champion on foreign features (a registry written before registration refused them,
    or edited by hand) stops the build with the features named; the rollout state stays as it was."""
    import json

    from sklearn.linear_model import LogisticRegression

    from churn_assets.modeling.tracking import configure, log_candidate_run
    from churn_assets.serving.bento_build import BentoBuildError, sync_rollout

    settings = serving_settings(tmp_path)
    _previous, champion = register_models(settings, n=200)
    assert sync_rollout(settings).stable_version == champion
    before = RolloutStore(settings).load()
    frame = feature_frame(range(1, 101))
    foreign = LogisticRegression().fit(frame[["tenure_days"]].set_axis(["f0"], axis=1), [0, 1] * 50)
    logged = log_candidate_run(configure(settings), "byo", foreign, "sklearn", {}, {"auc": 0.9})
    registry = ModelRegistry(settings)
    mv = registry.client.create_model_version(
        registry.name, logged.model_uri, run_id=logged.run_id, tags={"features": json.dumps(["f0"])}
    )
    registry.client.set_registered_model_alias(registry.name, "champion", str(mv.version))
    with pytest.raises(BentoBuildError, match=r"champion v\d+ of 'churn-model' uses feature\(s\).*\(f0\)"):
        sync_rollout(settings)
    assert RolloutStore(settings).load() == before
