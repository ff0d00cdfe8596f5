"""The daemon's sensors, evaluated with ``dg.build_sensor_context`` on a real (temporary) instance.

Upstream materializations (monitoring reports, label status, rollout review, promotion decision) are
reported as runless asset events with the metadata keys of notes/contracts.md, so each trigger can be
exercised for a trigger week and a no-trigger week without running the pipeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_assets.automation.triggers import (
    evaluate_week,
    labels_condition,
    monthly_condition,
    new_production_weeks,
)
from churn_assets.defs.keys import (
    CHAMPION,
    DRIFT_REPORT,
    LABEL_STATUS,
    PERFORMANCE_REPORT,
    ROLLOUT_REVIEW,
    ROLLOUT_STEP,
)
from churn_assets.defs.partitions import WEEKS
from churn_assets.defs.sensors import build_schedules, build_sensors, current_champion
from churn_assets.settings import AutomationSettings, Settings, SimulationSettings
from churn_assets.timeline import Timeline

HISTORY_END = Timeline.from_settings(SimulationSettings()).history_end
SENSORS = {s.name: s for s in build_sensors(AutomationSettings())}
new_week_sensor, retrain_sensor, rollout_sensor = (
    SENSORS[name] for name in ("new_week_sensor", "retrain_sensor", "rollout_sensor")
)
[monthly_retraining] = build_schedules(AutomationSettings())
WEEK1 = HISTORY_END.isoformat()
WEEK2 = (HISTORY_END + dt.timedelta(days=7)).isoformat()
WEEK3 = (HISTORY_END + dt.timedelta(days=14)).isoformat()
HISTORY_WEEK = (HISTORY_END - dt.timedelta(days=7)).isoformat()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The retrain sensor reads the rollout state from settings.home: an empty folder.
    return Settings(home=tmp_path / "home", simulation=SimulationSettings())


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        inst.add_dynamic_partitions(WEEKS, [HISTORY_WEEK, WEEK1, WEEK2, WEEK3])
        yield inst


def sensor_context(
    instance: dg.DagsterInstance, settings: Settings, cursor: str | None
) -> dg.SensorEvaluationContext:
    """What the daemon hands a sensor: the instance, the stored cursor and the settings resource."""
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})


def report(
    instance: dg.DagsterInstance, key: dg.AssetKey, metadata: dict[str, Any], partition: str | None = None
) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
    )


def week_reports(
    instance: dg.DagsterInstance,
    week: str,
    *,
    auc: float | None = 0.82,
    drifted: int = 0,
    new_labels: int = 0,
    newest: str = "2025-06-02",
) -> None:
    perf: dict[str, Any] = {"estimated_auc": 0.83, "labelled_rows": 0, "below_threshold": False}
    if auc is not None:
        perf |= {"auc": auc, "labelled_rows": 20_000, "below_threshold": auc < 0.78}
    report(instance, PERFORMANCE_REPORT, perf, week)
    names = [f"f{i}" for i in range(drifted)]
    report(
        instance,
        DRIFT_REPORT,
        {
            "n_drifted_features": drifted,
            "drifted_features": dg.MetadataValue.json(names),
            "max_severity": "HIGH" if drifted else "NONE",
        },
        week,
    )
    report(instance, LABEL_STATUS, {"new_labelled_rows": new_labels, "newest_labelled_as_of": newest}, week)


def promote(instance: dg.DagsterInstance, version: str) -> None:
    report(instance, CHAMPION, {"decision": "promoted", "champion_after": version})


def requests_of(result: Any) -> list[dg.RunRequest]:
    if result is None or isinstance(result, dg.SkipReason):
        return []
    if isinstance(result, dg.RunRequest):  # a NamedTuple: check before the sequence case
        return [result]
    return list(result) if isinstance(result, list | tuple) else [result]


def run_retrain(
    instance: dg.DagsterInstance, settings: Settings, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None]:
    ctx = sensor_context(instance, settings, cursor)
    result = retrain_sensor(ctx)
    return requests_of(result), ctx.cursor


# ---- new-week sensor -----------------------------------------------------------------------------


def test_new_week_sensor_launches_one_run_per_new_production_week(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    ctx = sensor_context(instance, settings, None)
    runs = requests_of(new_week_sensor(ctx))
    assert [r.partition_key for r in runs] == [WEEK1, WEEK2, WEEK3]  # history weeks are not production
    assert all(r.run_key == f"production-week:{r.partition_key}" for r in runs)
    assert all(r.tags["churnops/trigger"] == "new_week" for r in runs)
    assert ctx.cursor == WEEK3
    # Next tick with the stored cursor: nothing new.
    again = new_week_sensor(sensor_context(instance, settings, ctx.cursor))
    assert isinstance(again, dg.SkipReason)
    week4 = (HISTORY_END + dt.timedelta(days=21)).isoformat()
    instance.add_dynamic_partitions(WEEKS, [week4])
    [run] = requests_of(new_week_sensor(sensor_context(instance, settings, ctx.cursor)))
    assert run.partition_key == week4


def test_new_production_weeks_filters_history_and_cursor() -> None:
    keys = ["2025-09-01", "2025-09-08", "2025-09-15"]
    assert new_production_weeks(keys, dt.date(2025, 9, 8), None) == ["2025-09-08", "2025-09-15"]
    assert new_production_weeks(keys, dt.date(2025, 9, 8), "2025-09-08") == ["2025-09-15"]


# ---- retraining triggers ------------------------------------------------------------------------


def test_quiet_week_triggers_nothing(instance: dg.DagsterInstance, settings: Settings) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, auc=0.83, drifted=2, new_labels=5_000)
    runs, cursor = run_retrain(instance, settings, None)
    assert runs == [] and cursor == WEEK1


def test_week_without_reports_is_not_evaluated_yet(instance: dg.DagsterInstance, settings: Settings) -> None:
    runs, cursor = run_retrain(instance, settings, None)
    assert runs == [] and cursor is None


def test_auc_below_threshold_triggers_performance_retraining(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, auc=0.76)
    [run], _ = run_retrain(instance, settings, None)
    assert run.tags["churnops/trigger"] == "performance"
    assert run.run_key == "retrain:performance:1"
    assert "0.760 < 0.78" in run.tags["churnops/reason"]
    assert run.tags["churnops/champion_before"] == "1" and run.tags["churnops/week"] == WEEK1


def test_estimated_auc_alone_does_not_trigger_by_default(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    report(instance, PERFORMANCE_REPORT, {"estimated_auc": 0.70, "labelled_rows": 0}, WEEK1)
    report(instance, LABEL_STATUS, {"new_labelled_rows": 0, "newest_labelled_as_of": "none"}, WEEK1)
    runs, _ = run_retrain(instance, settings, None)
    assert runs == []
    cfg = AutomationSettings(retrain_on_estimated_auc=True)
    request, _ = evaluate_week(
        WEEK1, None, "1", performance={"estimated_auc": 0.70}, drift=None, labels=None, cfg=cfg
    )
    assert request is not None and request.trigger == "performance"


def test_three_drifted_features_trigger_drift_retraining(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, drifted=3)
    [run], _ = run_retrain(instance, settings, None)
    assert run.tags["churnops/trigger"] == "drift" and run.run_key == "retrain:drift:1"


def test_more_than_10k_new_labels_trigger_retraining(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, new_labels=10_000)  # not MORE than 10,000
    assert run_retrain(instance, settings, None)[0] == []
    week_reports(instance, WEEK2, new_labels=10_001, newest="2025-09-08")
    [run], _ = run_retrain(instance, settings, WEEK1)
    assert run.tags["churnops/trigger"] == "new_labels" and run.run_key == "retrain:new_labels:2025-09-08"


def test_several_conditions_make_one_request_listing_the_others(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, auc=0.70, drifted=5, new_labels=20_000)
    [run], _ = run_retrain(instance, settings, None)
    assert run.tags["churnops/trigger"] == "performance"
    assert run.tags["churnops/also_fired"] == "drift,new_labels"


def test_run_keys_deduplicate_a_persisting_condition_until_the_champion_changes(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "1")
    week_reports(instance, WEEK1, drifted=4)
    week_reports(instance, WEEK2, drifted=5)
    first, cursor = run_retrain(instance, settings, None)
    assert [r.run_key for r in first] == ["retrain:drift:1"]  # week 2: same key, not requested again
    promote(instance, "2")
    week_reports(instance, WEEK3, drifted=4)
    [after], _ = run_retrain(instance, settings, cursor)
    assert after.run_key == "retrain:drift:2"  # a new champion re-arms the condition


def test_retraining_is_held_back_while_a_rollout_is_active(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    from churn_assets.serving.rollout import RolloutStore

    RolloutStore(settings).start("2", "1", reason="test")
    promote(instance, "2")
    week_reports(instance, WEEK1, drifted=4)
    ctx = sensor_context(instance, settings, None)
    result = retrain_sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "rollout of v2 is active" in str(result.skip_message)


def test_current_champion_follows_a_rollback(instance: dg.DagsterInstance) -> None:
    assert current_champion(instance) == "none"
    promote(instance, "2")
    assert current_champion(instance) == "2"
    report(instance, ROLLOUT_STEP, {"action": "rollback", "stable_version": "1"})
    assert current_champion(instance) == "1"


def test_simulated_monthly_condition() -> None:
    cfg = AutomationSettings(simulated_monthly_retrain=True)
    assert monthly_condition("2025-10-06", "2025-09-29", cfg).fired
    assert not monthly_condition("2025-10-13", "2025-10-06", cfg).fired
    assert not monthly_condition("2025-10-06", "2025-09-29", AutomationSettings()).fired
    assert labels_condition(None, cfg).fired is False


def test_monthly_schedule_names_the_month_in_its_run_key(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    promote(instance, "3")
    ctx = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC),
        resources={"settings": settings},
    )
    [run] = requests_of(monthly_retraining(ctx))
    assert run.run_key == "retrain:monthly:2026-03"
    assert run.tags["churnops/trigger"] == "monthly" and run.tags["churnops/champion_before"] == "3"


# ---- rollout sensor -----------------------------------------------------------------------------


def test_rollout_sensor_advances_on_a_passing_review_one_step_per_week(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    for week in (WEEK1, WEEK2):
        report(
            instance,
            ROLLOUT_REVIEW,
            {
                "action": "advance",
                "phase": "shadow",
                "candidate_version": "2",
                "reason": "all 5 checks passed",
            },
            week,
        )
    ctx = sensor_context(instance, settings, None)
    [run] = requests_of(rollout_sensor(ctx))  # two reviewed weeks, still one step
    assert run.run_key == f"rollout:{WEEK2}:advance:2"
    assert run.run_config["ops"]["rollout__step"]["config"]["action"] == "advance"
    assert run.tags["churnops/trigger"] == "rollout_advance"
    assert ctx.cursor == WEEK2


def test_rollout_sensor_rolls_back_on_a_regression_and_skips_hold(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    report(instance, ROLLOUT_REVIEW, {"action": "hold", "phase": "shadow", "reason": "too few"}, WEEK1)
    ctx = sensor_context(instance, settings, None)
    assert isinstance(rollout_sensor(ctx), dg.SkipReason)
    report(
        instance,
        ROLLOUT_REVIEW,
        {
            "action": "rollback",
            "phase": "canary_5",
            "candidate_version": "2",
            "reason": "regression: latency",
        },
        WEEK2,
    )
    [run] = requests_of(rollout_sensor(sensor_context(instance, settings, ctx.cursor)))
    assert run.run_config["ops"]["rollout__step"]["config"]["action"] == "rollback"
    assert run.run_key == f"rollout:{WEEK2}:rollback:2"


def test_a_spent_condition_does_not_mask_a_fresh_one() -> None:
    cfg = AutomationSettings()
    kwargs = {
        "performance": {"auc": 0.75},
        "drift": None,
        "labels": {"new_labelled_rows": 20_000, "newest_labelled_as_of": "2025-09-08"},
    }
    request, _ = evaluate_week(WEEK2, WEEK1, "1", cfg=cfg, **kwargs)  # type: ignore[arg-type]
    assert request is not None and request.run_key == "retrain:performance:1"
    request, _ = evaluate_week(WEEK2, WEEK1, "1", cfg=cfg, used_keys={"retrain:performance:1"}, **kwargs)  # type: ignore[arg-type]
    assert request is not None and request.trigger == "new_labels"
    assert (
        request.run_key == "retrain:new_labels:2025-09-08"
        and request.tags["churnops/also_fired"] == "performance"
    )
    spent = {"retrain:performance:1", "retrain:new_labels:2025-09-08"}
    assert evaluate_week(WEEK2, WEEK1, "1", cfg=cfg, used_keys=spent, **kwargs)[0] is None  # type: ignore[arg-type]


def test_a_run_key_that_launched_a_run_is_not_requested_again(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    """The daemon records a launched request's run key as the run's ``dagster/run_key`` tag: a later
    tick (another cursor) skips that condition instead of requesting it again."""

    @dg.asset
    def stand_in() -> None:
        """A run carrying the run key the sensor would use."""

    promote(instance, "1")
    week_reports(instance, WEEK1, drifted=4)
    dg.materialize([stand_in], instance=instance, tags={"dagster/run_key": "retrain:drift:1"})
    runs, cursor = run_retrain(instance, settings, None)
    assert runs == [] and cursor == WEEK1
