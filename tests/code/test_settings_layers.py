"""A setting given by environment variable reaches every layer that reads settings.

The code location's assets and sensors (definitions loaded under that environment, as in a run
subprocess the daemon launches), the CLI (a ``churnops`` subprocess) and the service runtime
(``churn_assets.serving.runtime.Runtime`` built from ``get_settings()``). The Dagster UI shows none of
the settings: they are no resource config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.defs.keys import (
    CHAMPION,
    DRIFT_REPORT,
    LABEL_STATUS,
    PERFORMANCE_REPORT,
    raw_asset_key,
)
from churn_assets.defs.partitions import WEEKS
from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.orchestration import load_definitions
from churn_assets.settings import ServingSettings, Settings, SimulationSettings, get_settings
from churn_assets.timeline import Timeline
from tests.contract_samples import WEEK, good_frame

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """This process's environment, with CHURNOPS_HOME in a fresh folder; settings re-read afterwards."""
    for key in [k for k in os.environ if k.startswith("CHURNOPS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_an_asset_run_reads_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CHURNOPS_CONTRACTS__MAX_QUARANTINE_SHARE", "0.37")
    week = WEEK.isoformat()
    landing = tmp_path / "home" / "landing" / "accounts"
    landing.mkdir(parents=True)
    good_frame("accounts").write_parquet(landing / f"{week}.parquet")
    defs = load_definitions()  # the code location's @dg.definitions: settings from the environment
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(WEEKS, [week])
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[raw_asset_key("accounts")], partition_key=week
        )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["max_quarantine_share"].value == 0.37
    assert (tmp_path / "home" / "warehouse.duckdb").exists()  # CHURNOPS_HOME: the run's warehouse


def test_a_sensor_reads_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CHURNOPS_AUTOMATION__RETRAIN_MIN_DRIFTED_FEATURES", "1")
    env.setenv("CHURNOPS_AUTOMATION__SENSOR_INTERVAL_SECONDS", "17")
    defs = load_definitions()
    sensor = defs.resolve_sensor_def("retrain_sensor")
    assert sensor.minimum_interval_seconds == 17
    week = Timeline.from_settings(SimulationSettings()).history_end.isoformat()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(WEEKS, [week])
        for key, metadata, partition in (
            (CHAMPION, {"decision": "promoted", "champion_after": "1"}, None),
            (PERFORMANCE_REPORT, {"auc": 0.9}, week),
            (DRIFT_REPORT, {"n_drifted_features": 1}, week),  # < the default 3, >= the environment's 1
            (LABEL_STATUS, {"new_labelled_rows": 0}, week),
        ):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
            )
        # As the code server evaluates a tick: the sensor's resources are the code location's.
        repository = defs.get_repository_def()
        resources = {k: repository.get_top_level_resources()[k] for k in sensor.required_resource_keys}
        context = dg.build_sensor_context(instance=instance, repository_def=repository, resources=resources)
        result = sensor(context)
    assert isinstance(result, list) and [r.run_key for r in result] == ["retrain:drift:1"]


