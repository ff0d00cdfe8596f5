"""The demo's two sensor drivers on one tiny world (orchestration/demo.py, ``automation.demo_driver``).

Week 1 is played with a real ``dagster-daemon`` (its sensors tick on their own loop, the run is launched
as a subprocess that loads ``workspace.yaml``'s code location with the demo's settings from the
environment); week 2 with the in-process driver (orchestration/sensor_driver.py), which continues from the
daemon's stored cursors. Both weeks' production runs must be what the daemon makes: one run per week,
the same tags (run key, sensor name, trigger, partition), the same assets materialized, and the
sensors' cursors at the week.

World: 1,500 customers, 4 history months (tests/monitoring_helpers.py), a quick champion, live traffic
off; the retraining triggers are set out of reach, so each week is one production run.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.defs.jobs import PRODUCTION_JOB
from churn_assets.orchestration import instance_for
from churn_assets.orchestration.demo import WeekRow, run_weeks
from churn_assets.settings import Settings
from tests.monitoring_helpers import HistoryCache, register_quick_champion, tiny_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def driven(settings: Settings, driver: str) -> Settings:
    return settings.model_copy(
        update={"automation": settings.automation.model_copy(update={"demo_driver": driver})}
    )


def materialized(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {
        e.dagster_event.asset_key.to_user_string()
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event is not None and e.dagster_event.asset_key is not None
    }


def test_daemon_and_in_process_drivers_tick_the_same_sensors_into_the_same_runs(
    tmp_path: Path, history_cache: HistoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tiny_settings(tmp_path / "state")
    settings = settings.model_copy(
        update={
            "automation": settings.automation.model_copy(
                update={"retrain_min_drifted_features": 1_000, "retrain_new_labelled_rows": 10**9}
            )
        }
    )
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # instance_for points this process at it
    instance = instance_for(settings)
    history_cache.history(settings, instance)
    register_quick_champion(settings)

    lines: list[str] = []
    [first] = run_weeks(driven(settings, "daemon"), 1, lines.append)
    [second] = run_weeks(driven(settings, "in_process"), 1, lines.append)
    assert any(line.startswith("dagster-daemon started") for line in lines), lines
    assert any(line.startswith(f"  {PRODUCTION_JOB} (trigger new_week") for line in lines), lines

    runs = {r.tags["dagster/partition"]: r for r in instance.get_runs(dg.RunsFilter(job_name=PRODUCTION_JOB))}
    # One run per week: the in-process driver started from the daemon's cursor, not from the beginning.
    assert sorted(runs) == [first.week, second.week]
    rows: list[WeekRow] = [first, second]
    for row in rows:
        run = runs[row.week]
        assert run.status == dg.DagsterRunStatus.SUCCESS and not row.failed_runs, row
        assert {
            k: run.tags.get(k) for k in ("dagster/run_key", "dagster/sensor_name", "churnops/trigger")
        } == {
            "dagster/run_key": f"production-week:{row.week}",
            "dagster/sensor_name": "new_week_sensor",
            "churnops/trigger": "new_week",
        }
        assert row.drifted is not None  # the week's drift report was read back from the instance
    by_daemon, in_process = (materialized(instance, runs[r.week].run_id) for r in rows)
    assert by_daemon == in_process and {"production/batch_scores", "monitoring/drift_report"} <= by_daemon

    # The daemon's cursors stopped at week 1; the in-process driver's at week 2.
    daemon = {
        s.instigator_name: getattr(s.instigator_data, "cursor", None)
        for s in instance.all_instigator_state()
        if s.instigator_type.value == "SENSOR"
    }
    assert daemon["new_week_sensor"] == first.week
    driver = json.loads((settings.home / "demo" / "sensor_cursors.json").read_text())
    assert {driver[name] for name in ("new_week_sensor", "retrain_sensor", "rollout_sensor")} == {second.week}
    # What the sensors logged (the retraining conditions of the week) went to the demo's sensor log.
    ticks = (settings.logs_dir / "sensor-ticks.log").read_text()
    assert f"{second.week}: performance:" in ticks and "new_labels:" in ticks, ticks
