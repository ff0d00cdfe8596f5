"""Sensors and the monthly schedule run by the Dagster daemon (domain logic: churn_assets/automation).

* ``new_week_sensor``: every newly registered production week -> one ``weekly_production`` run.
* ``retrain_sensor``: after a week's production run, evaluates the retraining triggers (performance,
  drift, new labels, simulated month) on the week's asset metadata -> at most one ``retraining`` run, its
  reason in the ``churnops/trigger`` tag, a run key per condition (see ``automation/triggers.py``).
* ``rollout_sensor``: after a week's production run, acts on ``production/rollout_review``'s verdict ->
  one ``rollout_step`` run (advance or rollback) per production week.
* ``monthly_retraining``: wall-clock monthly schedule of the ``retraining`` job.

A body that needs settings reads the ``settings`` resource. The evaluation interval, default status and
cron come from ``settings.automation`` too, so :func:`build_sensors` and :func:`build_schedules` make them from the
settings inside the code location's definitions function (never at module import).
"""

import datetime as dt
from collections.abc import Container
from typing import Any

import dagster as dg

from churn_assets.automation.triggers import (
    TRIGGER_TAG,
    WEEK_TAG,
    evaluate_week,
    monthly_request,
    new_production_weeks,
)
from churn_assets.defs.jobs import PRODUCTION_JOB, RETRAINING_JOB, ROLLOUT_STEP_JOB
from churn_assets.defs.keys import (
    CHAMPION,
    DRIFT_REPORT,
    LABEL_STATUS,
    PERFORMANCE_REPORT,
    ROLLOUT_REVIEW,
    ROLLOUT_STEP,
)
from churn_assets.defs.partitions import WEEKS
from churn_assets.settings import AutomationSettings, Settings
from churn_assets.timeline import Timeline

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def metadata_of(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> tuple[dict[str, Any], int] | None:
    """The newest materialization's metadata (plain values) and storage id, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    mat = record.asset_materialization
    if mat is None:
        return None
    return {k: v.value for k, v in mat.metadata.items()}, record.storage_id


def current_champion(instance: dg.DagsterInstance) -> str:
    """The champion version per the newest ``training/champion`` or rollback ``rollout/step`` event."""
    decision = metadata_of(instance, CHAMPION)
    step = metadata_of(instance, ROLLOUT_STEP)
    candidates = []
    if decision is not None and decision[0].get("champion_after") not in (None, "none"):
        candidates.append((decision[1], str(decision[0]["champion_after"])))
    if step is not None and step[0].get("action") == "rollback" and step[0].get("stable_version") != "none":
        candidates.append((step[1], str(step[0]["stable_version"])))
    return max(candidates)[1] if candidates else "none"


class UsedRunKeys:
    """Run keys that launched a run already (Dagster's ``dagster/run_key`` tag) or are requested in this
    tick: the ``used_keys`` container ``automation.triggers.decide`` asks about each fired condition."""

    def __init__(self, instance: dg.DagsterInstance, requested: Container[str]) -> None:
        self.instance, self.requested = instance, requested

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in self.requested:
            return True
        return bool(self.instance.get_run_ids(dg.RunsFilter(tags={"dagster/run_key": key}), limit=1))


def runs_in_flight(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str] | None = None) -> int:
    return len(instance.get_run_ids(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags=tags or {})))


def _ready_weeks(context: dg.SensorEvaluationContext, key: dg.AssetKey) -> list[str]:
    """Weeks after the cursor whose ``key`` partition is materialized and whose production run is done."""
    instance = context.instance
    done: list[str] = []
    for week in sorted(instance.get_dynamic_partitions(WEEKS)):
        if context.cursor and week <= context.cursor:
            continue
        if metadata_of(instance, key, week) is None:
            continue
        if runs_in_flight(instance, PRODUCTION_JOB, {"dagster/partition": week}):
            break  # this week's reports are still being written
        done.append(week)
    return done


def new_week_sensor(context: dg.SensorEvaluationContext, settings: dg.ResourceParam[Settings]):
    """Launches the weekly production job for each newly registered production week."""
    history_end = Timeline.from_settings(settings.simulation).history_end
    weeks = new_production_weeks(
        list(context.instance.get_dynamic_partitions(WEEKS)), history_end, context.cursor
    )
    if not weeks:
        return dg.SkipReason("no new production week")
    context.update_cursor(weeks[-1])
    return [
        dg.RunRequest(
            run_key=f"production-week:{week}",
            partition_key=week,
            tags={TRIGGER_TAG: "new_week", WEEK_TAG: week},
        )
        for week in weeks
    ]


def retrain_sensor(context: dg.SensorEvaluationContext, settings: dg.ResourceParam[Settings]):
    """After each production week: retrain when the champion's AUC < threshold, >= N features drift,
    > N new labelled rows arrived, or a simulated month starts (one run per condition: run keys)."""
    from churn_assets.serving.rollout import RolloutStore

    weeks = _ready_weeks(context, LABEL_STATUS)
    if not weeks:
        return dg.SkipReason("no newly completed production week")
    instance = context.instance
    requests: list[dg.RunRequest] = []
    previous = context.cursor
    notes = []
    for week in weeks:
        champion = current_champion(instance)
        reports = {
            name: (m[0] if (m := metadata_of(instance, key, week)) else None)
            for name, key in (
                ("performance", PERFORMANCE_REPORT),
                ("drift", DRIFT_REPORT),
                ("labels", LABEL_STATUS),
            )
        }
        request, conditions = evaluate_week(
            week,
            previous,
            champion,
            performance=reports["performance"],
            drift=reports["drift"],
            labels=reports["labels"],
            cfg=settings.automation,
            used_keys=UsedRunKeys(instance, {r.run_key for r in requests if r.run_key}),
        )
        previous = week
        context.log.info(f"{week}: " + "; ".join(f"{c.trigger}: {c.reason}" for c in conditions))
        if request is None:
            continue
        state = RolloutStore(settings).load()
        if state.active:
            notes.append(
                f"{week}: {request.trigger} fired but the rollout of v{state.candidate_version} is active"
            )
            continue
        if runs_in_flight(instance, RETRAINING_JOB):
            notes.append(f"{week}: {request.trigger} fired while a retraining is running")
            continue
        requests.append(dg.RunRequest(run_key=request.run_key, tags=request.tags))
    context.update_cursor(weeks[-1])
    if requests:
        return requests
    return dg.SkipReason("; ".join(notes) or f"no trigger fired for {', '.join(weeks)}")


def rollout_sensor(context: dg.SensorEvaluationContext):
    """After each production week: advances the rollout one phase when the week's review passed, rolls
    it back on a regression (one step per production week)."""
    weeks = _ready_weeks(context, ROLLOUT_REVIEW)
    if not weeks:
        return dg.SkipReason("no newly reviewed production week")
    context.update_cursor(weeks[-1])
    week = weeks[-1]  # one step per production week: act on the newest review only
    found = metadata_of(context.instance, ROLLOUT_REVIEW, week)
    review = found[0] if found else {}
    action = str(review.get("action", "none"))
    if action not in ("advance", "rollback"):
        return dg.SkipReason(f"{week}: {action} ({review.get('reason', '')})")
    return dg.RunRequest(
        run_key=f"rollout:{week}:{action}:{review.get('candidate_version')}",
        run_config={
            "ops": {
                "rollout__step": {
                    "config": {"action": action, "week": week, "reason": str(review.get("reason", ""))[:300]}
                }
            }
        },
        tags={
            TRIGGER_TAG: f"rollout_{action}",
            WEEK_TAG: week,
            "churnops/phase": str(review.get("phase")),
        },
    )


def monthly_retraining(context: dg.ScheduleEvaluationContext):
    """Conservative monthly retraining (wall clock)."""
    when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    request = monthly_request(f"{when.year:04d}-{when.month:02d}", current_champion(context.instance))
    return dg.RunRequest(run_key=request.run_key, tags=request.tags)


def build_sensors(cfg: AutomationSettings) -> list[dg.SensorDefinition]:
    """The three sensors, evaluated every ``cfg.sensor_interval_seconds`` (running by default unless
    ``cfg.sensors_running_by_default`` is off)."""
    status = (
        dg.DefaultSensorStatus.RUNNING if cfg.sensors_running_by_default else dg.DefaultSensorStatus.STOPPED
    )
    return [
        dg.sensor(
            name=fn.__name__,
            job_name=job,
            minimum_interval_seconds=cfg.sensor_interval_seconds,
            default_status=status,
            description=" ".join((fn.__doc__ or "").split()),
        )(fn)
        for fn, job in (
            (new_week_sensor, PRODUCTION_JOB),
            (retrain_sensor, RETRAINING_JOB),
            (rollout_sensor, ROLLOUT_STEP_JOB),
        )
    ]


def build_schedules(cfg: AutomationSettings) -> list[dg.ScheduleDefinition]:
    """The wall-clock monthly retraining schedule (``cfg.monthly_cron``)."""
    status = (
        dg.DefaultScheduleStatus.RUNNING
        if cfg.monthly_schedule_running_by_default
        else dg.DefaultScheduleStatus.STOPPED
    )
    return [
        dg.schedule(
            name="monthly_retraining",
            cron_schedule=cfg.monthly_cron,
            job_name=RETRAINING_JOB,
            default_status=status,
            description=" ".join((monthly_retraining.__doc__ or "").split()),
        )(monthly_retraining)
    ]