@pytest.mark.service
def test_the_cli_reads_the_environment(tmp_path: Path, redis_url: str) -> None:
    prefix = f"churnops-test:{uuid.uuid4().hex}"
    serving = ServingSettings(rollout_backend="redis", redis_url=redis_url, redis_key_prefix=prefix)
    from churn_assets.serving.rollout import RolloutStore

    store = RolloutStore(Settings(home=tmp_path / "home", serving=serving))
    store.start("2", "1", reason="test")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    base["CHURNOPS_HOME"] = str(tmp_path / "home")
    redis_env = {
        "CHURNOPS_SERVING__ROLLOUT_BACKEND": "redis",
        "CHURNOPS_SERVING__REDIS_URL": redis_url,
        "CHURNOPS_SERVING__REDIS_KEY_PREFIX": prefix,
    }
    churnops = Path(sys.executable).parent / "churnops"
    try:
        phases = {}
        for name, extra in (("file", {}), ("redis", redis_env)):
            proc = subprocess.run(
                [str(churnops), "rollout", "status", "--json"],
                cwd=tmp_path,
                env=base | extra,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            state = json.loads(proc.stdout)
            phases[name] = (state["phase"], state["candidate_version"])
    finally:
        store._client().delete(store.key)
    assert phases == {"file": ("none", None), "redis": ("shadow", "2")}


@pytest.mark.service
def test_the_service_runtime_reads_the_environment(
    env: pytest.MonkeyPatch, tmp_path: Path, redis_url: str
) -> None:
    from churn_assets.modeling.training_set import feature_names
    from churn_assets.serving.runtime import Runtime
    from churn_assets.serving.scoring import ScoringModel
    from tests.serving_helpers import feature_frame, fill_online_store, train_model

    prefix = f"churnops-test:{uuid.uuid4().hex}"
    for key, value in {
        "ONLINE_BACKEND": "redis",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "REDIS_BATCH_SIZE": "7",
    }.items():
        env.setenv(f"CHURNOPS_FEATURE_STORE__{key}", value)
    env.setenv("CHURNOPS_SERVING__AS_OF", "2025-06-02")
    writer = RedisOnlineStore(redis_url, prefix)
    fill_online_store(writer, [1, 2, 3])
    model = ScoringModel(
        "churn-model", "1", train_model(feature_frame(range(1, 200)), 1), feature_names(), 0.5
    )
    runtime = Runtime(get_settings(), {"1": model}, "1")
    try:
        assert isinstance(runtime.store, RedisOnlineStore)
        assert (runtime.store.key_prefix, runtime.store.batch_size) == (prefix, 7)
        rows = runtime.features_for([1, 2, 3, 4])
        assert [bool(rows[c]) for c in (1, 2, 3, 4)] == [True, True, True, False]
    finally:
        runtime.close()
        writer.clear()
        writer.close()


def test_the_ui_shows_no_setting(env: pytest.MonkeyPatch) -> None:
    """The repository snapshot (what the webserver serves the UI) holds no setting value, secrets included."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    secret = uuid.uuid4().hex
    env.setenv("CHURNOPS_SERVING__API_KEY", secret)
    env.setenv("CHURNOPS_POSTGRES_URL", f"postgresql+psycopg2://u:{secret}@h/db")
    defs = load_definitions()
    snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert secret not in snapshot
    api_key = get_settings().serving.api_key
    assert api_key is not None and api_key.get_secret_value() == secret  # the settings resource holds it


def test_the_demo_hands_its_settings_to_the_daemon_through_the_child_environment(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``daemon_env``: the demo's Settings, rebuilt from the daemon's environment, are the same object
    value; a CHURNOPS_* variable of the demo's own environment does not leak into it."""
    from churn_assets.orchestration.demo import daemon_env, demo_settings

    settings = demo_settings(
        Settings(
            home=tmp_path / "demo",
            scale="tiny",
            serving=ServingSettings(api_key="k", as_of="2025-06-02"),  # type: ignore[arg-type]
        )
    )
    env.setenv("CHURNOPS_MONITORING__KS_FLOOR", "0.3")  # the demo process's own environment
    before = dict(os.environ)
    child = daemon_env(settings)
    assert dict(os.environ) == before  # this process's environment is untouched
    assert "CHURNOPS_MONITORING__KS_FLOOR" not in child
    assert child["DAGSTER_HOME"] == str(settings.dagster_home)
    for key in [k for k in os.environ if k.startswith("CHURNOPS_")]:
        env.delenv(key)
    for key, value in child.items():
        if key.startswith("CHURNOPS_"):
            env.setenv(key, value)
    assert Settings() == settings


def test_the_demo_trains_on_every_usable_core_unless_told_otherwise(tmp_path: Path) -> None:
    from churn_assets.orchestration.demo import demo_settings, usable_cores
    from churn_assets.settings import AutomationSettings

    assert usable_cores() == len(os.sched_getaffinity(0))
    demo = demo_settings(Settings(home=tmp_path))
    assert demo.modeling.n_jobs == usable_cores()
    assert demo.modeling.sample_rows == demo.automation.demo_sample_rows < Settings().modeling.sample_rows
    told = Settings(home=tmp_path, automation=AutomationSettings(demo_n_jobs=1))
    assert demo_settings(told).modeling.n_jobs == 1
    assert Settings(home=tmp_path).modeling.n_jobs == 1  # outside the demo: one thread per fit
