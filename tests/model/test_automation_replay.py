"""Small-scale replay of the automation chain, in process.

The sensors are ticked by the demo's in-process driver (``orchestration/sensor_driver.py``) against a
real (temporary) instance and each RunRequest they return is executed in process (``execute_in_process``
with the request's partition, tags and run config) — the same definitions the daemon runs; the daemon
path itself is exercised by tests/model/test_demo_drivers.py and ``churnops demo --driver daemon``.

World: 1,500 customers, 6 history months, the campaign from production week 1 (its new customers shift
the feature distributions at once). The first champion is trained on history; each production week is
launched by ``new_week_sensor``; the drift report of the campaign week makes ``retrain_sensor`` request a
retraining (tag ``churnops/trigger=drift``); the retraining promotes, rebuilds the bento and starts the
rollout in shadow; the next week's review lets ``rollout_sensor`` advance it. The campaign week's run
stays green while its WARN check ``no_material_drift`` fails, and ``week_alerts`` posts the drift alert
(once) to a webhook receiver on a loopback port; so does a rollback step run at the end.

``min_auc_gain`` is set to -1 so that a challenger trained on (almost) the same labelled data gets
promoted: this test is about the chain, not about model quality (a tiny world's AUC differences are
noise). Small-world gate limits are widened as in tests/model/test_training_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_assets.defs.jobs import PRODUCTION_JOB, RETRAINING_JOB, ROLLOUT_STEP_JOB
from churn_assets.defs.keys import (
    CHAMPION,
    CHAMPION_BENTO,
    DRIFT_REPORT,
    LABEL_STATUS,
    PERFORMANCE_REPORT,
    ROLLOUT_START,
)
from churn_assets.defs.sensors import metadata_of
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.orchestration import QUIET_CONSOLE, register_weeks
from churn_assets.orchestration.sensor_driver import SensorDriver
from churn_assets.settings import (
    AlertSettings,
    AutomationSettings,
    FeatureStoreSettings,
    ModelingSettings,
    Settings,
    SimulationSettings,
)
from churn_assets.simulation import World
from tests.code.test_alerts import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SMALL_WORLD_LIMITS: dict[str, Any] = {
    "gate_max_auc_gap": 0.30,
    "gate_max_disparity": 0.45,
    "gate_min_slice_auc": 0.50,
    "gate_min_recall": 0.10,
    "gate_max_calibration_error": 0.10,
}


def replay_settings(home: Path, webhook_url: str) -> Settings:
    return Settings(
        home=home,
        alerts=AlertSettings(webhook_url=webhook_url, webserver_base_url="http://ui.example"),
        simulation=SimulationSettings(
            n_customers=1_500,
            history_months=6,
            campaign_start_week=1,
            campaign_signup_multiplier=40.0,  # a tiny world needs a big campaign to drift in one week
            concept_shift_week=1,
        ),
        feature_store=FeatureStoreSettings(),
        modeling=ModelingSettings(
            split_mode="rolling",
            rolling_val_snapshots=1,
            rolling_test_snapshots=1,
            n_trials=2,
            timeout_seconds=30,
            baselines=["logistic_regression"],
            # LightGBM and the logistic baseline only. With XGBoost and the ensemble the honest retrain is a
            # calibrated LightGBM/XGBoost blend that flags most NEW customers (as on its validation rows,
            # where new customers churn ~4x as often), and this tiny world's 40x campaign makes the reviewed
            # snapshot 24 % new customers against 6-7 % in every snapshot the retrain could see: its
            # positive rate then rises ~0.19 above its reference (0.11 among existing customers, as on
            # validation), a population jump the positive-rate rule cannot tell from a broken pipeline.
            xgboost=False,
            extra_candidates=[],
            ensemble_max_members=0,
            shap_max_rows=200,
            min_auc_gain=-1.0,
            **SMALL_WORLD_LIMITS,
        ),
        automation=AutomationSettings(retrain_min_drifted_features=1),
    )


class Replay(SensorDriver):
    """The demo's in-process sensor driver, one production week at a time, with the runs grouped by the
    sensor that requested them."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        super().__init__(settings, instance)  # the code location, with these settings as its resources

    @property
    def log(self) -> list[tuple[str, dg.RunRequest, dg.ExecuteInProcessResult]]:
        return [(r.job_name, r.request, r.result) for r in self.runs]

    def week(self) -> dict[str, list[dg.RunRequest]]:
        world = World.load(self.settings.world_state_path)
        keys = world.advance(1, self.settings.landing_dir)
        world.save(self.settings.world_state_path)
        register_weeks(self.instance, keys)
        runs = self.settle()
        assert all(r.result.success or r.job_name == RETRAINING_JOB for r in runs), runs
        return {
            group: [r.request for r in runs if r.sensor == sensor]
            for group, sensor in (
                ("production", "new_week_sensor"),
                ("retrain", "retrain_sensor"),
                ("rollout", "rollout_sensor"),
            )
        }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Replay]:
    home = tmp_path_factory.mktemp("replay")
    settings = replay_settings(home / "state", receiver.url)
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        world = World.create(settings.simulation)
        weeks = world.simulate_history(settings.landing_dir)
        world.save(settings.world_state_path)
        register_weeks(instance, weeks)
        r = Replay(settings, instance)
        history = r.defs.resolve_job_def("churn_pipeline").execute_in_process(
            instance=instance,
            run_config=QUIET_CONSOLE,
            tags={
                "dagster/asset_partition_range_start": weeks[0],
                "dagster/asset_partition_range_end": weeks[-1],
            },
        )
        assert history.success
        assert r.execute(RETRAINING_JOB, tags={"churnops/trigger": "bootstrap"}, raise_on_error=True).success
        yield r


