"""Sensors and the monthly schedule run by the Dagster daemon (domain logic: churn_assets/automation).

* ``new_week_sensor``: every newly registered production week -> one ``weekly_production`` run.
* ``retrain_sensor``: after a week's production run, evaluates the retraining triggers (performance,
  drift, new labels, simulated month) on the week's asset metadata -> at most one ``retraining`` run, its
  reason in the ``churnops/trigger`` tag, a run key per condition (see ``automation/triggers.py``).
* ``rollout_sensor``: after a week's production run, acts on ``production/rollout_review``'s verdict ->
  one ``rollout_step`` run (advance or rollback) per production week.
* ``monthly_retraining``: wall-clock monthly schedule of the ``retraining`` job.

Alert sensors (payloads, delivery and the once-only ledger: ``churn_assets/automation/alerts.py``;
nothing is sent while neither ``alerts.webhook_url`` nor ``alerts.slack_token`` is set):

* ``run_failure_alerts`` (a ``run_failure_sensor``): every failed run -> a ``run_failure`` alert, or a
  ``retraining_blocked`` alert when blocking gate checks on the challenger stopped it.
* ``week_alerts`` (a ``run_status_sensor`` on SUCCESS): the failed WARN monitoring checks of a finished
  run (``drift``, ``auc_below_threshold``, ``estimated_auc_below_threshold``) and a rollback step.
* ``breaker_alerts``: reads ``churn_breaker_state`` from the service's ``/metrics``
  (``alerts.service_url``) and alerts each time the breaker opens.

A body that needs settings reads the ``settings`` resource. The evaluation interval, default status and
cron come from ``settings.automation`` too, so :func:`build_sensors` and :func:`build_schedules` make them from the
settings inside the code location's definitions function (never at module import).
"""

import datetime as dt
from collections.abc import Container
from typing import Any

import dagster as dg

from churn_assets.automation.alerts import (
    Alert,
    AlertLedger,
    AlertSender,
    BreakerCursor,
    Channel,
    breaker_alert,
    check_alert,
    read_breaker_state,
    retraining_blocked_alert,
    rollback_alert,
    run_failure_alert,
)
from churn_assets.automation.triggers import (
    TRIGGER_TAG,
    WEEK_TAG,
    evaluate_week,
    monthly_request,
    new_production_weeks,
)
from churn_assets.defs.jobs import PRODUCTION_JOB, RETRAINING_JOB, ROLLOUT_STEP_JOB
from churn_assets.defs.keys import (
    CHALLENGER,
    CHAMPION,
    DRIFT_REPORT,
    LABEL_STATUS,
    MONITORING_CHECKS,
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


# ---- alerts ---------------------------------------------------------------------------------------
def _slack_channel(settings: Settings) -> list[Channel]:
    """Slack's chat.postMessage through dagster-slack, when ``alerts.slack_token`` is set."""
    token = settings.alerts.slack_token
    if token is None:
        return []
    from dagster_slack import SlackResource

    client = SlackResource(token=token.get_secret_value()).get_client()
    client.base_url = settings.alerts.slack_api_url
    client.timeout = max(1, round(settings.alerts.timeout_seconds))  # slack_sdk's timeout is whole seconds
    channel = settings.alerts.slack_channel

    def post(payload: dict[str, Any]) -> None:
        client.chat_postMessage(channel=channel, text=payload["text"], blocks=payload["blocks"])

    return [("slack", post)]


def alert_sender(settings: Settings) -> AlertSender:
    """The alert sender of ``settings``: the webhook, Slack when a token is set, the ledger in home."""
    return AlertSender(settings.alerts, AlertLedger(settings.alerts_dir), _slack_channel(settings))


def _week_of(run: dg.DagsterRun) -> str | None:
    """The run's week: its partition, its ``churnops/week`` tag, or the range of a multi-week run."""
    start, end = (run.tags.get(f"dagster/asset_partition_range_{e}") for e in ("start", "end"))
    return (
        run.tags.get("dagster/partition")
        or run.tags.get(WEEK_TAG)
        or (f"{start}..{end}" if start and end else None)
    )


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return [
        r.dagster_event.event_specific_data
        for r in records
        if r.dagster_event is not None
        and isinstance(r.dagster_event.event_specific_data, dg.AssetCheckEvaluation)
    ]


def _send(context: Any, sender: AlertSender, alerts: list[Alert]) -> list[str]:
    notes = []
    for alert in alerts:
        result = sender.send(alert)
        notes.append(result.summary())
        log = context.log.info if result.delivered or result.duplicate else context.log.warning
        log(f"alert {result.summary()}")
    return notes


# The two run-status sensors return None: Dagster then moves on to the next run in the same tick (a
# returned SkipReason would end the tick after one run) and records the reaction on the run.


def run_failure_alerts(context: dg.RunFailureSensorContext, settings: dg.ResourceParam[Settings]):
    """Alerts on every failed run: a retraining stopped by its blocking gate checks is a
    ``retraining_blocked`` alert naming the failed gates, any other failure a ``run_failure`` alert."""
    sender = alert_sender(settings)
    if not sender.configured:
        return None  # alerts off: neither alerts.webhook_url nor alerts.slack_token is set
    run = context.dagster_run
    base = settings.alerts.webserver_base_url
    gates = [
        (e.check_name, e.description or "")
        for e in _check_evaluations(context.instance, run.run_id)
        if e.asset_key == CHALLENGER and not e.passed and e.blocking
    ]
    if gates:
        alert = retraining_blocked_alert(_week_of(run), run.run_id, gates, base)
    else:
        message = context.failure_event.message or ""
        steps = context.get_step_failure_events()
        if steps:
            first = steps[0]
            data = first.step_failure_data
            error: Any = data.error if data else None
            while getattr(error, "cause", None) is not None:  # the root cause, not Dagster's wrapper
                error = error.cause
            message = f"step {first.step_key}: " + (str(getattr(error, "message", "")).strip())
        alert = run_failure_alert(_week_of(run), run.run_id, run.job_name, message[:1000], base)
    _send(context, sender, [alert])
    return None


def week_alerts(context: dg.RunStatusSensorContext, settings: dg.ResourceParam[Settings]):
    """Alerts on a finished run's failed WARN monitoring checks (material drift, realised or estimated
    AUC below the threshold: one alert per week and check) and on a rollout step that rolled back."""
    sender = alert_sender(settings)
    if not sender.configured:
        return None
    run = context.dagster_run
    base = settings.alerts.webserver_base_url
    alerts: list[Alert] = []
    for evaluation in _check_evaluations(context.instance, run.run_id):
        key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
        if key in MONITORING_CHECKS and not evaluation.passed:
            week = evaluation.partition or _week_of(run) or "none"
            alert = check_alert(key.name, week, run.run_id, evaluation.description or "", base)
            if alert is not None:
                alerts.append(alert)
    for record in context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ROLLOUT_STEP), limit=20
    ).records:
        mat = record.asset_materialization
        if record.run_id == run.run_id and mat is not None:
            step = {k: v.value for k, v in mat.metadata.items()}
            if step.get("action") == "rollback":
                step_week = str(step.get("week") or "") or _week_of(run)
                alerts.append(rollback_alert(step_week, run.run_id, step, base))
    _send(context, sender, alerts)
    return None


def breaker_alerts(context: dg.SensorEvaluationContext, settings: dg.ResourceParam[Settings]):
    """Reads the service's feature-store breaker (``churn_breaker_state`` on ``alerts.service_url``'s
    /metrics) and alerts each time it opens (the cursor keeps the last state seen)."""
    cfg = settings.alerts
    if cfg.service_url is None:
        return dg.SkipReason("no alerts.service_url: the breaker is not watched")
    state, error = read_breaker_state(cfg.service_url, cfg.timeout_seconds)
    if state is None:
        return dg.SkipReason(f"breaker state unknown: {error}")
    cursor, opening = BreakerCursor.decode(context.cursor).observe(state)
    context.update_cursor(cursor.encode())
    if not opening:
        return dg.SkipReason(f"breaker state {state}")
    sender = alert_sender(settings)
    weeks = sorted(context.instance.get_dynamic_partitions(WEEKS))
    week = weeks[-1] if weeks else None
    run_ids = (
        context.instance.get_run_ids(
            dg.RunsFilter(job_name=PRODUCTION_JOB, tags={"dagster/partition": week}), limit=1
        )
        if week
        else []
    )
    alert = breaker_alert(
        week, run_ids[0] if run_ids else None, cfg.service_url, cursor.key, cfg.webserver_base_url
    )
    return dg.SkipReason("; ".join(_send(context, sender, [alert])))


def build_sensors(cfg: AutomationSettings) -> list[dg.SensorDefinition]:
    """The automation and alert sensors, evaluated every ``cfg.sensor_interval_seconds`` (running by
    default unless ``cfg.sensors_running_by_default`` is off)."""
    status = (
        dg.DefaultSensorStatus.RUNNING if cfg.sensors_running_by_default else dg.DefaultSensorStatus.STOPPED
    )
    alerting = [
        dg.run_failure_sensor(
            name="run_failure_alerts",
            minimum_interval_seconds=cfg.sensor_interval_seconds,
            default_status=status,
            description=" ".join((run_failure_alerts.__doc__ or "").split()),
        )(run_failure_alerts),
        dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.SUCCESS,
            name="week_alerts",
            minimum_interval_seconds=cfg.sensor_interval_seconds,
            default_status=status,
            description=" ".join((week_alerts.__doc__ or "").split()),
        )(week_alerts),
        dg.sensor(
            name="breaker_alerts",
            minimum_interval_seconds=max(cfg.sensor_interval_seconds, 5),
            default_status=status,
            description=" ".join((breaker_alerts.__doc__ or "").split()),
        )(breaker_alerts),
    ]
    return alerting + [
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