def test_chain_drift_retrain_promote_bento_rollout(replay: Replay, receiver: Receiver) -> None:
    replay.alert_tick()  # the first tick starts at the newest run event
    registry = ModelRegistry(replay.settings)
    assert registry.aliases()["champion"] == "1"
    from churn_assets.serving.rollout import RolloutStore

    store = RolloutStore(replay.settings)
    assert store.load().stable_version == "1" and store.load().phase == "none"

    first = replay.week()
    [production] = first["production"]
    week1 = production.partition_key
    assert production.run_key == f"production-week:{week1}"
    drift = metadata_of(replay.instance, DRIFT_REPORT, week1)
    assert drift is not None and int(drift[0]["n_drifted_features"]) >= 1, drift  # drift detected
    # The week's WARN check says so in the UI; the run stays green.
    [week_run] = [res for job, req, res in replay.log if job == PRODUCTION_JOB and req.partition_key == week1]
    assert week_run.success
    checks = {
        e.check_name: e for e in week_run.get_asset_check_evaluations() if e.asset_key.path[0] == "monitoring"
    }
    assert set(checks) == {"no_material_drift", "auc_at_or_above_0_78", "estimated_auc_at_or_above_0_78"}
    assert not checks["no_material_drift"].passed
    assert checks["no_material_drift"].severity == dg.AssetCheckSeverity.WARN
    replay.alert_tick()
    replay.alert_tick()
    drift_alerts = [p for p in receiver.posts if "Material feature drift" in p["text"]]
    assert len(drift_alerts) == 1, receiver.posts
    assert f"(week {week1})" in drift_alerts[0]["text"]
    assert f"http://ui.example/runs/{week_run.run_id}" in drift_alerts[0]["text"]
    # The performance report evaluates the rows production/batch_scores logged: nothing scored twice.
    perf = metadata_of(replay.instance, PERFORMANCE_REPORT, week1)
    assert perf is not None and perf[0]["scored_now"] == 0 and int(perf[0]["prediction_rows"]) > 0
    assert str(perf[0]["predictions_source"]).startswith("prediction log"), perf
    [retrain] = first["retrain"]  # retrain requested
    assert retrain.tags["churnops/trigger"] == "drift" and retrain.run_key == "retrain:drift:1"
    _, _, result = replay.log[-1]
    decision = {
        k: v.value
        for e in result.get_asset_materialization_events()
        if e.asset_key == CHAMPION
        for k, v in e.materialization.metadata.items()
    }
    assert decision["decision"] == "promoted" and decision["champion_after"] == "2"  # challenger promoted
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert ROLLOUT_START in materialized
    [bento] = [e for e in result.get_asset_materialization_events() if e.asset_key == CHAMPION_BENTO]
    assert bento.materialization.metadata["rebuilt"].value is True  # a promotion rebuilds the bento
    state = store.load()
    assert (state.phase, state.stable_version, state.candidate_version) == (
        "shadow",
        "1",
        "2",
    )  # rollout started

    second = replay.week()
    assert [r.partition_key for r in second["production"]] != [week1]
    assert second["retrain"] == []  # held back while the rollout is active
    [step] = second["rollout"]
    assert step.run_config["ops"]["rollout__step"]["config"]["action"] == "advance", step
    assert store.load().phase == "canary_5"
    # In shadow the new champion (v2) scored every customer as `shadow`: still read, not rescored.
    shadow_week = second["production"][0].partition_key
    perf = metadata_of(replay.instance, PERFORMANCE_REPORT, shadow_week)
    assert perf is not None and perf[0]["model_version"] == "2" and perf[0]["scored_now"] == 0, perf
    # New labels are counted since the CHAMPION's training set (v2's), recorded per version.
    trained_on = TrainingWorkdir.of(replay.settings).load_trained_on()
    assert set(trained_on) == {"1", "2"}
    status = metadata_of(replay.instance, LABEL_STATUS, second["rollout"][0].tags["churnops/week"])
    assert status is not None
    assert status[0]["since_source"] == "champion v2's training set"
    assert status[0]["since"] == str(trained_on["2"])[:10], (status, trained_on)

    # A rollback step (what the rollout sensor requests on a failed review) is alerted once, with its week.
    week2 = second["rollout"][0].tags["churnops/week"]
    config = {"action": "rollback", "week": week2, "reason": "candidate error rate above 0.1 %"}
    rollback = replay.execute(
        ROLLOUT_STEP_JOB,
        dg.RunRequest(
            run_config={"ops": {"rollout__step": {"config": config}}}, tags={"churnops/week": week2}
        ),
        raise_on_error=True,
    )
    assert rollback.success and store.load().phase == "none"
    replay.alert_tick()
    replay.alert_tick()
    [post] = [p for p in receiver.posts if "Rollout rolled back" in p["text"]]
    assert f"(week {week2})" in post["text"] and f"http://ui.example/runs/{rollback.run_id}" in post["text"]
    assert "champion back to v1" in post["text"], post["text"]


def test_rollout_review_of_real_models_honest_retrain_advances_broken_feature_rolls_back(
    replay: Replay,
) -> None:
    """The retrained v2 (after the campaign and the concept shift of week 1) against its own registered
    validation-time scores: scored on the newest production snapshot it advances; fed the same snapshot
    with a unit change (values in hundredths) in the column where that matters most to it, it is rolled
    back, while the stable v1 keeps scoring the correct
    features."""
    import numpy as np
    import polars as pl

    from churn_assets.automation.production import snapshot_features
    from churn_assets.automation.rollout_checks import review_phase
    from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP
    from churn_assets.modeling.score_reference import ScoreReference
    from churn_assets.serving.scoring import load_version, log_rows
    from churn_assets.storage.warehouse import Warehouse

    settings = replay.settings
    with Warehouse.of(settings).connect() as con:
        [(as_of,)] = con.execute(
            f"SELECT max(CAST({EVENT_TIMESTAMP} AS DATE)) FROM features.customer_account"
        ).fetchall()
        features = snapshot_features(con, as_of).to_pandas()
    ids = features[ENTITY].to_numpy()
    stable, candidate = load_version(settings, "1"), load_version(settings, "2")
    reference = ScoreReference.of_version(candidate.tags)
    assert reference is not None and reference.rows > 0  # registered with the version at training
    stable_rows = log_rows(stable, features, ids, variant="champion", as_of=as_of)
    honest = log_rows(candidate, features, ids, variant="shadow", as_of=as_of)
    cfg = settings.automation.rollout
    verdict = review_phase(pl.concat([stable_rows, honest]), "shadow", "1", "2", cfg, reference=reference)
    assert verdict.action == "advance", verdict.reason

    # The column where a unit change matters most to this model (values arriving in hundredths, e.g.
    # cents read as currency units): the broken pipeline a rollout must stop.
    scores = honest.get_column("score").to_numpy()
    numeric = [f for f in candidate.features if features[f].dtype.kind in "if" and features[f].nunique() > 2]

    def shift(column: str) -> float:
        moved = candidate.score(features.assign(**{column: features[column] / 100})).scores
        return float(np.mean(np.abs(moved - scores)))

    column = max(numeric, key=shift)
    broken_features = features.assign(**{column: features[column] / 100})
    broken = log_rows(candidate, broken_features, ids, variant="shadow", as_of=as_of)
    verdict = review_phase(pl.concat([stable_rows, broken]), "shadow", "1", "2", cfg, reference=reference)
    assert verdict.action == "rollback", (column, shift(column), verdict.reason)
    assert "score_distribution" in verdict.reason and "vs its own validation scores" in verdict.reason
